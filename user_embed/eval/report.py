"""report.md and PNG plots for a UserQA evaluation (training losses, accuracy by family, user embedding map)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

FAMILY_ORDER = ("sequence_understanding", "action_prediction", "interest_perception")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(metrics_csv: Path, out: Path) -> Path | None:
    """Training losses per step from Lightning's CSVLogger metrics.csv."""
    if not metrics_csv.is_file():
        return None
    frame = pl.read_csv(metrics_csv, infer_schema_length=10000)
    columns = [c for c in ("train/qa_loss", "train/contrastive_loss", "val/qa_loss") if c in frame.columns]
    if not columns or "step" not in frame.columns:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for column in columns:
        part = frame.select("step", column).drop_nulls()
        ax.plot(part["step"], part[column], marker="o" if column.startswith("val") else None, label=column)
    ax.set_xlabel("step"), ax.set_ylabel("loss"), ax.set_title("Training losses"), ax.legend()
    fig.tight_layout(), fig.savefig(out, dpi=120), plt.close(fig)
    return out


def plot_accuracy(accuracy: dict[str, dict[str, float]], out: Path, chance: dict[str, float] | None = None) -> Path:
    plt = _plt()
    groups = [g for g in (*FAMILY_ORDER, "overall") if any(g in a for a in accuracy.values())]
    methods = list(accuracy)
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for i, method in enumerate(methods):
        values = [accuracy[method].get(g, np.nan) for g in groups]
        ax.bar(np.arange(len(groups)) + i * width, values, width, label=method)
    if chance:
        for j, g in enumerate(groups):
            if g in chance:
                ax.hlines(chance[g], j - width / 2, j + width * (len(methods) - 0.5), colors="k", linestyles=":")
    ax.set_xticks(np.arange(len(groups)) + width * (len(methods) - 1) / 2)
    ax.set_xticklabels([g.replace("_", "\n") for g in groups])
    ax.set_ylim(0, 1), ax.set_ylabel("accuracy"), ax.set_title("UserQA accuracy (dotted: random guess)")
    ax.legend()
    fig.tight_layout(), fig.savefig(out, dpi=120), plt.close(fig)
    return out


def plot_embeddings(vectors: np.ndarray, labels: list[str], field: str, out: Path) -> Path | None:
    """2-D PCA of user vectors coloured by a profile field."""
    if len(vectors) < 3:
        return None
    from sklearn.decomposition import PCA

    points = PCA(n_components=2, random_state=0).fit_transform(vectors)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.2))
    for value in sorted(set(labels)):
        idx = [i for i, v in enumerate(labels) if v == value]
        ax.scatter(points[idx, 0], points[idx, 1], s=12, label=value, alpha=0.8)
    ax.set_title(f"Test users' embeddings (PCA), coloured by {field}")
    if len(set(labels)) <= 12:
        ax.legend(fontsize=7, markerscale=1.5)
    fig.tight_layout(), fig.savefig(out, dpi=120), plt.close(fig)
    return out


def markdown_report(metrics: dict, plots: dict[str, str]) -> str:
    acc, tokens = metrics["accuracy"], metrics["prompt_tokens"]
    methods = list(acc)
    groups = [g for g in (*FAMILY_ORDER, "overall") if any(g in a for a in acc.values())]
    answered = metrics.get("answered", {})
    lines = ["# UserQA evaluation", "",
             f"{metrics['questions']} questions (split `{metrics.get('split', '?')}`); "
             f"LLM `{metrics.get('llm', '?')}`; "
             f"embedder `{metrics.get('checkpoint', '?')}`.",
             "Each method picks the option with the highest likelihood under the same frozen LLM.", "",
             "| method | " + " | ".join(groups) + " | questions | prompt tokens | seconds |",
             "|---|" + "---|" * (len(groups) + 3)]
    for m in methods:
        cells = [f"{acc[m].get(g, float('nan')):.3f}" for g in groups]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {answered.get(m, metrics['questions'])} | {tokens[m]:.0f} "
                     f"| {metrics['seconds'][m]:.0f} |")
    if "chance" in metrics:
        lines.append("| random guess | " + " | ".join(f"{metrics['chance'].get(g, float('nan')):.3f}" for g in groups)
                     + " | | | |")
    tasks = sorted({k for a in acc.values() for k in a if k.startswith("task/")})
    if tasks:
        lines += ["", "Per task:", "", "| task | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for t in tasks:
            lines.append(f"| {t[5:]} | " + " | ".join(f"{acc[m].get(t, float('nan')):.3f}" for m in methods) + " |")
    free = metrics.get("free_text")
    if free:
        lines += ["", "## Free-text answers (open questions)", "",
                  f"{free['questions']} open questions, answered by greedy generation; the answer's label is the "
                  "candidate the text names first (majority: the task's most frequent training answer).", "",
                  "| method | " + " | ".join(groups) + " | questions | names a label |",
                  "|---|" + "---|" * (len(groups) + 2)]
        for m, a in free["accuracy"].items():
            parsed = f"{free['parsed'][m]:.2f}" if m in free["parsed"] else ""
            lines.append(f"| {m} | " + " | ".join(f"{a.get(g, float('nan')):.3f}" for g in groups)
                         + f" | {free['answered'].get(m, free['questions'])} | {parsed} |")
        open_tasks = sorted({k for a in free["accuracy"].values() for k in a if k.startswith("task/")})
        lines += ["", "| task | " + " | ".join(free["accuracy"]) + " |", "|---|" + "---|" * len(free["accuracy"])]
        lines += [f"| {t[5:]} | " + " | ".join(f"{a.get(t, float('nan')):.3f}" for a in free["accuracy"].values())
                  + " |" for t in open_tasks]
    findings = metrics.get("findings", [])
    if findings:
        lines += ["", "## Findings", ""] + [f"- {f}" for f in findings]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{name}]({path})" for name, path in plots.items()]
    return "\n".join(lines) + "\n"


def findings(metrics: dict) -> list[str]:
    """Plain statements comparing soft prompts with the baselines, including where a baseline wins."""
    acc, out = metrics["accuracy"], []
    if "soft" not in acc:
        return out
    for base in ("none", "text", "bm25"):
        if base not in acc:
            continue
        for g in (*FAMILY_ORDER, "overall"):
            if g in acc["soft"] and g in acc[base]:
                s, b = acc["soft"][g], acc[base][g]
                verb = "beats" if s > b else ("ties" if s == b else "LOSES to")
                line = f"soft {verb} {base} on {g}: {s:.3f} vs {b:.3f}"
                paired = metrics.get("paired", {}).get(f"soft-{base}", {}).get(g)
                if paired:
                    clear = paired["low"] > 0 or paired["high"] < 0
                    line += (f" (difference {paired['diff']:+.3f}, 95% interval {paired['low']:+.3f} to "
                             f"{paired['high']:+.3f} over {paired['users']} users: "
                             f"{'clear' if clear else 'within noise'})")
                out.append(line)
    tokens = metrics["prompt_tokens"]
    if "text" in tokens and tokens.get("soft"):
        out.append(f"text prompts use {tokens['text'] / tokens['soft']:.1f}x the prompt tokens of soft prompts "
                   f"({tokens['text']:.0f} vs {tokens['soft']:.0f})")
    return out
