"""The noise-robustness sweep of ``user-embed evaluate --noise``: accuracy of every method as history noise grows.

For each share p of ``--noise`` the evaluated users' pre-cutoff histories are perturbed in memory
(:mod:`user_embed.eval.noise`), then the same methods answer the same multiple-choice questions as on the clean
data. The result is metrics.json's ``"noise"`` block::

    {"mode": "replace", "seed": 0, "shares": [0.0, 0.1, …],
     "accuracy": {"<method>": {"<share>": {"overall": …, "<family>": …}}},
     "answered": {"<method>": questions}, "events_changed": {"<share>": n},
     "paired": {"<share>": {"soft-<base>": {…}}}, "seconds": {"<share>": s}, "free_text": "skipped"}

where ``<share>`` is the share as written by :func:`share_key` (``"0"``, ``"0.1"``, ``"0.3"``). A second embedder
(``--compare-checkpoint``/``--compare-name``) adds its ``soft`` accuracy as method ``<name>``. This file also draws
``noise.png`` (accuracy vs share, one line per method) and writes the report's table.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from user_embed.errors import UserError
from user_embed.eval.noise import MODES, noisy_store

#: evaluate(lm, store, methods) → evaluate_userqa's result for the sweep's questions
Evaluate = Callable[[object, object, list[str]], dict]


@dataclass(frozen=True)
class NoiseRequest:
    """What ``--noise`` asked for: the shares (in the order given), the seed, the mode and a second embedder."""

    shares: tuple[float, ...]
    seed: int = 0
    mode: str = "replace"
    compare_checkpoint: str | None = None
    compare_name: str | None = None


def share_key(share: float) -> str:
    """The share as metrics.json's key: ``0.3`` → ``"0.3"``, ``0.0`` → ``"0"``."""
    return f"{share:g}"


def parse_shares(text: str) -> tuple[float, ...]:
    """``"0,0.1,0.3"`` → (0.0, 0.1, 0.3); UserError for a non-number, a share outside [0, 1) or a repeat."""
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise UserError("--noise: no shares given (e.g. --noise 0,0.1,0.3,0.5)")
    shares: list[float] = []
    for part in parts:
        try:
            share = float(part)
        except ValueError:
            raise UserError(f"--noise: {part!r} is not a number (shares are comma-separated, e.g. 0,0.1,0.3)") from None
        if not math.isfinite(share) or not 0 <= share < 1:
            raise UserError(f"--noise: share {part} is outside [0, 1)")
        if share in shares:
            raise UserError(f"--noise: share {part} is given twice")
        shares.append(share)
    return tuple(shares)


