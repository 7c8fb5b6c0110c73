"""Dynamic sampling: more goals are rolled out than a batch holds; the batch keeps the goals
whose groups carry signal, the metrics count every row sampled."""

import numpy as np
import pytest

from ssp_jax.config import ConfigError, validate
from ssp_jax.data.loaders import PromptItem
from ssp_jax.models import load
from tests.test_rl_assemble import reference_advantages
from tests.test_selfplay_excluded import TableJudge, no_declines_or_noise
from tests.test_train import play_tiny_step, tiny_layout, tiny_selfplay
from configs import tiny


def test_the_batch_holds_the_informative_goals_and_metrics_count_all_rows():
    G, A, R = 2, 2, 2
    sp = tiny_selfplay(goals_per_step=G, attacks_per_goal=A, responses_per_attack=R,
                       attacker_max_tokens=6, defender_max_tokens=6, max_prompt_tokens=96,
                       min_attack_chars=4, oversample_goals=1)
    checks = no_declines_or_noise()
    # goal 0: every response complied (no signal); goals 1 and 2: mixed in every group
    scores = np.array([5.0] * 4 + [5.0, 1.0] * 4, np.float32)
    model, tok = load("tiny-random")
    goals = [PromptItem(f"goal number {i} please", "t", str(i)) for i in range(G + 1)]
    ro = play_tiny_step(model, tok, TableJudge(scores, np.zeros(12, bool)),
                 checks, sp, goals, [], [])

    assert ro.metrics["judge/rows"] == 12.0 and len(ro.responses) == 12
    assert ro.metrics["train/zero_variance_share_defender"] == pytest.approx(4 / 12)
    assert ro.metrics["train/zero_variance_share_defender_batch"] == 0.0
    defender = ro.batches[1]
    r_def = 0.3 * (1 - (scores[4:] - 1) / 4)  # goals 1 and 2: content tier
    expected = reference_advantages(r_def, np.arange(8) // R, np.ones(8, bool), True)
    np.testing.assert_allclose(defender.advantages[:8], expected, atol=1e-5)
    assert defender.advantages.shape[0] == tiny_layout(sp).num_groups[1] * R


def test_negative_oversampling_is_a_config_error():
    cfg = tiny.get_config()
    cfg.selfplay.oversample_goals = -1
    with pytest.raises(ConfigError, match="oversample_goals"):
        validate(cfg)
