"""Generation speed: soft prompt (HF), soft prompt (vLLM) and a 50-event text history (HF).

Same test users and questions for every method, one run (a benchmark, not a test):
    (a) soft_hf    K soft vectors spliced into the chat prompt, HF ``generate``
    (b) soft_vllm  the same embeddings as vLLM ``prompt_embeds`` (run in ``.venv-vllm`` by a subprocess)
    (c) text_hf    the user's 50 most recent events as text in the prompt, HF ``generate``
At batch sizes 1 and 32 it reports prompt tokens, time to first token (a run with one new
token), output tokens/s and total time, and the ratios ``prompt_tokens_ratio`` (c/a),
``ttft_ratio`` (c/a, batch 1) and ``vllm_over_hf_throughput_b32`` (b/a); writes JSON + a PNG chart.

    .venv/bin/python benchmarks/generation.py --checkpoint runs/quickstart/embedder --data data/ml-100k
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"soft_hf": "(a) soft prompt, HF", "soft_vllm": "(b) soft prompt, vLLM",
           "text_hf": "(c) 50 events as text, HF"}
TARGETS = {"prompt_tokens_ratio": 20.0, "ttft_ratio": 5.0, "vllm_over_hf_throughput_b32": 2.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "runs/quickstart/embedder"))
    parser.add_argument("--data", default=str(ROOT / "data/ml-100k"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/generation.json"))
    parser.add_argument("--chart", default=None, help="PNG path (default: next to --out)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--batches", type=int, default=3, help="batches timed at batch size 1 (1 at larger sizes)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timings are medians of this many runs")
    parser.add_argument("--ignore-eos", action="store_true",
                        help="every answer runs to --max-new-tokens (a trained embedder's answers can be 2 tokens long)")
    parser.add_argument("--history-events", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for every method (default: torch's choice; 1 on a busy machine)")
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm/bin/python"),
                        help="interpreter with vLLM, used when this one has none")
    parser.add_argument("--partial", action="store_true", help=argparse.SUPPRESS)  # subprocess: write methods only
    return parser.parse_args(argv)


def pick_requests(data_dir: Path, count: int, seed: int = 0) -> list:
    """``count`` test questions (distinct users where possible), the same for every method."""
    from user_embed.generate import Request

    qa = pl.read_parquet(data_dir / "qa.parquet", columns=["user_id", "question", "split"])
    test = qa.filter(pl.col("split") == "test") if (qa["split"] == "test").any() else qa
    rows = (test.sample(fraction=1.0, shuffle=True, seed=seed)
            .with_columns(pl.int_range(pl.len()).over("user_id").alias("_nth"))
            .sort("_nth", maintain_order=True).head(count))
    return [Request(u, q) for u, q in rows.select("user_id", "question").iter_rows()]


def history_texts(data_dir: Path, user_ids: list[str], events: int) -> dict[str, str]:
    """Each user's ``events`` most recent events as one line of text: title (genres), rating."""
    items = pl.scan_parquet(data_dir / "items.parquet").select(
        "item_id", pl.concat_str(pl.col("title"), pl.lit(" ("), pl.col("categories").list.join(", "), pl.lit(")"))
        .alias("item"))
    lines = (pl.scan_parquet(data_dir / "events.parquet")
             .filter(pl.col("user_id").is_in(user_ids))
             .sort("user_id", "timestamp", "item_id")
             .group_by("user_id", maintain_order=True).tail(events)
             .join(items, on="item_id", how="left")
             .with_columns(pl.concat_str(pl.col("item").fill_null(pl.col("item_id")), pl.lit(": "),
                                         pl.col("value").cast(pl.Int64).cast(pl.Utf8).fill_null("?"), pl.lit("/5"))
                           .alias("line"))
             .group_by("user_id", maintain_order=True)
             .agg(pl.col("line").str.join("; "))
             .collect())
    found = dict(zip(lines["user_id"].to_list(), lines["line"].to_list()))
    return {u: f"Recently watched, oldest first: {found.get(u, 'nothing')}" for u in user_ids}


