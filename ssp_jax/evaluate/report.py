"""Evaluation outputs: results.json, items.jsonl, a Markdown table and PNG plots, written to
a local folder or a `gs://` one (`epath`)."""

from __future__ import annotations

import json
from typing import Sequence

import matplotlib
from matplotlib.figure import Figure

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ssp_jax.paths import PathLike, as_path  # noqa: E402

CURVE_KEYS = (("defender/reward_mean", "defender reward"),
              ("attacker/reward_mean", "attacker reward"),
              ("attack_success_rate", "attack success rate"), ("refusal_rate", "refusal rate"))


def headline_metrics(metrics: dict[str, float]) -> list[str]:
    """The metrics shown in tables and bar charts (rates and mean scores, not counts)."""
    return [k for k in metrics if k.rsplit("/", 1)[-1] in (
        "asr", "score_mean", "refusal_rate", "safe_refusal_rate", "unsafe_compliance_rate")]


def write_results(out: PathLike, results: dict[str, dict[str, float]],
                  items: dict[str, list[dict]], settings: dict, judge: dict[str, str]) -> None:
    """results.json (settings, the judge, metrics per model), items.jsonl, results.md.
    judge: what made the scores, e.g. {"format": "llama_guard", "model": "PATH"}."""
    out = as_path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(
        {"settings": settings, "judge": judge, "models": results}, indent=2) + "\n")
    with (out / "items.jsonl").open("w") as f:
        for model, rows in items.items():
            for row in rows:
                f.write(json.dumps({"model": model, **row}, ensure_ascii=False) + "\n")
    judged_by = ", ".join(f"{k} {v}" for k, v in judge.items())
    (out / "results.md").write_text(f"Judge: {judged_by}\n\n{markdown_table(results)}")


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
    """Rewards, attack success rate and refusal rate against the step of a metrics.jsonl."""
    if not records:
        raise ValueError("no training records to plot")
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in records]
    for key, label in CURVE_KEYS:
        ax.plot(steps, [r.get(key) for r in records], label=label)
    ax.set_xlabel("step")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_png(fig, path)
