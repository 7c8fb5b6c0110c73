"""Evaluation outputs: results.json, items.jsonl, a Markdown table and PNG plots, written to
a local folder or a `gs://` one (`epath`)."""

from __future__ import annotations

import json
from typing import Sequence

import matplotlib
from matplotlib.figure import Figure

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ssp_jax.evaluate.paired import paired_against_first, paired_markdown  # noqa: E402
from ssp_jax.paths import PathLike, as_path  # noqa: E402

CURVE_KEYS = (("defender/reward_mean", "defender reward"),
              ("attacker/reward_mean", "attacker reward"),
              ("attack_success_rate", "attack success rate"), ("refusal_rate", "refusal rate"),
              ("benign/refusal_rate", "benign refusal"),
              ("attacker/invalid_rate", "invalid attacks"),
              ("defender/degenerate_rate", "degenerate answers"),
              ("train/zero_variance_share_defender", "zero-variance share (defender)"))
DIVERSITY_KEYS = (("diversity/pairwise_cosine_distance", "cosine distance (step)"),
                  ("diversity_window/pairwise_cosine_distance", "cosine distance (window)"),
                  ("diversity/distinct_2", "distinct-2 (step)"),
                  ("diversity_window/distinct_2", "distinct-2 (window)"),
                  ("diversity_window/self_bleu", "self-BLEU (window)"))


def headline_metrics(metrics: dict[str, float]) -> list[str]:
    """The metrics shown in tables and bar charts (rates and mean scores, not counts)."""
    return [k for k in metrics if k.rsplit("/", 1)[-1] in (
        "asr", "asr_strict", "asr_withholding", "asr_strict_attacked", "attacker_refusal_rate",
        "score_mean", "refusal_rate", "safe_refusal_rate", "unsafe_compliance_rate")]


def write_results(out: PathLike, results: dict[str, dict[str, float]],
                  items: dict[str, list[dict]], settings: dict, judge: dict[str, str]) -> None:
    """results.json (settings, the judge, metrics per model, each later model's answers
    paired against the first's), items.jsonl, results.md. judge: what made the scores, e.g.
    {"format": "llama_guard", "model": "PATH"}."""
    out = as_path(out)
    out.mkdir(parents=True, exist_ok=True)
    paired = paired_against_first(items)
    (out / "results.json").write_text(json.dumps(
        {"settings": settings, "judge": judge, "models": results, "paired": paired},
        indent=2) + "\n")
    with (out / "items.jsonl").open("w") as f:
        for model, rows in items.items():
            for row in rows:
                f.write(json.dumps({"model": model, **row}, ensure_ascii=False) + "\n")
    judged_by = ", ".join(f"{k} {v}" for k, v in judge.items())
    flips = paired_markdown(paired, next(iter(items), ""))
    (out / "results.md").write_text(
        f"Judge: {judged_by}\n\n{markdown_table(results)}"
        + (f"\nPaired on the same harmful items (judge: the judge above; strict: the strict "
           f"decline check; exact two-sided sign test on the flips):\n\n{flips}" if flips
           else ""))


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """One row per model or checkpoint, one column per headline metric; an attack-success
    rate shows how many rows the judge failed on (excluded) beside it."""
    columns: list[str] = []
    for metrics in results.values():
        columns += [k for k in headline_metrics(metrics) if k not in columns]
    lines = ["| model | " + " | ".join(columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    for name, metrics in results.items():
        cells = [_cell(metrics, c) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(metrics: dict[str, float], column: str) -> str:
    if column not in metrics:
        return "-"
    text = f"{metrics[column]:.3f}"
    excluded = metrics.get(column.rsplit("/", 1)[0] + "/judge_excluded")
    return f"{text} ({excluded:.0f} excluded)" if column.endswith("/asr") and excluded \
        is not None else text


def _save_png(fig: Figure, path: PathLike) -> None:
    with as_path(path).open("wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def plot_comparison(results: dict[str, dict[str, float]], path: PathLike) -> None:
    """Grouped bars: one group per headline metric, one bar per model."""
    columns: list[str] = []
    for metrics in results.values():
        columns += [k for k in headline_metrics(metrics) if k not in columns]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(columns) * max(1, len(results))), 4))
    width = 0.8 / max(len(results), 1)
    for i, (name, metrics) in enumerate(results.items()):
        xs = [j + i * width for j in range(len(columns))]
        ax.bar(xs, [metrics.get(c, 0.0) for c in columns], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(columns))])
    ax.set_xticklabels(columns, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("value (rates in [0, 1], scores in [1, 5])")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_png(fig, path)


def plot_training_curves(records: Sequence[dict], path: PathLike) -> None:
    """Rewards, attack success, refusal and collapse rates (left) and attack diversity (right)
    against the step of a metrics.jsonl; a metric the run did not log is left out."""
    if not records:
        raise ValueError("no training records to plot")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    steps = [r["step"] for r in records]
    for ax, keys, title in ((axes[0], CURVE_KEYS, "game"), (axes[1], DIVERSITY_KEYS,
                                                            "attack diversity")):
        for key, label in keys:
            if any(key in r for r in records):
                ax.plot(steps, [r.get(key, float("nan")) for r in records], label=label)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.set_ylim(-0.05, 1.05)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    _save_png(fig, path)


def frontier_points(results: dict[str, dict[str, float]]) -> dict[str, list[tuple]]:
    """Per attack-success kind (`asr`, `asr_strict`): (model, safe-prompt refusal, attack
    success) with both averaged over benchmarks of the direct mode; models lacking either
    are left out."""
    points: dict[str, list[tuple]] = {"asr": [], "asr_strict": []}
    for name, m in results.items():
        refusal = [v for k, v in m.items() if k.endswith("/safe_refusal_rate")]
        for kind in points:
            asr = [v for k, v in m.items() if k.endswith(f"/direct/{kind}")]
            if refusal and asr:
                points[kind].append((name, sum(refusal) / len(refusal), sum(asr) / len(asr)))
    return points


def plot_frontier(results: dict[str, dict[str, float]], path: PathLike) -> None:
    """Safety / over-refusal frontier: direct attack success (training judge and strict
    decline check) against the refusal rate on safe prompts, one point per model."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for kind, marker in (("asr", "o"), ("asr_strict", "s")):
        pts = frontier_points(results)[kind]
        if not pts:
            continue
        ax.plot([p[1] for p in pts], [p[2] for p in pts], marker=marker, linestyle="-",
                label="attack success, " + ("training judge" if kind == "asr" else
                                            "strict decline check"))
        for name, x, y in pts:
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("safe prompts refused (over-refusal)")
    ax.set_ylabel("attack success (direct)")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_png(fig, path)
