"""Sequence encoder zoo: training speed/memory, the ML-100k pre-training comparison, and a scaling plot.

Run from the repository root (each mode updates its own section of the JSON)::

    nice .venv/bin/python benchmarks/encoders.py speed              # fwd+bwd sequences/s at lengths 50 and 200
    nice .venv/bin/python benchmarks/encoders.py compare --epochs 3  # pre-train every encoder on ML-100k + scaling
    nice .venv/bin/python benchmarks/encoders.py align --steps 40    # optional: short align + UserQA per family and vs size
    .venv/bin/python benchmarks/encoders.py plot                     # redraw the PNG from the JSON

``speed``: for each encoder (``sequence`` baseline first) and length, a batch of full-length
synthetic histories (ML-100k sized catalog) goes forward and backward (loss = mean of squared
tokens) ``--iters`` times after ``--warmup`` untimed runs. Reported: sequences/s by wall clock
and by process CPU time (less sensitive to other jobs on a shared machine), activation memory
(distinct bytes saved for backward, by a saved-tensors hook), parameter bytes, and each
encoder's ratio to the ``sequence`` baseline measured in the same run. On a GPU the same runs
use bf16 autocast and report peak allocated memory.

``compare``: ``user-embed pretrain --config configs/pretrain_<kind>.yaml`` for every encoder with
``--epochs`` epochs (in this process, so imports are paid once), then SASRec at other widths,
depths and maximum lengths; test Recall@k / NDCG@k, parameters, training throughput, and the
most-popular baseline go to the JSON, and ``benchmarks/results/encoder_scaling.png`` is drawn.

``align``: for each encoder with a pre-trained checkpoint, ``user-embed fit`` on
``configs/align_<kind>.yaml`` (N steps, run folder ``runs/align_<kind>``) then ``user-embed
evaluate`` (soft prompt only) for UserQA accuracy per family; the question-only baseline once on the
same seeded questions (each run's soft − none difference gets a 95 % user-bootstrap interval); then
the same for every SASRec scaling point of ``compare`` (``runs/align_scaling/<name>``), and the plot
gains a row of UserQA accuracy against size.
Expensive on CPU (≈ 5 s per step with SmolLM2).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "encoders.json"
DEFAULT_PNG = ROOT / "benchmarks" / "results" / "encoder_scaling.png"
KINDS = ["sequence", "sasrec", "gru4rec", "trmpp", "hstu"]
SCALING = {"dim": [32, 64, 128], "layers": [1, 2, 4], "max_len": [20, 50, 200]}
BASE = {"dim": 64, "layers": 2, "max_len": 50}


# ---- speed ------------------------------------------------------------------------------------------
def speed(args) -> dict:
    import torch

    from user_embed.config import SourceConfig
    from user_embed.data.spec import DataSpec
    from user_embed.encoders import SourceInputs, build_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    spec = DataSpec(item_ids=[str(i) for i in range(1682)], categories=[str(i) for i in range(19)], max_categories=6)
    results: dict = {}
    for length in args.lengths:
        generator = torch.Generator().manual_seed(0)
        b, c = args.batch, spec.max_categories
        inputs = SourceInputs(
            items=torch.randint(2, spec.num_items, (b, length), generator=generator),
            categories=torch.randint(0, spec.num_categories, (b, length, c), generator=generator),
            values=torch.randn(b, length, generator=generator), has_value=torch.ones(b, length, dtype=torch.bool),
            gaps=torch.randint(0, 20, (b, length), generator=generator).sort(-1, descending=True).values,
            mask=torch.ones(b, length, dtype=torch.bool)).to(device)
        for kind in KINDS:
            torch.manual_seed(0)
            config = SourceConfig(kind=kind, dim=args.dim, layers=args.layers, heads=args.heads, max_len=length)
            encoder = build_encoder(config, spec).to(device).train()
            results.setdefault(kind, {})[str(length)] = _time_encoder(encoder, inputs, args, device)
            print(f"speed {kind:9s} L={length:4d}: {results[kind][str(length)]}", flush=True)
    for kind in KINDS:
        for length in map(str, args.lengths):
            row, base = results[kind][length], results["sequence"][length]
            row["vs_sequence"] = {
                "sequences_per_s": round(row["sequences_per_s"] / base["sequences_per_s"], 2),
                "sequences_per_cpu_s": round(row["sequences_per_cpu_s"] / base["sequences_per_cpu_s"], 2),
                "activation_mb": round(row["activation_mb"] / base["activation_mb"], 2),
            }
    return {"device": str(device), "dtype": "bfloat16 autocast" if device.type == "cuda" else "float32",
            "threads": torch.get_num_threads(), "batch": args.batch, "dim": args.dim, "layers": args.layers,
            "heads": args.heads, "iters": args.iters, "catalog_items": len(spec.item_ids),
            "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "results": results}


def _time_encoder(encoder, inputs, args, device) -> dict:
    import torch

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            tokens = encoder(inputs).tokens
        tokens.float().pow(2).mean().backward()
        encoder.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    activation = _activation_bytes(encoder, inputs, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sequences = args.iters * args.batch
    row = {"parameters": sum(p.numel() for p in encoder.parameters()),
           "sequences_per_s": round(sequences / wall, 1),
           "sequences_per_cpu_s": round(sequences / cpu, 1) if device.type == "cpu" else None,
           "ms_per_batch": round(1000 * wall / args.iters, 1),
           "activation_mb": round(activation / 2**20, 1),
           "parameter_mb": round(sum(p.numel() * p.element_size() for p in encoder.parameters()) / 2**20, 2)}
    if device.type == "cuda":
        row["peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def _activation_bytes(encoder, inputs, device) -> int:
    """Distinct bytes of the tensors autograd keeps for backward (activations), parameters excluded."""
    import torch

    parameters = {p.data_ptr() for p in encoder.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            tokens = encoder(inputs).tokens
    tokens.float().pow(2).mean().backward()
    encoder.zero_grad(set_to_none=True)
    return sum(seen.values())


# ---- compare + scaling ------------------------------------------------------------------------------------
def pretrain(kind: str, epochs: int, output: Path, overrides: dict | None = None) -> dict:
    from user_embed.commands.pretrain import main

    argv = ["--config", str(ROOT / "configs" / f"pretrain_{kind}.yaml"), "--trainer.max_epochs", str(epochs),
            "--trainer.check_val_every_n_epoch", "1000", "--model.output_dir", str(output)]
    for key, value in (overrides or {}).items():
        argv += [f"--model.encoder.{key}", str(value)]
    started = time.perf_counter()
    main(argv)
    report = json.loads((output / "metrics.json").read_text())
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return report


def _row(report: dict) -> dict:
    return {"parameters": report["encoder"]["parameters"], **{k: round(v, 4) for k, v in report["test"].items()},
            "train_sequences_per_s": round(report["train_sequences_per_s"], 1),
            "train_seconds": round(report["train_seconds"], 1), "wall_seconds": report["wall_seconds"],
            "epochs": report["epochs"], "softmax": report["softmax"]}


def compare(args) -> tuple[dict, dict]:
    started = time.perf_counter()
    runs = ROOT / "runs"
    comparison, first = {}, None
    for kind in args.kinds:
        report = pretrain(kind, args.epochs, runs / f"pretrain_{kind}" / "encoder")
        first = first or report
        comparison[kind] = _row(report)
        print(f"compare {kind}: {comparison[kind]}", flush=True)
    scaling: dict = {"encoder": "sasrec", "base": BASE, "points": []}
    if not args.skip_scaling:
        for axis, values in SCALING.items():
            for value in values:
                if value == BASE[axis] and "sasrec" in comparison:
                    row = comparison["sasrec"]
                else:
                    name = f"sasrec_{axis}{value}"
                    row = _row(pretrain("sasrec", args.epochs, runs / "encoder_scaling" / name, {axis: value}))
                scaling["points"].append({"axis": axis, "value": value, **row})
                print(f"scaling {axis}={value}: recall@10 {row['recall@10']}", flush=True)
    data = first["data"] if first else {}
    meta = {"dataset": "MovieLens-100k (data/ml-100k)", "protocol": data.get("protocol"), "split": data.get("split"),
            "eval_last": data.get("eval_last"), "eval_targets": data.get("eval_targets"),
            "users_per_split": data.get("users_per_split"), "exclude_seen": first["exclude_seen"] if first else None,
            "truncation": data.get("truncation"), "epochs": args.epochs,
            "popularity_test": {k: round(v, 4) for k, v in (first or {}).get("popularity_test", {}).items()},
            "total_wall_seconds": round(time.perf_counter() - started, 1)}
    return {"meta": meta, "encoders": comparison}, scaling


# ---- align (optional) -------------------------------------------------------------------------------------
def _align_config(kind: str, run: Path, steps: int, source_overrides: dict | None = None) -> Path:
    """``configs/align_<kind>.yaml`` with its run folder moved to ``run``, ``steps`` training steps and the
    sequence source's fields overridden (e.g. a scaling point's dim and checkpoint); written to run/config.yaml."""
    import yaml

    config = yaml.safe_load((ROOT / "configs" / f"align_{kind}.yaml").read_text())
    config["trainer"]["max_steps"] = steps
    config["trainer"]["default_root_dir"] = str(run)
    for logger in config["trainer"].get("logger") or []:
        logger["init_args"]["save_dir"] = str(run)
    config["model"]["export_dir"] = str(run / "embedder")
    source = config["model"]["sources"][0]
    source.update(source_overrides or {})
    config["data"]["max_history"] = max(config["data"]["max_history"], source["max_len"])  # let max_len 200 read 200
    run.mkdir(parents=True, exist_ok=True)
    path = run / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _evaluate(embedder: Path, out: Path, methods: str, max_per_task: int) -> dict | str:
    from user_embed.cli import main

    code = main(["evaluate", "--checkpoint", str(embedder), "--data", str(ROOT / "data" / "ml-100k"),
                 "--methods", methods, "--max-per-task", str(max_per_task), "--out", str(out), "--no-progress"])
    if code != 0:
        return f"evaluate failed (exit {code})"
    metrics = json.loads((out / "metrics.json").read_text())
    return {"questions": metrics["questions"], **{m: metrics["accuracy"][m] for m in methods.split(",")}}


def _align_one(name: str, kind: str, encoder: Path, run: Path, args, overrides: dict | None = None) -> dict | str:
    """Stage 2 (fit the adapter on the frozen pre-trained encoder) + stage 3 (UserQA, soft prompt only)."""
    from user_embed.cli import main

    if not (encoder / "encoder.safetensors").is_file():
        return "not run (no pre-trained checkpoint)"
    saved = run / "align_row.json"  # this run's result, for --reuse
    if args.reuse and saved.is_file():
        row = json.loads(saved.read_text())
        if (row.get("steps"), row.get("max_per_task")) == (args.steps, args.max_per_task):
            print(f"align {name}: reused {saved}", flush=True)
            return row
    started = time.perf_counter()
    config = _align_config(kind, run, args.steps, {**(overrides or {}), "checkpoint": str(encoder)})
    code = main(["fit", "--config", str(config)])
    if code != 0:
        return f"fit failed (exit {code})"
    train_seconds = time.perf_counter() - started
    result = _evaluate(run / "embedder", run / "eval", "soft", args.max_per_task)
    if isinstance(result, str):
        return result
    row = {"questions": result["questions"], **result["soft"], "train_seconds": round(train_seconds, 1),
           "wall_seconds": round(time.perf_counter() - started, 1), "steps": args.steps,
           "max_per_task": args.max_per_task}
    from data_pipelines.io import write_json_atomic

    write_json_atomic(saved, row, indent=1)
    print(f"align {name}: {row}", flush=True)
    return row


def _minus_none(run: Path, none_run: Path) -> dict | None:
    """Soft − question-only accuracy over the same questions, with its 95 % user-bootstrap interval."""
    import polars as pl

    from user_embed.eval.paired import paired_differences

    soft_path, none_path = run / "eval" / "predictions.jsonl", none_run / "eval" / "predictions.jsonl"
    if not (soft_path.is_file() and none_path.is_file()):
        return None
    keys = ["user_id", "task", "question"]
    rows = pl.read_ndjson(soft_path).select(*keys, "family", "answer", "soft").join(
        pl.read_ndjson(none_path).select(*keys, "none"), on=keys, how="inner")
    if rows.is_empty():
        return None
    return paired_differences(rows.to_dicts(), "soft", ["none"], ["overall"])["soft-none"]["overall"]


def align(args) -> dict:
    """Every encoder through stages 2 and 3, the question-only baseline on the same questions, and (unless
    --skip-scaling) the SASRec scaling points of ``compare``, so accuracy can be read against size."""
    runs = ROOT / "runs"
    out: dict = {"steps": args.steps, "max_per_task": args.max_per_task, "results": {}, "scaling": []}
    folders: dict[str, Path] = {}  # run name -> its folder, for the paired comparison with `none`
    for kind in args.kinds:
        folders[kind] = runs / f"align_{kind}"
        out["results"][kind] = _align_one(kind, kind, runs / f"pretrain_{kind}" / "encoder", folders[kind], args)
    first = next((folders[k] / "embedder" for k, r in out["results"].items() if isinstance(r, dict)), None)
    if first is not None:  # same seeded questions for every run; `none` does not depend on the embedder
        baseline = _evaluate(first, runs / "align_none" / "eval", "none", args.max_per_task)
        out["none"] = baseline if isinstance(baseline, str) else baseline["none"]
    if not args.skip_scaling:
        for axis, values in SCALING.items():
            if axis not in args.axes:
                continue
            for value in values:
                if value == BASE[axis]:
                    row = out["results"].get("sasrec")
                else:
                    name = f"sasrec_{axis}{value}"
                    folders[name] = runs / "align_scaling" / name
                    row = _align_one(name, "sasrec", runs / "encoder_scaling" / name, folders[name], args, {axis: value})
                out["scaling"].append({"axis": axis, "value": value, "userqa": row})
    rows = {**out["results"], **{f"sasrec_{p['axis']}{p['value']}": p["userqa"] for p in out["scaling"]}}
    for name, row in rows.items():
        if isinstance(row, dict) and name in folders:
            row["soft_minus_none"] = _minus_none(folders[name], runs / "align_none")
    return out


# ---- plot ------------------------------------------------------------------------------------------
AXES = [("dim", "width (dim)"), ("layers", "depth (layers)"), ("max_len", "max sequence length")]


def _userqa_points(result: dict, axis: str) -> list[tuple[int, float, float]]:
    """(value, overall UserQA accuracy, binomial s.e.) of the align runs along one scaling axis."""
    rows = [p for p in (result.get("userqa") or {}).get("scaling", []) if p["axis"] == axis]
    points = []
    for p in sorted(rows, key=lambda p: p["value"]):
        row = p.get("userqa")
        if isinstance(row, dict):
            acc, n = row["overall"], row["questions"]
            points.append((p["value"], acc, (acc * (1 - acc) / n) ** 0.5))
    return points


def plot(result: dict, png: Path) -> None:
    """Recall@10 against width, depth and length (top row) and, once ``align`` ran, UserQA accuracy (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scaling = result.get("scaling") or {}
    points = scaling.get("points") or []
    meta = (result.get("comparison") or {}).get("meta", {})
    popularity = meta.get("popularity_test", {}).get("recall@10")
    targets = (meta.get("eval_targets") or {}).get("test") or 0
    userqa = result.get("userqa") or {}
    with_userqa = any(_userqa_points(result, axis) for axis, _ in AXES)
    top = max([p["recall@10"] for p in points] + [popularity or 0]) * 1.35 or 1.0
    fig, grid = plt.subplots(2 if with_userqa else 1, 3, figsize=(12, 6.8 if with_userqa else 3.6), sharey="row",
                             squeeze=False)
    for ax, (axis, label) in zip(grid[0], AXES):
        rows = sorted((p for p in points if p["axis"] == axis), key=lambda p: p["value"])
        if rows:
            recall = [p["recall@10"] for p in rows]
            # binomial standard error over the test targets (targets of one user are correlated: a lower bound)
            error = [(r * (1 - r) / targets) ** 0.5 if targets else 0.0 for r in recall]
            ax.errorbar([p["value"] for p in rows], recall, yerr=error, fmt="o-", capsize=3, label="SASRec Recall@10 ± 1 s.e.")
            for p in rows:
                ax.annotate(f"{p['parameters'] / 1e3:.0f}k", (p["value"], p["recall@10"]), textcoords="offset points",
                            xytext=(8, -10), fontsize=7)
        if popularity is not None:
            ax.axhline(popularity, color="grey", ls="--", lw=1, label="most popular items")
        ax.set_xscale("log", base=2)
        ax.set_xticks([p["value"] for p in rows], [str(p["value"]) for p in rows])
        ax.set_xlabel(label)
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
        if not with_userqa:
            ax.text(0.98, 0.03, "UserQA accuracy vs size: not run", transform=ax.transAxes, fontsize=7, color="grey",
                    ha="right")
    grid[0][0].set_ylabel("test Recall@10 (ML-100k, held-out users)")
    grid[0][0].legend(fontsize=7, loc="upper left")
    if with_userqa:
        none = userqa["none"].get("overall") if isinstance(userqa.get("none"), dict) else None  # str: it failed
        for ax, (axis, label) in zip(grid[1], AXES):
            pts = _userqa_points(result, axis)
            if pts:
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], fmt="s-", color="C2",
                            capsize=3, label="soft prompt, UserQA overall ± 1 s.e.")
                ax.set_xscale("log", base=2)
                ax.set_xticks([p[0] for p in pts], [str(p[0]) for p in pts])
            if none is not None:
                ax.axhline(none, color="grey", ls="--", lw=1, label="question only (none)")
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
        grid[1][0].set_ylabel(f"UserQA accuracy ({userqa.get('steps')} align steps)")
        grid[1][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"Encoder scaling on MovieLens-100k (SASRec, {meta.get('epochs')} epochs, {targets} test targets; "
                 f"labels = encoder parameters)", fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)


