"""Train-then-evaluate experiment: the base model and every K-step checkpoint of one training
run, evaluated under one fixed judge on held-out harmful sets (direct and self-attack) and
XSTest-style safe prompts, with attack success also counted by the strict decline check.

  python -m ssp_jax.experiment --config configs/smollm2_135m.py:recipe --out runs/exp \\
      --every 15 --benchmark harmbench_test=data/harmbench/harmbench_behaviors_text_test.csv \\
      --benchmark xstest=data/xstest/xstest_prompts.csv --limit 64 \\
      --set train.num_steps=30 [--ablation replay_off|static|sft|sft_then_selfplay]

Without --benchmark: the config's held-out goals (data.holdout_fraction) and the built-in
XSTest-style safe prompts. --set SECTION.FIELD=VALUE changes the config (a Python literal, or a
string). The config file, --out, the data files, the model and the judge are checked before any
model loads; checkpoints are evaluated under their step numbers (`run/checkpoints/N` is
"step N").

`--ablation sft` replaces self-play by supervised refusal training at the same compute
(`ssp_jax.sft`: the base model's own declines to the training goals, by the decline tier's
check, and its on-topic answers to the benign prompts, `train.num_steps` updates of the
defender batch's rows, the config's optimizer); `--ablation sft_then_selfplay` sets the
config's supervised warm start, `sft.warm_start_steps`, to the first `--sft-warm-start` share
of the steps (default 0.2, at least one step): that SFT, then self-play for the rest from the
SFT weights with a fresh optimizer state. A config that sets `sft.warm_start_steps` itself
keeps it (giving `--sft-warm-start` too is an error), and then every arm but `sft` starts with
that warm start. The `sft` section sets the SFT data (`--set sft.prompts=128`, `sft.samples`,
`sft.on_topic_threshold`, `sft.refusal_system_prompt`, `sft.batch_size`, and
`sft.declines=written` for the declines in `sft.written_declines`); the checkpoints of
both parts are evaluated.

Outputs under --out: `run/` (the training workdir), `results.json`, `items.jsonl`,
`results.md` (a row per checkpoint), `frontier.png` (attack success vs safe-prompt refusal)
and `training_curves.png`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import logging
import pathlib
from typing import Any, Callable, Sequence

import numpy as np
from ml_collections.config_flags import config_flags as config_file

from ssp_jax import cli, preflight
from ssp_jax.checkpoint import load_checkpoint
from ssp_jax.config import TrainConfig, unknown_override, validate
from ssp_jax.data.builtin import builtin_items
from ssp_jax.data.loaders import PromptItem
from ssp_jax.data.mixture import from_config
from ssp_jax.evaluate.benchmarks import parse_benchmark
from ssp_jax.evaluate.report import (markdown_table, plot_frontier, plot_training_curves,
                                     write_results)
from ssp_jax.evaluate.runner import evaluate_with_progress, installed_checks
from ssp_jax.judge.base import Judge
from ssp_jax.judge.intent import IntentCheck
from ssp_jax.judge.registry import JudgeModel, policy_judge
from ssp_jax.metrics import read_metrics
from ssp_jax.models import load
from ssp_jax.sections import plain_data
from ssp_jax.sft import SftChecks, SftSettings, run_sft, warm_start_settings
from ssp_jax.train import train

log = logging.getLogger(__name__)

# ablation name -> config changes (dotted path -> value); same steps and batch shapes
ABLATIONS: dict[str, dict[str, Any]] = {
    "replay_off": {"replay.replay_per_step": 0},
    "static": {"selfplay.static_attacks": True},  # defender on the fixed goals, no attacker
}
# ablations that replace the training, or its first part, by supervised refusal training
SFT_ARMS = ("sft", "sft_then_selfplay")
WARM_START_SHARE = 0.2  # sft_then_selfplay: share of the steps for SFT, unless given
Benchmarks = dict[str, tuple[str, list[PromptItem]]]  # name -> (kind, items)


def with_overrides(config: Any, overrides: dict[str, Any]) -> dict:
    """Plain-data copy of `config` with `section.field` values replaced."""
    raw = plain_data(config)
    for path, value in overrides.items():
        section, field = path.split(".")
        raw.setdefault(section, {})[field] = value
    return raw


def default_benchmarks(cfg: TrainConfig, limit: int | None) -> Benchmarks:
    """The config's held-out goals (`data.holdout_fraction`) and the built-in XSTest-style
    safe prompts; ValueError when the config holds out no goals."""
    holdout = from_config(cfg.data).holdout
    if not holdout:
        raise ValueError("no held-out goals to evaluate on: set data.holdout_fraction > 0 or "
                         "give --benchmark NAME=PATH")
    return {"heldout": ("goals", holdout[:limit] if limit else holdout),
            "safe_lookalikes": ("xstest", builtin_items(subset="benign"))}


def evaluate_one(label: str, model, tokenizer, judge: Judge, benchmarks: Benchmarks,
                 cfg: TrainConfig, *, max_new_tokens: int, batch_size: int,
                 withholds: Callable[[Sequence[str]], np.ndarray] | None = None,
                 off_intent: IntentCheck | None = None
                 ) -> tuple[dict[str, float], list[dict]]:
    """Metrics (training judge, strict check, with `withholds` the strict check and the
    withholding classifier together, XSTest refusal) and item rows of one model."""
    return evaluate_with_progress(
        label, model.config, model.params(), tokenizer, judge, benchmarks, withholds=withholds,
        off_intent=off_intent,
        max_new_tokens=max_new_tokens, attack_max_tokens=cfg.selfplay.attacker_max_tokens,
        asr_threshold=cfg.selfplay.asr_threshold, batch_size=batch_size,
        max_cache_len=model.config.max_position_embeddings)


def warm_start_steps(num_steps: int, share: float) -> int:
    """SFT updates of `sft_then_selfplay`: `round(share * num_steps)`, at least 1 and leaving
    at least one self-play step; ValueError for a share outside (0, 1) or a 1-step run."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"--sft-warm-start={share} must be in (0, 1): the share of the steps "
                         "spent on SFT before self-play")
    if num_steps < 2:
        raise ValueError(f"sft_then_selfplay needs train.num_steps >= 2, got {num_steps}")
    return min(max(round(share * num_steps), 1), num_steps - 1)


