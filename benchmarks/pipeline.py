"""Pipeline speed benchmark: our polars import + per-user sequences + UserQA vs plain pandas.

Run from the repository root::

    nice python benchmarks/pipeline.py                      # 10M events, writes benchmarks/results/pipeline.json
    python benchmarks/pipeline.py --events 20000 --out /tmp/p.json --skip-prepare   # a quick check

Steps:
1. Generate a seeded synthetic log as CSV (``events.csv``: user_id, item_id, rating,
   timestamp; ``items.csv``: item_id, title, genres joined by ``|``). Users ~100k and
   items ~50k at 10M events (fewer for small runs), 1-3 of 20 genres per item, heavy-tailed
   user activity and item popularity, and a few dirty rows (duplicates, missing or
   non-numeric ratings and times, unknown items, missing users) so cleaning has work to do.
2. In a fresh subprocess each (so each side's peak RSS is its own), time
   - ours: :func:`data_pipelines.generic.import_events` (read, convert, clean, dedupe,
     sort), per-user sorted sequences (polars ``group_by``), and
     :func:`data_pipelines.userqa.build_userqa`;
   - pandas: :mod:`pandas_reference` doing the same steps the straightforward way.
3. Time ``user-embed prepare movielens-100k --out DIR`` (a subprocess, as a user runs it).
4. Write the JSON: per-step times, totals, ``speedup_vs_pandas``, ``peak_rss_gb`` of our
   pipeline (and of pandas), row counts from both sides (they must agree on the cleaned
   events and eligible users), targets and machine info.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "pipeline.json"
GENRES = [
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
    "Biography",
]  # fmt: skip
TARGET_SPEEDUP = 5.0
TARGET_RSS_GB = 4.0
TARGET_PREPARE_S = 10.0
# Shares of the rows that are dirty, by kind (each dropped and counted by both pipelines).
DIRTY = {"duplicate": 0.002, "missing_rating": 0.0005, "bad_rating": 0.0005, "bad_timestamp": 0.0002,
         "unknown_item": 0.0005, "missing_user": 0.0001}  # fmt: skip


# --------------------------------------------------------------------------- synthetic data


def default_sizes(n_events: int) -> tuple[int, int]:
    """Users and items for ``n_events``: 100k / 50k at 10M events, ~100 / ~200 events each below that."""
    return min(100_000, max(20, n_events // 100)), min(50_000, max(40, n_events // 200))


def generate_log(folder: Path, n_events: int, n_users: int, n_items: int, seed: int) -> dict:
    """Write ``events.csv`` and ``items.csv`` into ``folder``; returns paths and what was injected."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n_genres = len(GENRES)

    # Items: 1-3 distinct genres, drawn by a skewed genre popularity (Gumbel top-k).
    genre_weight = 1.0 / np.arange(1, n_genres + 1) ** 0.7
    n_cats = rng.integers(1, 4, size=n_items)
    keys = np.log(genre_weight)[None, :] + rng.gumbel(size=(n_items, n_genres))
    ranked = np.argsort(-keys, axis=1)[:, :3]
    primary = ranked[:, 0]
    genre_lists = pl.Series([GENRES[g] for g in range(n_genres)]).gather(ranked.ravel()).to_numpy().reshape(n_items, 3)
    genres = ["|".join(row[:k]) for row, k in zip(genre_lists.tolist(), n_cats.tolist())]
    item_ids = np.arange(1, n_items + 1)
    items = pl.DataFrame({"item_id": item_ids, "title": [f"Item {i}" for i in item_ids], "genres": genres})
    items.write_csv(folder / "items.csv")

    # Events: heavy-tailed users, Zipf-like items, 40% drawn from the user's favourite genre.
    n_dup = int(n_events * DIRTY["duplicate"])
    n_clean = n_events - n_dup
    user_w = rng.lognormal(0.0, 1.0, size=n_users)
    users = rng.choice(n_users, size=n_clean, p=user_w / user_w.sum())
    item_w = 1.0 / (np.arange(n_items) + 10.0) ** 0.9
    items_drawn = rng.choice(n_items, size=n_clean, p=item_w / item_w.sum())
    favourite = rng.choice(n_genres, size=n_users, p=genre_weight / genre_weight.sum())
    by_genre = np.argsort(primary, kind="stable")
    starts = np.searchsorted(primary[by_genre], np.arange(n_genres))
    counts = np.bincount(primary, minlength=n_genres)
    fav = favourite[users]
    prefer = (rng.random(n_clean) < 0.4) & (counts[fav] > 0)
    offset = (rng.random(n_clean) * counts[fav]).astype(np.int64)
    items_drawn = np.where(prefer, by_genre[np.minimum(starts[fav] + offset, n_items - 1)], items_drawn)
    quality = rng.normal(0.0, 0.6, size=n_items)
    ratings = np.clip(np.rint(3.5 + quality[items_drawn] + rng.normal(0.0, 0.9, size=n_clean)), 1, 5)
    t0 = int(dt.datetime(2012, 1, 1, tzinfo=dt.timezone.utc).timestamp())
    user_start = t0 + rng.integers(0, 8 * 365 * 86400, size=n_users)
    user_span = (rng.lognormal(4.5, 1.0, size=n_users) * 86400).astype(np.int64) + 86400
    stamps = user_start[users] + (rng.random(n_clean) * user_span[users]).astype(np.int64)

    events = pl.DataFrame({
        "user_id": (users + 1).astype(np.int64),
        "item_id": (items_drawn + 1).astype(np.int64),
        "rating": ratings.astype(np.int64),
        "timestamp": stamps,
    }).with_columns(pl.all().cast(pl.Utf8))
    dup_rows = rng.integers(0, n_clean, size=n_dup)
    events = pl.concat([events, events[dup_rows]])
    n = events.height
    injected = {"duplicate": n_dup}

    def dirty(column: str, kind: str, value: str | None) -> pl.Expr:
        rows = rng.choice(n, size=int(n * DIRTY[kind]), replace=False)
        injected[kind] = len(rows)
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        return pl.when(pl.Series(mask)).then(pl.lit(value, dtype=pl.Utf8)).otherwise(pl.col(column)).alias(column)

    events = events.with_columns(
        dirty("rating", "missing_rating", None),
        dirty("timestamp", "bad_timestamp", "unknown"),
        dirty("user_id", "missing_user", None),
    ).with_columns(
        dirty("rating", "bad_rating", "n.a."),
        dirty("item_id", "unknown_item", str(n_items + 999_999)),
    )
    events = events.sort(pl.col("timestamp").cast(pl.Int64, strict=False), nulls_last=True)  # a log is chronological
    events.write_csv(folder / "events.csv")
    return {
        "events_csv": str(folder / "events.csv"),
        "items_csv": str(folder / "items.csv"),
        "rows": n,
        "users": n_users,
        "items": n_items,
        "genres": n_genres,
        "dirty_rows_injected": injected,
        "events_csv_mb": round((folder / "events.csv").stat().st_size / 1e6, 1),
    }


