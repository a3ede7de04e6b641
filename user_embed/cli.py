"""`user-embed` entry point: a thin dispatcher to one module per subcommand.

Each subcommand lives in ``user_embed/commands/<name>.py`` and exposes ``main(argv) -> int``.
User mistakes (:class:`~user_embed.errors.UserError` and missing files) are printed as one
line of at most :data:`MAX_MESSAGE` characters (a longer one is cut in the middle, keeping its
start and end) and exit with status 2; ``--debug`` anywhere on the command line shows the traceback.
"""

from __future__ import annotations

import importlib
import re
import sys

#: Longest error message printed (after the "user-embed <command>: error: " prefix).
MAX_MESSAGE = 500
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

COMMANDS: dict[str, tuple[str, str]] = {
    "assets": ("user_embed.commands.assets", "fetch the offline default models and data into the cache"),
    "prepare": ("user_embed.commands.prepare", "import a dataset into the unified parquet schema (+ UserQA)"),
    "fit": ("user_embed.commands.lightning", "train a user embedder (LightningCLI, --config configs/….yaml)"),
    "validate": ("user_embed.commands.lightning", "run validation of a config/checkpoint (LightningCLI)"),
    "test": ("user_embed.commands.lightning", "run the test split of a config/checkpoint (LightningCLI)"),
    "evaluate": ("user_embed.commands.evaluate", "accuracy of soft prompts vs baselines; metrics.json + report"),
    "embed": ("user_embed.commands.embed", "write one embedding vector per user to parquet"),
    "evaluate-embeddings": ("user_embed.commands.evaluate_embeddings",
                            "the user vector as a representation: probes, user<->text retrieval, recommendation"),
    "generate": ("user_embed.commands.generate", "personalized answers (HF or vLLM backend)"),
    "score": ("user_embed.commands.score", "score a prediction file the official LaMP / UQABench way"),
    "pretrain": ("user_embed.commands.pretrain", "pre-train a sequence encoder on next-item prediction"),
    "serve": ("user_embed.commands.serve", "OpenAI-compatible HTTP server of personalized answers"),
}


def _usage() -> str:
    lines = ["usage: user-embed <command> [options]   (add --debug for tracebacks)", "", "commands:"]
    lines += [f"  {name:<19} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def one_line_message(exc: BaseException, limit: int = MAX_MESSAGE) -> str:
    """The exception's message on one line, at most ``limit`` characters (the middle cut out if longer)."""
    text = ANSI_CODES.sub("", str(exc))  # some libraries colour their messages
    message = " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(exc).__name__
    if len(message) <= limit:
        return message
    cut = ""
    for _ in range(2):  # the label's own length changes the count by at most one digit
        kept = limit - len(cut)
        cut = f" … [{len(message) - kept:,} characters cut] … "
    kept = limit - len(cut)
    head = kept * 2 // 3
    return message[:head] + cut + message[len(message) - (kept - head):]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"user-embed: error: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    from user_embed.errors import UserError

    try:
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.main(rest, command=name) or 0)
    except (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError,
            PermissionError) as exc:
        if debug:
            raise
        print(f"user-embed {name}: error: {one_line_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"user-embed {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
