"""Record one evaluation run as ``docs/results/<name>.json``, the input of ``docs/build_results.py``.

    .venv/bin/python docs/record_result.py --name quickstart-seed0 --group quickstart \\
        --metrics runs/quickstart/eval_full/metrics.json --config configs/quickstart.yaml \\
        --command "user-embed evaluate --checkpoint runs/quickstart/embedder --data data/ml-100k --out runs/quickstart/eval_full"

The record is ``{"name", "group", "date", "commit", "config", "command", "machine", "metrics"}``:
``metrics`` is the ``metrics.json`` written by ``user-embed evaluate``, unchanged except that absolute
paths under this checkout are made relative; ``date`` is the UTC time of recording (ISO 8601);
``commit`` is ``git rev-parse --short HEAD`` with ``+dirty`` when tracked files differ from it;
``machine`` holds the CPU count and platform (and the GPU, when torch sees one). Runs that share a
``group`` (e.g. seeds of one config) are reported as mean ± s.d. ``--headline`` marks the group
that the README's headline table shows. The file is written atomically.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def git_commit(root: Path = ROOT) -> str:
    """Short commit of HEAD, ``+dirty`` when tracked files differ from it; ``unknown`` outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", *args], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def machine_info() -> dict:
    """CPU count, platform, Python, and torch/GPU when torch is importable."""
    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    try:
        import torch
    except ImportError:
        return info
    info["torch"] = torch.__version__
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def relative_paths(obj, root: Path = ROOT):
    """``obj`` with every string that starts with ``root`` made relative to it (no machine paths in docs)."""
    prefix = str(root).rstrip("/") + "/"
    if isinstance(obj, dict):
        return {k: relative_paths(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [relative_paths(v, root) for v in obj]
    if isinstance(obj, str):
        return obj.replace(prefix, "")
    return obj


def make_record(name: str, metrics: dict, config: str, command: str, group: str | None = None,
                headline: bool = False, root: Path = ROOT) -> dict:
    record = {"name": name, "group": group or name,
              "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
              "commit": git_commit(root), "config": config, "command": command, "machine": machine_info(),
              "metrics": metrics}
    if headline:
        record["headline"] = True
    return relative_paths(record, root)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="run name; the file is docs/results/<name>.json")
    p.add_argument("--metrics", required=True, type=Path, help="metrics.json written by `user-embed evaluate`")
    p.add_argument("--config", required=True, type=Path, help="the training config of the evaluated embedder")
    p.add_argument("--command", required=True, help="the command that produced the metrics")
    p.add_argument("--group", default=None, help="runs of one group are averaged (default: the name)")
    p.add_argument("--headline", action="store_true", help="show this run's group in the README headline table")
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="default: docs/results")
    p.add_argument("--force", action="store_true", help="replace an existing record of this name")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not NAME.match(args.name):
        print(f"record_result: error: --name {args.name!r}: use letters, digits, '.', '_' and '-'", file=sys.stderr)
        return 2
    try:
        metrics = json.loads(args.metrics.read_text())
    except (OSError, ValueError) as exc:
        print(f"record_result: error: --metrics {args.metrics}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(metrics, dict) or not any(k in metrics for k in ("accuracy", "uqabench")):
        print(f"record_result: error: --metrics {args.metrics}: not a metrics.json of `user-embed evaluate` "
              "(no 'accuracy' or 'uqabench')", file=sys.stderr)
        return 2
    out = args.out_dir / f"{args.name}.json"
    if out.exists() and not args.force:
        print(f"record_result: error: {out} exists (add --force to replace it)", file=sys.stderr)
        return 2
    config = args.config.resolve()
    config_text = str(config.relative_to(ROOT)) if config.is_relative_to(ROOT) else str(args.config)
    record = make_record(args.name, metrics, config_text, args.command, args.group, args.headline)
    sys.path.insert(0, str(ROOT))
    from data_pipelines.io import write_json_atomic

    write_json_atomic(out, record)
    print(out.relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
