"""Load test of the HTTP server: soft-prompt personalization vs the user's 50 latest events as text.

Starts ``user-embed serve`` on a free loopback port (a subprocess, the real offline models: SmolLM2-135M-
Instruct and MovieLens-100k in ``data/ml-100k``), then for each concurrency level (1, 8, 32) sends N
streaming chat requests with the official ``openai`` async client — the same users and questions twice:
``user-embed-soft`` (the user's K soft vectors) and ``user-embed-text`` (the user's latest events written
into the prompt). Per level and method it reports p50/p95 latency, p50/p95 time to first token, output
tokens/s (all completion tokens over the wall time of the level) and errors, as
``benchmarks/results/serve.json`` plus a chart ``serve.png``. Each level is bounded in count and time.

The embedder is ``runs/quickstart/embedder`` when it exists (``make demo`` builds it); otherwise an
untrained one for the same LLM and data (sequence + profile + genre-statistics sources, K=8 instruction-
aware resampler) is built with ``PersonalizedLM.build``: speed does not depend on the weights, and the JSON
says which was used. Needs ``data/ml-100k`` (``user-embed prepare movielens-100k --out data/ml-100k``).

    .venv/bin/python benchmarks/serve.py [--requests 16] [--concurrency 1 8 32] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"soft": "user-embed-soft", "text": "user-embed-text"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "runs/quickstart/embedder"))
    parser.add_argument("--data", default=str(ROOT / "data/ml-100k"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/serve.json"))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=16, help="requests per level (at least the concurrency)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--level-timeout", type=float, default=300.0, help="seconds per level and method")
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    return parser.parse_args(argv)


def embedder_dir(args: argparse.Namespace, scratch: Path) -> tuple[Path, str]:
    """The trained embedder, or an untrained one built for the real LLM and data; and which it is."""
    if Path(args.checkpoint).is_dir():
        return Path(args.checkpoint), f"trained ({shown(args.checkpoint)})"
    import torch

    from user_embed.config import AdapterConfig, LLMConfig, SourceConfig
    from user_embed.data.spec import DataSpec
    from user_embed.model import PersonalizedLM
    from user_embed.store import UserStore

    store = UserStore.from_folder(args.data)
    spec = DataSpec.from_tables(store.events, store.items, store.users)
    torch.manual_seed(0)
    sources = [SourceConfig(kind="sequence", name="ratings", dim=128, layers=2, heads=4, max_len=50),
               SourceConfig(kind="tabular", name="profile", dim=64, heads=4),
               SourceConfig(kind="category_stats", name="genre_stats", dim=64, max_len=50)]
    adapter = AdapterConfig(kind="resampler", num_tokens=8, dim=256, layers=2, heads=4, instruction_aware=True,
                            user_dim=256)
    lm = PersonalizedLM.build(sources, adapter, spec, LLMConfig())
    path = lm.embedder.save_pretrained(scratch / "embedder")
    return path, ("untrained (PersonalizedLM.build: sequence + tabular + category_stats sources, K=8 resampler; "
                  f"{shown(args.checkpoint)} does not exist)")


def pick_requests(data: Path, count: int) -> list[tuple[str, str]]:
    """``count`` (user, open question) pairs from the test split, distinct users, in a fixed order."""
    import polars as pl

    qa = pl.read_parquet(data / "qa.parquet").filter(pl.col("split") == "test", pl.col("task").str.ends_with("_open"))
    qa = qa.sort("user_id", "task").unique("user_id", keep="first", maintain_order=True)
    rows = list(zip(qa["user_id"].to_list(), qa["question"].to_list()))
    return [rows[i % len(rows)] for i in range(count)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(embedder: Path, args: argparse.Namespace, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "user_embed.cli", "serve", "--checkpoint", str(embedder), "--data", args.data,
               "--port", str(port), "--backend", args.backend, "--max-batch-size", str(args.max_batch_size),
               "--log-level", "warning"]
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 600.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not become ready")


async def one_request(client, model: str, user: str, question: str, max_tokens: int) -> dict:
    start = time.perf_counter()
    first, tokens = None, 0
    stream = await client.chat.completions.create(model=model, user=user, max_tokens=max_tokens, temperature=0,
                                                  messages=[{"role": "user", "content": question}], stream=True,
                                                  stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter() - start
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    latency = time.perf_counter() - start
    return {"latency_s": latency, "ttft_s": first if first is not None else latency, "tokens": tokens}


async def run_level(url: str, model: str, requests: list[tuple[str, str]], concurrency: int, max_tokens: int,
                    timeout: float) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=timeout)
    gate = asyncio.Semaphore(concurrency)
    results, errors = [], []

    async def guarded(user: str, question: str) -> None:
        async with gate:
            try:
                results.append(await one_request(client, model, user, question, max_tokens))
            except Exception as exc:  # counted, not raised: the load test reports errors
                errors.append(f"{type(exc).__name__}: {exc}"[:200])

    start = time.perf_counter()
    tasks = [asyncio.create_task(guarded(u, q)) for u, q in requests]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    wall = time.perf_counter() - start
    await client.close()
    latencies = sorted(r["latency_s"] for r in results)
    ttfts = sorted(r["ttft_s"] for r in results)
    tokens = sum(r["tokens"] for r in results)
    return {"requests": len(requests), "completed": len(results), "errors": len(errors) + len(pending),
            "timed_out": len(pending), "error_examples": errors[:3], "wall_s": round(wall, 3),
            "p50_latency_s": _quantile(latencies, 0.5), "p95_latency_s": _quantile(latencies, 0.95),
            "p50_ttft_s": _quantile(ttfts, 0.5), "p95_ttft_s": _quantile(ttfts, 0.95),
            "output_tokens": tokens, "output_tokens_per_s": round(tokens / wall, 3) if wall else None,
            "mean_output_tokens": round(tokens / len(results), 2) if results else None}


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 4)
    return round(statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1], 4)


def prompt_tokens(url: str, requests: list[tuple[str, str]]) -> dict:
    """Mean prompt tokens per method (from non-streamed answers' usage) for the first few requests."""
    import httpx

    out = {}
    for method, model in METHODS.items():
        counts = []
        for user, question in requests[:4]:
            body = {"model": model, "user": user, "max_tokens": 1, "messages": [{"role": "user", "content": question}]}
            reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600).json()
            counts.append(reply["usage"]["prompt_tokens"])
        out[method] = round(sum(counts) / len(counts), 1)
    return out