# --------------------------------------------------------------------------- our pipeline


def run_ours(events_csv: str, items_csv: str, seed: int) -> dict:
    """Generic import + per-user sequences + UserQA with our code; per-step seconds and counts."""
    from data_pipelines.generic import ColumnMapping, import_events
    from data_pipelines.userqa import build_userqa

    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    start, start_cpu = time.perf_counter(), time.process_time()

    def lap(step: str, t: float, c: float) -> tuple[float, float]:
        now, now_cpu = time.perf_counter(), time.process_time()
        wall[step], cpu[step] = now - t, now_cpu - c
        return now, now_cpu

    t, c = start, start_cpu
    mapping = ColumnMapping(
        user_col="user_id", item_col="item_id", time_col="timestamp", value_col="rating",
        item_title_col="title", category_col="genres", category_sep="|", source="rating",
    )  # fmt: skip
    result = import_events(events_csv, mapping, items_path=items_csv)
    t, c = lap("import", t, c)
    events = result.tables["events"]  # already sorted by (user, timestamp)
    sequences = events.group_by("user_id", maintain_order=True).agg("item_id", "timestamp", "value")
    t, c = lap("sequences", t, c)
    qa, texts, summary = build_userqa(events, result.tables["items"], seed=seed)
    lap("userqa", t, c)
    wall["total"], cpu["total"] = time.perf_counter() - start, time.process_time() - start_cpu
    report = next(r for r in result.reports if r.name == "events")
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "counts": {
            "events_read": report.read,
            "events_kept": events.height,
            "dropped": report.dropped,
            "users_with_sequences": sequences.height,
            "eligible_users": summary["users"]["eligible"],
            "qa_rows": qa.height,
            "texts": texts.height,
            "qa_rows_per_task": {task: entry["rows"]["all"] for task, entry in summary["tasks"].items()},
        },
    }