# ---- main ------------------------------------------------------------------------------------------
def machine() -> dict:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["speed", "compare", "align", "plot"])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--png", type=Path, default=DEFAULT_PNG)
    parser.add_argument("--kinds", default=",".join(KINDS), help="encoders to run (comma-separated)")
    parser.add_argument("--lengths", default="50,200", help="speed: sequence lengths")
    parser.add_argument("--batch", type=int, default=64, help="speed: sequences per batch")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--cpu", action="store_true", help="speed: stay on CPU even with a GPU")
    parser.add_argument("--epochs", type=int, default=3, help="compare: pre-training epochs per run")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--steps", type=int, default=30, help="align: adapter training steps")
    parser.add_argument("--max-per-task", type=int, default=20, help="align: test questions per UserQA task")
    parser.add_argument("--axes", default=",".join(SCALING), help="align: SCALING axes to run (comma-separated)")
    parser.add_argument("--reuse", action="store_true",
                        help="align: keep a run's earlier result (its align_row.json) when steps and questions match")
    args = parser.parse_args()
    args.kinds = [k for k in args.kinds.split(",") if k]
    args.lengths = [int(x) for x in args.lengths.split(",")]
    args.axes = [a for a in args.axes.split(",") if a]
    if set(args.axes) - set(SCALING):
        parser.error(f"--axes: unknown {sorted(set(args.axes) - set(SCALING))}; choose from {list(SCALING)}")
    os.chdir(ROOT)
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.mode == "speed":
        result["speed"] = {**speed(args), "machine": machine()}
    elif args.mode == "compare":
        result["comparison"], scaling = compare(args)
        result["comparison"]["meta"]["machine"] = machine()
        if not args.skip_scaling:
            result["scaling"] = scaling
    elif args.mode == "align":
        result["userqa"] = {**align(args), "machine": machine()}
    if args.mode in ("compare", "align", "plot"):
        plot(result, args.png)
    if args.mode != "plot":
        from data_pipelines.io import write_json_atomic

        write_json_atomic(args.out, result)
    print(f"wrote {args.out}" + (f" and {args.png}" if args.mode in ("compare", "align", "plot") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