def shown(path: str | Path) -> str:
    """A path relative to the checkout when inside it (the JSON names no machine paths)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return Path(path).name


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted(report["concurrency"], key=int)
    figure, axes = plt.subplots(1, 3, figsize=(13, 4))
    for key, axis, title in (("p50_ttft_s", axes[0], "p50 time to first token (s)"),
                             ("p95_latency_s", axes[1], "p95 latency (s)"),
                             ("output_tokens_per_s", axes[2], "output tokens / s")):
        for offset, method in ((-0.2, "soft"), (0.2, "text")):
            values = [report["concurrency"][c][method][key] or 0 for c in levels]
            axis.bar([i + offset for i in range(len(levels))], values, width=0.4, label=method)
        axis.set_xticks(range(len(levels)), [f"c={c}" for c in levels])
        axis.set_title(title)
    axes[0].legend()
    figure.suptitle(f"user-embed serve ({report['config']['backend']}), soft prompt vs 50 events as text — "
                    f"{report['machine']['cpus']} CPUs")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server subprocess too
    data = Path(args.data)
    if not (data / "qa.parquet").is_file():
        print(f"benchmarks/serve.py: {data} has no qa.parquet; run `make demo` or `user-embed prepare "
              "movielens-100k --out data/ml-100k` first", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as scratch:
        embedder, which = embedder_dir(args, Path(scratch))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server_log = Path(scratch) / "server.log"
        started = time.perf_counter()
        process = start_server(embedder, args, port, server_log)
        try:
            wait_ready(url, process)
            startup = time.perf_counter() - started
            most = max(max(args.concurrency), args.requests)
            pool = pick_requests(data, most)
            asyncio.run(run_level(url, METHODS["soft"], pool[:2], 2, args.max_tokens, args.level_timeout))  # warm-up
            asyncio.run(run_level(url, METHODS["text"], pool[:2], 2, args.max_tokens, args.level_timeout))
            tokens = prompt_tokens(url, pool)
            levels = {}
            for concurrency in args.concurrency:
                requests = pool[:max(args.requests, concurrency)]
                levels[str(concurrency)] = {}
                for method, model in METHODS.items():
                    result = asyncio.run(run_level(url, model, requests, concurrency, args.max_tokens,
                                                   args.level_timeout))
                    levels[str(concurrency)][method] = result
                    shown_keys = ("p50_ttft_s", "p95_latency_s", "output_tokens_per_s", "errors")
                    summary = json.dumps({k: result[k] for k in shown_keys})
                    print(f"c={concurrency} {method}: {summary}", file=sys.stderr)
            import httpx

            server_metrics = httpx.get(f"{url}/metrics?format=json", timeout=30).json()
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for level in levels.values():
            soft, text = level["soft"], level["text"]
            level["ratios"] = {
                "ttft_text_over_soft_p50": _ratio(text["p50_ttft_s"], soft["p50_ttft_s"]),
                "throughput_soft_over_text": _ratio(soft["output_tokens_per_s"], text["output_tokens_per_s"])}
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "commit": commit(),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "config": {"backend": args.backend, "embedder": which, "llm": "SmolLM2-135M-Instruct (offline default)",
                   "data": shown(args.data), "requests_per_level": args.requests, "max_tokens": args.max_tokens,
                   "temperature": 0, "stream": True, "max_batch_size": args.max_batch_size,
                   "server_threads": args.threads, "text_history_events": 50,
                   "level_timeout_s": args.level_timeout, "server_startup_s": round(startup, 1)},
        "prompt_tokens_mean": tokens,
        "concurrency": levels,
        "server": {"batch_size": server_metrics["batch_size"], "cache": server_metrics["cache"]},
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}", file=sys.stderr)
    return 0


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


if __name__ == "__main__":
    sys.exit(main())