def time_method(lm, users, method: str, requests: list, contexts: dict[str, str], batch_size: int,
                batches: int, max_new_tokens: int, repeats: int = 3, ignore_eos: bool = False) -> dict:
    """Prompt tokens, TTFT (a 1-token run), output tokens/s and total time over ``batches`` batches.

    Each timing is the median of ``repeats`` runs (one run where a run takes over a minute).
    """
    from user_embed.data.collate import Example
    from user_embed.generate import SamplingConfig

    backend = lm.backend(_backend(method))
    chunks = [requests[i:i + batch_size] for i in range(0, batches * batch_size, batch_size)]
    chunks = [c for c in chunks if len(c) == batch_size]

    def run(chunk, tokens: int) -> tuple[float, list[int], list[list[int]]]:
        start = time.perf_counter()
        examples = [Example(r.user_id, r.question, "", []) for r in chunk]
        if method.startswith("soft"):
            prompts = lm.prompt_embeds(users, examples)
        else:
            prompts = lm.prompt_embeds(users, examples, "text", [contexts[r.user_id] for r in chunk])
        raw = backend.generate_tokens(prompts, SamplingConfig(max_new_tokens=tokens, ignore_eos=ignore_eos and tokens > 1))
        seconds = time.perf_counter() - start
        return seconds, prompts.lengths, [lm.decode(r, [])[1] for r in raw]

    run(chunks[0][:1], 2)  # warm-up (allocations, first-call overheads)
    ttft = [_median_run(lambda: run(chunk, 1), repeats)[0] for chunk in chunks]
    totals, lengths, answers = [], [], []
    for chunk in chunks:
        seconds, chunk_lengths, chunk_answers = _median_run(lambda: run(chunk, max_new_tokens), repeats)
        totals.append(seconds)
        lengths += chunk_lengths
        answers += chunk_answers
    outputs = sum(len(a) for a in answers)
    return {"batch_size": batch_size, "batches": len(chunks), "requests": len(lengths),
            "prompt_tokens": sum(lengths) / len(lengths), "ttft_s": sum(ttft) / len(ttft),
            "total_s": sum(totals), "batch_s": sum(totals) / len(totals), "output_tokens": outputs,
            "output_tokens_per_s": outputs / sum(totals), "_token_ids": answers}


def _median_run(run, repeats: int, budget_s: float = 60.0):
    """Run up to ``repeats`` times (fewer once one run takes > ``budget_s``); the run with the median time."""
    runs = [run()]
    while len(runs) < repeats and runs[-1][0] < budget_s:
        runs.append(run())
    return sorted(runs, key=lambda r: r[0])[len(runs) // 2]


def _backend(method: str) -> str:
    return "vllm" if method.endswith("vllm") else "hf"


def measure(args: argparse.Namespace, methods: list[str]) -> dict:
    """Run ``methods`` in this interpreter; returns {method: {"b1": …, "b32": …}}."""
    from user_embed.model import PersonalizedLM
    from user_embed.store import UserStore

    started = time.perf_counter()
    lm = PersonalizedLM.from_pretrained(args.checkpoint, device=args.device)
    users = UserStore.from_folder(args.data)
    load_s = time.perf_counter() - started
    need = max(max(args.batch_sizes), args.batches)
    requests = pick_requests(Path(args.data), need)
    contexts = history_texts(Path(args.data), sorted({r.user_id for r in requests}), args.history_events)
    results = {}
    for method in methods:
        entry = {"label": METHODS[method], "load_s": round(load_s, 2)}
        if method.endswith("vllm"):
            started = time.perf_counter()
            lm.backend(_backend(method)).prepare()
            entry["engine_start_s"] = round(time.perf_counter() - started, 2)
        for size in args.batch_sizes:
            batches = args.batches if size == 1 else 1
            print(f"  {method} batch {size} …", file=sys.stderr, flush=True)
            entry[f"b{size}"] = time_method(lm, users, method, requests, contexts, size, batches,
                                            args.max_new_tokens, args.repeats, args.ignore_eos)
        results[method] = entry
    return results


def measure_in_vllm_env(args: argparse.Namespace) -> dict:
    """Run the vLLM method with the vLLM interpreter (its own environment) and read its JSON back."""
    python = Path(args.vllm_python)
    if not python.is_file():
        print(f"soft_vllm skipped: no vLLM environment at {python} (build it with `bash .ci/vllm.sh`)", file=sys.stderr)
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "vllm.json"
        command = [str(python), __file__, "--partial", "--methods", "soft_vllm", "--out", str(out),
                   "--checkpoint", args.checkpoint, "--data", args.data, "--batches", str(args.batches),
                   "--max-new-tokens", str(args.max_new_tokens), "--device", args.device,
                   "--repeats", str(args.repeats), *(["--ignore-eos"] if args.ignore_eos else []),
                   *(["--threads", str(args.threads)] if args.threads else []),
                   "--batch-sizes", *map(str, args.batch_sizes)]
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
                   VLLM_ENABLE_V1_MULTIPROCESSING="0")
        subprocess.run(command, check=True, env=env)
        return json.loads(out.read_text())


