"""The SFT arms of `python -m ssp_jax.experiment`: step split, the warm start and SFT settings
each arm takes from the config, and tiny runs whose checkpoints the evaluation reads (the SFT
data checks faked: a random model never declines)."""

import json
import pathlib

import pytest
from ml_collections.config_flags import config_flags

from ssp_jax import experiment
from ssp_jax.config import ConfigError, validate
from ssp_jax.data.builtin import builtin_items
from ssp_jax.experiment import run_experiment, sft_overrides, sft_settings, warm_start_steps
from ssp_jax.sft import SftChecks

ROOT = pathlib.Path(__file__).resolve().parents[1]
# two goals, evaluated directly and under self-attack (the arms' wiring, not their numbers)
BENCHMARKS = {"heldout": ("goals", builtin_items(subset="goals")[:2])}
ACCEPT_ALL = SftChecks(declines=lambda t: True, refuses=lambda t: False,
                       unreadable=lambda t: False, on_topic=None)


def _tiny_config(num_steps: int):
    """configs/tiny.py with SFT data of 4 goals and 4 benign prompts, 2 samples each."""
    config = config_flags.ConfigFileFlagParser(name="config").parse(str(ROOT / "configs/tiny.py"))
    config.train.num_steps = num_steps
    config.sft.update(prompts=4, samples=2, refusal_system_prompt="Refuse.",
                      on_topic_threshold=0.0, batch_size=4)
    return config


def test_warm_start_takes_a_share_of_the_steps_and_leaves_self_play_some():
    assert warm_start_steps(30, 0.2) == 6
    assert warm_start_steps(2, 0.2) == 1  # at least one SFT step
    assert warm_start_steps(3, 0.9) == 2  # at least one self-play step
    with pytest.raises(ValueError, match="--sft-warm-start=1.0 must be in"):
        warm_start_steps(30, 1.0)
    with pytest.raises(ValueError, match="num_steps >= 2"):
        warm_start_steps(1, 0.5)


def test_each_arm_sets_its_warm_start_in_the_config():
    cfg = validate(_tiny_config(30))
    assert sft_overrides("sft_then_selfplay", cfg, None) == {"sft.warm_start_steps": 6}
    assert sft_overrides("sft_then_selfplay", cfg, 0.5) == {"sft.warm_start_steps": 15}
    assert sft_overrides("sft", cfg, None) == {"sft.warm_start_steps": 0}  # SFT alone
    assert sft_overrides("static", cfg, None) == sft_overrides("", cfg, None) == {}
    with pytest.raises(ValueError, match="--sft-warm-start applies to --ablation "
                                         "sft_then_selfplay only"):
        sft_overrides("static", cfg, 0.5)


def test_a_config_with_its_own_warm_start_keeps_it():
    config = _tiny_config(30)
    config.sft.warm_start_steps = 3
    cfg = validate(config)
    assert sft_overrides("sft_then_selfplay", cfg, None) == {}
    with pytest.raises(ValueError, match=r"--sft-warm-start=0.5 and the config's "
                                         r"sft.warm_start_steps=3 both set the warm start"):
        sft_overrides("sft_then_selfplay", cfg, 0.5)


def test_sft_settings_per_arm_come_from_the_config():
    config = _tiny_config(30)
    assert sft_settings("", validate(config)) is None
    cfg = validate(config)
    full = sft_settings("sft", cfg)
    assert (full.steps, full.reset_optimizer, full.data) == (30, False, cfg.sft)
    config.sft.warm_start_steps = 6
    cfg = validate(config)
    warm = sft_settings("", cfg)
    assert (warm.steps, warm.reset_optimizer, warm.data) == (6, True, cfg.sft)
    assert not warm.save_reference  # rl.reference="base"
    config.rl.update(beta=0.04, reference="warm_start")
    assert sft_settings("", validate(config)).save_reference
    assert not sft_settings("sft", validate(config)).save_reference


def test_a_bad_sft_field_is_a_clear_error_before_any_model_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "load", lambda *a, **k: pytest.fail("a model loaded"))
    with pytest.raises(ConfigError, match=r"^config field sft.prompts=0 must be > 0$"):
        experiment.main(["--config", str(ROOT / "configs/tiny.py"), "--out", str(tmp_path),
                         "--ablation", "sft", "--set", "sft.prompts=0"])


def test_sft_arm_checkpoints_are_evaluated(tmp_path):
    results = run_experiment(_tiny_config(2), tmp_path, every=1, ablation="sft",
                             benchmarks=BENCHMARKS, max_new_tokens=4, batch_size=4,
                             sft_checks=ACCEPT_ALL)
    assert list(results) == ["base", "step 1", "step 2"]
    assert 0.0 <= results["step 2"]["heldout/direct/asr_strict"] <= 1.0
    saved = json.loads((tmp_path / "results.json").read_text())["settings"]
    assert saved["ablation"] == "sft"
    sft = saved["sft"]
    assert (sft["steps"], sft["data"]["prompts"], sft["reset_optimizer"]) == (2, 4, False)


@pytest.mark.slow
def test_sft_then_selfplay_resumes_self_play_from_the_sft_checkpoint(tmp_path):
    results = run_experiment(_tiny_config(2), tmp_path, every=1, ablation="sft_then_selfplay",
                             benchmarks=BENCHMARKS, max_new_tokens=4, batch_size=4,
                             sft_warm_start=0.5, sft_checks=ACCEPT_ALL)
    assert list(results) == ["base", "step 1", "step 2"]
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == [1, 2]
    assert "sft/loss" in records[0] and "defender/reward_mean" in records[1]
    saved = json.loads((tmp_path / "results.json").read_text())["settings"]
    assert (saved["sft"]["steps"], saved["sft"]["reset_optimizer"]) == (1, True)
    assert saved["config"]["sft"]["warm_start_steps"] == 1
