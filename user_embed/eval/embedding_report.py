"""The embedding benchmark's report (markdown tables) and bar plot, from its metrics dict."""

from __future__ import annotations

from pathlib import Path


def _interval(m: dict) -> str:
    return f"{m['score']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"


def probe_table(metrics: dict) -> list[str]:
    """Probe scores (AUC for binary targets, macro-F1 for multiclass), representations as columns."""
    names = ["majority", *metrics["representations"]]
    lines = ["| target (score) | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    for target, by_rep in metrics["probes"].items():
        kind = metrics["targets"][target]["kind"]
        label = f"{target} ({'AUC' if kind == 'binary' else 'macro-F1'}, {metrics['targets'][target]['users']} users)"
        lines.append(f"| {label} | " + " | ".join(_interval(by_rep[n]) if n in by_rep else "–" for n in names) + " |")
    return lines


def retrieval_table(metrics: dict) -> list[str]:
    lines = ["| representation | recall@1 | recall@5 | recall@10 | MRR [95 % interval] | protocol |",
             "|---|---:|---:|---:|---:|---|"]
    for name, m in metrics.get("retrieval", {}).items():
        lines.append(f"| `{name}` | {m['recall@1']:.3f} | {m['recall@5']:.3f} | {m['recall@10']:.3f} | "
                     f"{m['mrr']:.3f} [{m['mrr_low']:.3f}, {m['mrr_high']:.3f}] | {m['protocol']} |")
    return lines


def recommendation_table(metrics: dict) -> list[str]:
    lines = ["| representation | recall@10 | NDCG@10 |", "|---|---:|---:|"]
    for name, m in metrics.get("recommendation", {}).items():
        lines.append(f"| `{name}` | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} |")
    return lines


def instruction_table(metrics: dict) -> list[str]:
    lines = ["| target | instruction | question-conditioned | generic instruction |", "|---|---|---:|---:|"]
    for target, m in metrics.get("instruction_aware", {}).items():
        lines.append(f"| {target} | {m['instruction']} | {_interval(m['question'])} | {_interval(m['generic'])} |")
    return lines


def write_report(metrics: dict, folder: Path) -> Path:
    """``report.md`` in ``folder``: every table, the skipped targets and the seconds."""
    users = metrics["users"]
    lines = ["# Embedding benchmark", "",
             f"{users['held_out']} held-out users ({' + '.join(users['held_out_splits'])}) probed with "
             f"{metrics['folds']}-fold cross-validation (seed {metrics['seed']}); retrieval maps and the "
             f"recommendation scorer fitted on {users['train']} train users. Intervals: 95 % user bootstrap.", "",
             "## Representations", "", "| name | dim | what | seconds |", "|---|---:|---|---:|"]
    lines += [f"| `{n}` | {r['dim']} | {r['what']} | {r['seconds']} |" for n, r in metrics["representations"].items()]
    lines += ["", "## Linear probes", "", *probe_table(metrics)]
    if metrics.get("skipped_targets"):
        lines += ["", "Not probed: " + "; ".join(f"`{k}`: {v}" for k, v in metrics["skipped_targets"].items()) + "."]
    if metrics.get("retrieval"):
        lines += ["", "## User↔text retrieval", "", *retrieval_table(metrics)]
    lines += ["", "## Recommendation from the vector", "", *recommendation_table(metrics)]
    if metrics.get("instruction_aware"):
        lines += ["", "## Question-conditioned vs generic soft prompt (mean over its tokens)", "",
                  *instruction_table(metrics)]
    lines += ["", f"Seconds: {metrics['seconds']}", ""]
    path = folder / "report.md"
    path.write_text("\n".join(lines))
    return path


def plot(metrics: dict, path: Path) -> Path:
    """Bar plot: each probe's score per representation (with intervals), and retrieval MRR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = ["majority", *metrics["representations"]]
    panels = [(t, metrics["probes"][t]) for t in metrics["probes"]]
    if metrics.get("retrieval"):
        panels.append(("retrieval MRR", {n: {"score": m["mrr"], "low": m["mrr_low"], "high": m["mrr_high"]}
                                         for n, m in metrics["retrieval"].items() if n in names}))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, by_rep) in zip(axes[0], panels):
        shown = [n for n in names if n in by_rep]
        scores = np.array([by_rep[n]["score"] for n in shown])
        errors = np.array([[s - by_rep[n]["low"], by_rep[n]["high"] - s] for n, s in zip(shown, scores)]).T
        ax.bar(range(len(shown)), scores, yerr=errors, capsize=2,
               color=[colors[names.index(n) % len(colors)] for n in shown])
        ax.set_xticks(range(len(shown)), shown, rotation=70, fontsize=7)
        ax.set_title(title.replace("_", " "), fontsize=9)
        ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