def _compare_tokens(methods: dict) -> None:
    """Record how many vLLM answers equal the HF ones token for token (greedy fp32), then drop the ids."""
    a, b = methods.get("soft_hf"), methods.get("soft_vllm")
    for size in [k for k in (a or {}) if k.startswith("b") and k[1:].isdigit()]:
        if b and size in b:
            pairs = list(zip(a[size]["_token_ids"], b[size]["_token_ids"]))
            b[size]["same_tokens_as_hf"] = f"{sum(x == y for x, y in pairs)}/{len(pairs)}"
    for entry in methods.values():
        for value in entry.values():
            if isinstance(value, dict):
                value.pop("_token_ids", None)


def ratios(methods: dict) -> dict:
    """prompt tokens and TTFT of (c) over (a) at the smallest batch (1), and vLLM over HF throughput."""
    a, b, c = methods.get("soft_hf"), methods.get("soft_vllm"), methods.get("text_hf")
    sizes = sorted(int(k[1:]) for k in next(iter(methods.values()), {}) if k.startswith("b") and k[1:].isdigit())
    out = {}
    if a and c and sizes:
        first = f"b{sizes[0]}"
        out["prompt_tokens_ratio"] = c[first]["prompt_tokens"] / a[first]["prompt_tokens"]
        out["ttft_ratio"] = c[first]["ttft_s"] / a[first]["ttft_s"]
        for size in sizes[1:]:
            out[f"ttft_ratio_b{size}"] = c[f"b{size}"]["ttft_s"] / a[f"b{size}"]["ttft_s"]
    if a and b:
        for size in sizes:
            out[f"vllm_over_hf_throughput_b{size}"] = (b[f"b{size}"]["output_tokens_per_s"]
                                                      / a[f"b{size}"]["output_tokens_per_s"])
    return {k: round(v, 3) for k, v in out.items()}


def chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = result["methods"]
    names = list(methods)
    sizes = [k for k in next(iter(methods.values())) if k.startswith("b") and k[1:].isdigit()]
    panels = [("prompt tokens / request", lambda m, s: methods[m][s]["prompt_tokens"], sizes[:1]),
              ("time to first token (s)", lambda m, s: methods[m][s]["ttft_s"], sizes),
              ("output tokens / s", lambda m, s: methods[m][s]["output_tokens_per_s"], sizes)]
    figure, axes = plt.subplots(1, 3, figsize=(13, 4))
    colors = {"soft_hf": "#4C72B0", "soft_vllm": "#55A868", "text_hf": "#C44E52"}
    for axis, (title, value, panel_sizes) in zip(axes, panels):
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            xs = [j + i * width for j in range(len(panel_sizes))]
            axis.bar(xs, [value(name, s) for s in panel_sizes], width, label=METHODS[name], color=colors.get(name))
        axis.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(panel_sizes))])
        axis.set_xticklabels([f"batch {s[1:]}" for s in panel_sizes])
        axis.set_title(title)
        if "time" in title:
            axis.set_yscale("log")
    axes[0].legend(fontsize=8)
    figure.suptitle(f"Personalized generation on {result['machine']['device']}, {result['machine']['threads']} "
                    f"thread(s) ({result['max_new_tokens']} new tokens at most, greedy fp32)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def machine(device: str) -> dict:
    import torch

    name = f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})"
    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
    return {"device": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average_1m": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        import vllm  # noqa: F401

        here_vllm = True
    except ImportError:
        here_vllm = False
    local = [m for m in args.methods if here_vllm or not m.endswith("vllm")]
    methods = measure(args, local) if local else {}
    if args.partial:
        Path(args.out).write_text(json.dumps(methods))
        return 0
    if "soft_vllm" in args.methods and not here_vllm:
        methods.update(measure_in_vllm_env(args))
    methods = {m: methods[m] for m in METHODS if m in methods}
    _compare_tokens(methods)
    result = {"checkpoint": args.checkpoint, "data": args.data, "max_new_tokens": args.max_new_tokens,
              "repeats": args.repeats,
              "history_events": args.history_events,
              "decoding": "greedy, float32" + (", fixed length (end tokens ignored)" if args.ignore_eos else ""),
              "machine": machine(args.device),
              "methods": methods, "ratios": ratios(methods)}
    result["targets"] = {k: {"target": v, "measured": result["ratios"].get(k),
                             "met": result["ratios"].get(k) is not None and result["ratios"][k] >= v}
                         for k, v in TARGETS.items()}
    from data_pipelines.io import write_text_atomic

    out = write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    chart(result, Path(args.chart) if args.chart else out.with_suffix(".png"))
    print(json.dumps(result["ratios"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
