"""Before any update the sampler's and the trainer's log-probs agree, whatever the sampling."""

import pytest

from ssp_jax import train as train_lib
from tests.test_train import tiny_config


@pytest.mark.parametrize("sampling", [
    {"selfplay__temperature": 0.0},
    {"selfplay__temperature": 0.7},
    {"selfplay__temperature": 1.0, "selfplay__top_p": 0.8},
    {"selfplay__temperature": 1.3, "selfplay__top_k": 5},
    {"selfplay__temperature": 0.9, "selfplay__top_k": 8, "selfplay__top_p": 0.6},
    {"selfplay__temperature": 0.7, "selfplay__greedy_responses": 1},
], ids=["greedy", "temperature", "top_p", "top_k", "top_k_and_top_p", "greedy_responses"])
def test_first_update_sees_importance_ratio_one(tmp_path, sampling):
    cfg = tiny_config(train__num_steps=1, ckpt__every_steps=0, **sampling)
    metrics = train_lib.Trainer(cfg, tmp_path).step(0)
    assert metrics["train/token_count"] > 0
    # every token's ratio is exp(logp - old_logp); the mean |logp - old_logp| bounds them all
    assert metrics["train/logp_diff"] < 1e-5, metrics["train/logp_diff"]
    assert metrics["train/ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["train/clip_fraction"] == 0.0