def sft_overrides(ablation: str, cfg: TrainConfig, share: float | None) -> dict[str, int]:
    """The arm's `sft.warm_start_steps`: 0 for `sft` (SFT alone, by `run_sft`); for
    `sft_then_selfplay` `warm_start_steps` of `share` (default WARM_START_SHARE), unless the
    config sets a warm start itself, which it keeps; the config's ({}) for the other arms.
    ValueError for a `share` the arm does not use."""
    if share is not None and ablation != "sft_then_selfplay":
        raise ValueError("--sft-warm-start applies to --ablation sft_then_selfplay only")
    if ablation == "sft":
        return {"sft.warm_start_steps": 0}
    if ablation != "sft_then_selfplay":
        return {}
    if cfg.sft.warm_start_steps:
        if share is not None:
            raise ValueError(f"--sft-warm-start={share} and the config's sft.warm_start_steps="
                             f"{cfg.sft.warm_start_steps} both set the warm start; give one")
        log.info("sft_then_selfplay: the config's warm start, sft.warm_start_steps=%d",
                 cfg.sft.warm_start_steps)
        return {}
    share = WARM_START_SHARE if share is None else share
    return {"sft.warm_start_steps": warm_start_steps(cfg.train.num_steps, share)}


def sft_settings(ablation: str, cfg: TrainConfig) -> SftSettings | None:
    """The SFT an arm of the (overridden) config `cfg` runs: every step for `sft`, the
    warm start, then a fresh optimizer state, when `sft.warm_start_steps` > 0, else None."""
    if ablation == "sft":
        return SftSettings(cfg.sft, steps=cfg.train.num_steps, reset_optimizer=False)
    if cfg.sft.warm_start_steps:
        return warm_start_settings(cfg)
    return None


def checkpoint_dirs(run: pathlib.Path) -> list[pathlib.Path]:
    """The run's checkpoint step folders, oldest first."""
    root = run / "checkpoints"
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name)) if root.is_dir() else []