def noise_request(args: argparse.Namespace, methods: list[str]) -> NoiseRequest | None:
    """The checked ``--noise*`` and ``--compare-*`` flags (None without ``--noise``); one UserError line each."""
    noise = getattr(args, "noise", None)
    compare, name = getattr(args, "compare_checkpoint", None), getattr(args, "compare_name", None)
    if noise is None:
        if compare or name:
            raise UserError("--compare-checkpoint/--compare-name belong to the noise sweep; add --noise")
        return None
    if args.benchmark == "uqabench":
        raise UserError("--noise: multiple-choice benchmarks only (--benchmark userqa or lamp)")
    mode = getattr(args, "noise_mode", "replace")
    if mode not in MODES:
        raise UserError(f"--noise-mode: unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if bool(compare) != bool(name):
        raise UserError("--compare-checkpoint and --compare-name go together (the name labels its soft prompt)")
    if name and (name in methods or not re.fullmatch(r"[A-Za-z0-9_.-]+", name)):
        raise UserError(f"--compare-name: {name!r} must be a new method name (letters, digits, _ . -), not one of "
                        f"{', '.join(methods)}")
    return NoiseRequest(parse_shares(noise), getattr(args, "noise_seed", 0), mode, compare, name)


def question_cutoffs(examples: list) -> dict[str, int | None]:
    """{user id: the earliest cutoff among their questions (None: they have none, the whole history counts)}."""
    cutoffs: dict[str, int | None] = {}
    for ex in examples:
        if ex.user_id not in cutoffs or cutoffs[ex.user_id] is None:
            cutoffs[ex.user_id] = ex.cutoff
        elif ex.cutoff is not None:
            cutoffs[ex.user_id] = min(cutoffs[ex.user_id], ex.cutoff)
    return cutoffs


def _groups(table: dict[str, float]) -> dict[str, float]:
    """Overall and per-family accuracy (the per-task keys dropped)."""
    return {k: v for k, v in table.items() if not k.startswith("task/")}


def noise_sweep(request: NoiseRequest, lm, users, examples: list, methods: list[str], evaluate: Evaluate,
                clean: dict | None = None, compare_lm=None, progress: Callable[[str], None] | None = None) -> dict:
    """The ``"noise"`` block: ``evaluate`` of ``methods`` (and ``compare_lm``'s soft) at every share.

    ``clean``: the result of ``evaluate(lm, users, methods)`` already computed, reused at share 0."""
    cutoffs = question_cutoffs(examples)
    block = {"mode": request.mode, "seed": request.seed, "shares": list(request.shares), "accuracy": {},
             "answered": {}, "events_changed": {}, "paired": {}, "seconds": {}, "free_text": "skipped"}
    names = [*methods, *([request.compare_name] if compare_lm is not None else [])]
    for name in names:
        block["accuracy"][name] = {}
    for share in request.shares:
        key, start = share_key(share), time.perf_counter()
        store, changed = noisy_store(users, cutoffs, share, request.seed, request.mode)
        block["events_changed"][key] = changed
        result = clean if share == 0 and clean is not None else evaluate(lm, store, methods)
        for method in methods:
            block["accuracy"][method][key] = _groups(result["accuracy"][method])
            block["answered"][method] = result["answered"][method]
        if "paired" in result:
            block["paired"][key] = result["paired"]
        if compare_lm is not None:
            other = evaluate(compare_lm, store, ["soft"])
            block["accuracy"][request.compare_name][key] = _groups(other["accuracy"]["soft"])
            block["answered"][request.compare_name] = other["answered"]["soft"]
        block["seconds"][key] = round(time.perf_counter() - start, 1)
        if progress:
            overall = ", ".join(f"{m} {block['accuracy'][m][key]['overall']:.3f}" for m in names)
            progress(f"noise {key}: {changed} events changed; {overall}")
    return block


def plot_noise(block: dict, out: Path, chance: float | None = None) -> Path:
    """Overall accuracy vs noise share, one line per method (dotted: random guess)."""
    from user_embed.eval.report import _plt

    plt = _plt()
    shares = block["shares"]
    order = sorted(range(len(shares)), key=lambda i: shares[i])
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for method, by_share in block["accuracy"].items():
        xs = [shares[i] for i in order]
        ax.plot(xs, [by_share[share_key(x)]["overall"] for x in xs], marker="o", label=method)
    if chance is not None:
        ax.axhline(chance, color="k", linestyle=":", linewidth=1)
    ax.set_xlabel(f"share of each user's pre-cutoff events that are noise ({block['mode']})")
    ax.set_ylabel("accuracy (overall)"), ax.set_ylim(0, 1)
    ax.set_title(f"UserQA accuracy under history noise ({block['mode']}, seed {block['seed']})")
    ax.legend(fontsize=8)
    fig.tight_layout(), fig.savefig(out, dpi=120), plt.close(fig)
    return out


def noise_report(block: dict) -> str:
    """The report's section: overall accuracy per method and share, then per family."""
    keys = [share_key(s) for s in block["shares"]]
    methods = list(block["accuracy"])
    lines = ["", "## Noise robustness", "",
             f"Each evaluated user's history before their question cutoff, with a share of its events "
             f"{'replaced by' if block['mode'] == 'replace' else 'joined by inserted'} events of items drawn by "
             f"popularity (values from the user's own; mode `{block['mode']}`, seed {block['seed']}); events at or "
             "after the cutoff untouched. Free-text (open) questions are not evaluated under `--noise`.", "",
             "| method | " + " | ".join(f"share {k}" for k in keys) + " | questions |",
             "|---|" + "---|" * (len(keys) + 1)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{block['accuracy'][m][k]['overall']:.3f}" for k in keys)
                     + f" | {block['answered'].get(m, '')} |")
    lines.append("| events changed | " + " | ".join(str(block["events_changed"][k]) for k in keys) + " | |")
    groups = sorted({g for m in methods for k in keys for g in block["accuracy"][m][k] if g != "overall"})
    if groups:
        lines += ["", "| method | share | " + " | ".join(groups) + " |", "|---|---|" + "---|" * len(groups)]
        for m in methods:
            for k in keys:
                cells = [f"{block['accuracy'][m][k].get(g, float('nan')):.3f}" for g in groups]
                lines.append(f"| {m} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
