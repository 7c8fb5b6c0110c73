"""The SFT arms of `python -m ssp_jax.experiment`: step split, CLI settings, and tiny runs whose
checkpoints the evaluation reads (the SFT data checks faked: a random model never declines)."""

import argparse
import json
import pathlib

import pytest
from ml_collections.config_flags import config_flags

from ssp_jax.data.builtin import builtin_items
from ssp_jax.experiment import arm_training, run_experiment, sft_settings, warm_start_steps
from ssp_jax.sft import SftChecks, SftSettings

ROOT = pathlib.Path(__file__).resolve().parents[1]
# two goals, evaluated directly and under self-attack (the arms' wiring, not their numbers)
BENCHMARKS = {"heldout": ("goals", builtin_items(subset="goals")[:2])}
ACCEPT_ALL = SftChecks(declines=lambda t: True, refuses=lambda t: False,
                       unreadable=lambda t: False, on_topic=None)


def _tiny_config(num_steps: int):
    config = config_flags.ConfigFileFlagParser(name="config").parse(str(ROOT / "configs/tiny.py"))
    config.train.num_steps = num_steps
    return config


def _settings(steps: int, reset_optimizer: bool) -> SftSettings:
    return SftSettings(steps=steps, prompts=4, samples=2, refusal_system_prompt="Refuse.",
                       on_topic_threshold=0.0, batch_size=4, reset_optimizer=reset_optimizer)


def test_warm_start_takes_a_share_of_the_steps_and_leaves_self_play_some():
    assert warm_start_steps(30, 0.2) == 6
    assert warm_start_steps(2, 0.2) == 1  # at least one SFT step
    assert warm_start_steps(3, 0.9) == 2  # at least one self-play step
    with pytest.raises(ValueError, match="--sft-warm-start=1.0 must be in"):
        warm_start_steps(30, 1.0)
    with pytest.raises(ValueError, match="num_steps >= 2"):
        warm_start_steps(1, 0.5)


def test_cli_settings_per_arm():
    args = argparse.Namespace(ablation="sft_then_selfplay", sft_warm_start=0.2, sft_prompts=64,
                              sft_samples=3, sft_system_prompt="Refuse.",
                              sft_on_topic_threshold=0.4, batch_size=8)
    warm = sft_settings(args, 30)
    assert (warm.steps, warm.reset_optimizer, warm.prompts, warm.batch_size) == (6, True, 64, 8)
    full = sft_settings(argparse.Namespace(**{**vars(args), "ablation": "sft"}), 30)
    assert (full.steps, full.reset_optimizer) == (30, False)
    assert sft_settings(argparse.Namespace(**{**vars(args), "ablation": "static"}), 30) is None


def test_sft_arm_checkpoints_are_evaluated(tmp_path):
    settings = _settings(2, reset_optimizer=False)
    results = run_experiment(_tiny_config(2), tmp_path, every=1, ablation="sft",
                             benchmarks=BENCHMARKS,
                             max_new_tokens=4, batch_size=4, sft=settings,
                             train_fn=arm_training("sft", settings, ACCEPT_ALL))
    assert list(results) == ["base", "step 1", "step 2"]
    assert 0.0 <= results["step 2"]["heldout/direct/asr_strict"] <= 1.0
    saved = json.loads((tmp_path / "results.json").read_text())["settings"]
    assert saved["ablation"] == "sft" and saved["sft"]["steps"] == 2


@pytest.mark.slow
def test_sft_then_selfplay_resumes_self_play_from_the_sft_checkpoint(tmp_path):
    settings = _settings(1, reset_optimizer=True)
    results = run_experiment(_tiny_config(2), tmp_path, every=1, ablation="sft_then_selfplay",
                             benchmarks=BENCHMARKS, max_new_tokens=4, batch_size=4, sft=settings,
                             train_fn=arm_training("sft_then_selfplay", settings, ACCEPT_ALL))
    assert list(results) == ["base", "step 1", "step 2"]
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == [1, 2]
    assert "sft/loss" in records[0] and "defender/reward_mean" in records[1]