def run_experiment(config: Any, out: pathlib.Path, *, every: int,
                   benchmarks: Benchmarks | None = None, ablation: str = "",
                   limit: int | None = None, max_new_tokens: int = 64, batch_size: int = 16,
                   sft_warm_start: float | None = None,
                   sft_checks: SftChecks | None = None) -> dict:
    """Evaluates the base model, trains (checkpoints every `every` steps), evaluates each
    checkpoint; writes the report. Returns {label: metrics}. The training is `run_sft` for the
    `sft` arm, else `train` (with the warm start of `sft_overrides`); `sft_checks`
    replace the SFT data checks (tests)."""
    if ablation and ablation not in (*ABLATIONS, *SFT_ARMS):
        raise ValueError(f"unknown ablation {ablation!r}; valid: "
                         f"{', '.join((*ABLATIONS, *SFT_ARMS))}")
    if every < 1:
        raise ValueError(f"--every={every} must be ≥ 1 (checkpoint and evaluation period)")
    raw = with_overrides(config, {
        **ABLATIONS.get(ablation, {}), **sft_overrides(ablation, validate(config),
                                                       sft_warm_start),
        "ckpt.every_steps": every, "ckpt.keep": 10**6, "eval.every_steps": 0})
    cfg = validate(raw)
    sft = sft_settings(ablation, cfg)
    benchmarks = benchmarks or default_benchmarks(cfg, limit)
    base, tokenizer = load(cfg.model.spec, dtype=cfg.model.dtype, seed=cfg.model.seed)
    # one fixed judge for every model: the training judge (a policy-as-judge is the base model)
    judge = policy_judge(cfg.judge, JudgeModel(base.config, base.params(), tokenizer),
                         dtype=cfg.model.dtype)
    withholds, off_intent = installed_checks(cfg.selfplay.min_intent_similarity)
    kw = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, withholds=withholds,
              off_intent=off_intent)
    results, items = {}, {}
    results["base"], items["base"] = evaluate_one("base", base, tokenizer, judge, benchmarks, cfg,
                                                  **kw)
    log.info("base model: %s", results["base"])
    run = out / "run"
    if ablation == "sft":
        run_sft(raw, run, sft, sft_checks)
    else:
        train(raw, run, sft_checks=sft_checks)
    for ckpt in checkpoint_dirs(run):
        model, tok, step = load_checkpoint(ckpt)
        label = f"step {step}"
        results[label], items[label] = evaluate_one(label, model, tok, judge, benchmarks, cfg,
                                                    **kw)
        log.info("%s: %s", label, results[label])
    settings = {"every": every, "ablation": ablation or "none", "limit": limit,
                "max_new_tokens": max_new_tokens, "decoding": "greedy",
                "sft": dataclasses.asdict(sft) if sft else None,
                "benchmarks": {k: f"{v[0]} ({len(v[1])} items)" for k, v in benchmarks.items()},
                "config": plain_data(raw)}
    write_results(out, results, items, settings,
                  {"format": cfg.judge.name, "model": cfg.judge.model or cfg.judge.url or
                   ("base model" if cfg.judge.model_based else "-"),
                   "second": "strict decline check (asr_strict)"})
    judge.close()
    plot_frontier(results, out / "frontier.png")
    plot_training_curves(read_metrics(run / "metrics.jsonl"), out / "training_curves.png")
    return results


def parse_set(config, spec: str) -> tuple[str, object]:
    """SECTION.FIELD=VALUE -> (path, value); an unknown field is a ValueError naming it."""
    if "=" not in spec:
        raise ValueError(f"--set {spec!r}: expected SECTION.FIELD=VALUE")
    path, text = spec.split("=", 1)
    if message := unknown_override(config, path):
        raise ValueError(message)
    try:
        return path, ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return path, text


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m ssp_jax.experiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True,
                   help="configs/*.py, or configs/FILE.py:ARG for get_config(ARG)")
    p.add_argument("--out", required=True, type=pathlib.Path)
    p.add_argument("--every", type=int, default=10, help="checkpoint / evaluation period")
    p.add_argument("--benchmark", action="append", default=[], help="NAME=PATH (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="first N items per benchmark")
    p.add_argument("--ablation", choices=[*sorted(ABLATIONS), *SFT_ARMS], default="")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16,
                   help="prompts per generation call of the evaluation")
    p.add_argument("--set", action="append", default=[], dest="overrides",
                   help="SECTION.FIELD=VALUE, e.g. sft.prompts=128 (the SFT data of the SFT "
                   "arms: the config's sft section)")
    p.add_argument("--sft-warm-start", type=float, default=None,
                   help="sft_then_selfplay: share of the steps spent on SFT first (default "
                   f"{WARM_START_SHARE}; a config's own sft.warm_start_steps is kept)")
    args = p.parse_args(argv)
    preflight.check_config_file(args.config)
    try:
        config = config_file.ConfigFileFlagParser(name="config").parse(args.config)
    except (TypeError, ValueError) as e:  # get_config raised: ml_collections adds its traceback
        raise cli.UserError(f"--config: {preflight.last_line(str(e))}") from None
    config = with_overrides(config, dict(parse_set(config, s) for s in args.overrides))
    preflight.check_workdir(args.out, "--out")
    preflight.check_training(validate(config), args.out / "run")
    benchmarks = {}
    for spec in args.benchmark:
        name, kind, items = parse_benchmark(spec, args.limit)
        benchmarks[name] = (kind, items)
    results = run_experiment(config, args.out, every=args.every, benchmarks=benchmarks or None,
                             ablation=args.ablation, limit=args.limit,
                             max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                             sft_warm_start=args.sft_warm_start)
    print(markdown_table(results))
    print(f"report: {args.out / 'results.md'}, {args.out / 'frontier.png'}, "
          f"{args.out / 'training_curves.png'}")
    return 0


if __name__ == "__main__":
    cli.run(main)
