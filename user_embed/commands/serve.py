"""`user-embed serve`: the OpenAI-compatible HTTP server over a trained embedder and a data folder.

    user-embed serve --checkpoint runs/quickstart/embedder --data data/ml-100k [--backend hf|vllm]
        [--host 127.0.0.1] [--port 8000] [--api-key KEY]

Binds to 127.0.0.1 unless ``--host`` says otherwise; with ``--api-key`` (or the ``USER_EMBED_API_KEY``
environment variable) every endpoint but /health needs ``Authorization: Bearer KEY``. Events posted to
the server are logged to ``<data>/live_events/`` (the data folder's own files are never written).
See docs/serving.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from user_embed.errors import UserError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_parser(command: str = "serve") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"user-embed {command}",
                                     description="Serve personalized answers over an OpenAI-compatible HTTP API.")
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="trained embedder folder (save_pretrained)")
    parser.add_argument("--data", required=True, metavar="DIR", help="prepared data folder with the users' histories")
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf",
                        help="hf (micro-batched transformers generate, default) or vllm (needs vLLM)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", metavar="KEY", default=os.environ.get("USER_EMBED_API_KEY"),
                        help="require `Authorization: Bearer KEY` (default: $USER_EMBED_API_KEY, else no key)")
    parser.add_argument("--events-dir", metavar="DIR", help="live events log folder (default: <data>/live_events)")
    parser.add_argument("--llm", help="LLM to pair with (default: the one recorded in the checkpoint)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="requests generated together (HF)")
    parser.add_argument("--batch-window-ms", type=float, default=10.0,
                        help="how long a batch waits for more requests (HF)")
    parser.add_argument("--cache-size", type=int, default=1024, help="users whose encoding is cached")
    parser.add_argument("--history-events", type=int, default=50, help="events the text personalization writes")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def main(argv: list[str] | None = None, command: str = "serve") -> int:
    args = build_parser(command).parse_args(argv)
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    if not Path(args.checkpoint).is_dir():
        raise UserError(f"--checkpoint {args.checkpoint}: no such embedder folder")
    if not Path(args.data).is_dir():
        raise UserError(f"--data {args.data}: no such data folder (build it with `user-embed prepare …`)")
    try:
        import uvicorn

        from user_embed.serving import LiveUsers, ServeSettings, create_app
    except ImportError as exc:
        raise UserError(f"the server needs FastAPI and uvicorn ({exc.name} is missing): "
                        "pip install -c constraints-cpu.txt -e '.[http]'") from exc
    settings = ServeSettings(backend=args.backend, api_key=args.api_key, batch_window_ms=args.batch_window_ms,
                             max_batch_size=args.max_batch_size, cache_size=args.cache_size,
                             history_events=args.history_events, max_body_bytes=args.max_body_bytes,
                             events_dir=args.events_dir)
    if args.backend == "vllm":
        from user_embed.generate.vllm import import_vllm

        import_vllm()  # the install hint before minutes of loading
    from user_embed.devices import check_device

    check_device(args.device)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from user_embed.model import PersonalizedLM

    lm = PersonalizedLM.from_pretrained(args.checkpoint, llm=args.llm, device=args.device)
    users = LiveUsers.from_folder(args.data, lm.embedder.spec, args.events_dir)
    app = create_app(lm, users, settings)
    if args.host not in LOOPBACK and not args.api_key:
        print(f"user-embed {command}: warning: listening on {args.host} without --api-key: anyone who can reach "
              "this address can query every user", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