# --------------------------------------------------------------------------- subprocess sides


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak * (1 if sys.platform == "darwin" else 1024) / 1e9, 3)


def child_main(side: str, events_csv: str, items_csv: str, seed: int) -> None:
    """Run one side in this (fresh) process and print its result as one JSON line."""
    if side == "ours":
        out = run_ours(events_csv, items_csv, seed)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from pandas_reference import run_pandas

        out = run_pandas(events_csv, items_csv, seed)
    out["peak_rss_gb"] = peak_rss_gb()
    print("RESULT " + json.dumps(out))


def run_side(side: str, data: dict, seed: int) -> dict:
    """Run ``side`` in a subprocess (same interpreter) and return its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--seed", str(seed),
           "--events-csv", data["events_csv"], "--items-csv", data["items_csv"]]  # fmt: skip
    wall = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - wall
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"benchmark side '{side}' failed with exit code {proc.returncode}")
    line = next(line for line in reversed(proc.stdout.splitlines()) if line.startswith("RESULT "))
    out = json.loads(line.removeprefix("RESULT "))
    out["process_wall_seconds"] = round(wall, 2)
    return out


def time_prepare_ml100k() -> dict:
    """Wall time of ``user-embed prepare movielens-100k --out DIR`` (warm asset cache, fresh process)."""
    with tempfile.TemporaryDirectory(prefix="bench-ml100k-") as tmp:
        script = Path(sys.executable).parent / "user-embed"  # the console script, as a user runs it
        entry = [str(script)] if script.exists() else [sys.executable, "-m", "user_embed.cli"]
        cmd = [*entry, "prepare", "movielens-100k", "--out", str(Path(tmp) / "out")]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return {"seconds": None, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return {"seconds": round(seconds, 2), "target_seconds": TARGET_PREPARE_S,
            "meets_target": seconds < TARGET_PREPARE_S, "command": "user-embed prepare movielens-100k --out DIR"}


# --------------------------------------------------------------------------- report


def machine_info() -> dict:
    """CPU, memory, load and library versions: the numbers mean little without them."""
    import numpy
    import polars

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))  # fmt: skip
    except (OSError, StopIteration):
        cpu = platform.processor()
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import pandas

        pandas_version = pandas.__version__
    except ImportError:
        pandas_version = None
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": mem_gb,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "polars": polars.__version__,
        "pandas": pandas_version,
        "numpy": numpy.__version__,
        "niceness": os.nice(0),
    }


def rounded(out: dict | None, key: str) -> dict | None:
    return {step: round(v, 2) for step, v in out[key].items()} if out else None


def compare_counts(ours: dict, theirs: dict) -> dict:
    """Both sides must agree on what survives cleaning and who gets questions."""
    keys = ("events_read", "events_kept", "users_with_sequences", "eligible_users")
    return {k: {"ours": ours["counts"][k], "pandas": theirs["counts"][k],
                "equal": ours["counts"][k] == theirs["counts"][k]} for k in keys}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="rows in the synthetic log (default 10M)")
    parser.add_argument("--users", type=int, default=None, help="users (default: 100k at 10M, N/100 below)")
    parser.add_argument("--items", type=int, default=None, help="items (default: 50k at 10M, N/200 below)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"result JSON (default {DEFAULT_OUT})")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep the generated CSVs here (default: temp)")
    parser.add_argument("--skip-pandas", action="store_true", help="time our pipeline only")
    parser.add_argument("--skip-prepare", action="store_true", help="do not time `prepare movielens-100k`")
    # internal: run one side in this process
    parser.add_argument("--side", choices=("ours", "pandas"), help=argparse.SUPPRESS)
    parser.add_argument("--events-csv", help=argparse.SUPPRESS)
    parser.add_argument("--items-csv", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side is None and args.events < 1000:
        parser.error("--events must be at least 1000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.side:
        child_main(args.side, args.events_csv, args.items_csv, args.seed)
        return 0
    n_users, n_items = default_sizes(args.events)
    n_users, n_items = args.users or n_users, args.items or n_items
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        folder = args.data_dir or Path(tmp)
        t = time.perf_counter()
        data = generate_log(folder, args.events, n_users, n_items, args.seed)
        data["generate_seconds"] = round(time.perf_counter() - t, 2)
        print(f"generated {data['rows']:,} events ({data['events_csv_mb']} MB) in {data['generate_seconds']} s",
              flush=True)  # fmt: skip
        ours = run_side("ours", data, args.seed)
        print(f"ours: {ours['seconds']['total']:.2f} s, peak RSS {ours['peak_rss_gb']} GB", flush=True)
        theirs = None if args.skip_pandas else run_side("pandas", data, args.seed)
        if theirs:
            print(f"pandas: {theirs['seconds']['total']:.2f} s, peak RSS {theirs['peak_rss_gb']} GB", flush=True)
    prepare = {"skipped": True} if args.skip_prepare else time_prepare_ml100k()
    if not args.skip_prepare:
        print(f"prepare movielens-100k: {prepare['seconds']} s", flush=True)

    speedup = round(theirs["seconds"]["total"] / ours["seconds"]["total"], 2) if theirs else None
    cpu_speedup = round(theirs["cpu_seconds"]["total"] / ours["cpu_seconds"]["total"], 2) if theirs else None
    result = {
        "n_events": args.events,
        "data": {k: v for k, v in data.items() if not k.endswith("_csv")},
        "ours_seconds": round(ours["seconds"]["total"], 2),
        "pandas_seconds": round(theirs["seconds"]["total"], 2) if theirs else None,
        "speedup_vs_pandas": speedup,
        "peak_rss_gb": ours["peak_rss_gb"],
        "pandas_peak_rss_gb": theirs["peak_rss_gb"] if theirs else None,
        "speedup_vs_pandas_cpu": cpu_speedup,
        "steps_seconds": {side: rounded(out, "seconds") for side, out in (("ours", ours), ("pandas", theirs))},
        "steps_cpu_seconds": {side: rounded(out, "cpu_seconds") for side, out in (("ours", ours), ("pandas", theirs))},
        "targets": {
            "speedup_vs_pandas": TARGET_SPEEDUP,
            "peak_rss_gb": TARGET_RSS_GB,
            "met_speedup": None if speedup is None else speedup >= TARGET_SPEEDUP,
            "met_rss": ours["peak_rss_gb"] <= TARGET_RSS_GB,
        },
        "counts": {"ours": ours["counts"], "pandas": theirs["counts"] if theirs else None},
        "counts_agree": compare_counts(ours, theirs) if theirs else None,
        "prepare_movielens_100k": prepare,
        "machine": machine,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/pipeline.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    from data_pipelines.io import write_text_atomic

    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}: speedup {speedup}x, ours {result['ours_seconds']} s, peak RSS {result['peak_rss_gb']} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
