"""selfplay.benign_weight scales the loss weight of benign rows, and only theirs."""

import numpy as np

from ssp_jax.data.loaders import PromptItem
from ssp_jax.models import load
from tests.test_selfplay_excluded import TableJudge, no_declines_or_noise
from tests.test_train import play_tiny_step, tiny_selfplay


def test_benign_rows_carry_benign_weight_times_defender_weight():
    G, A, R = 1, 2, 2
    sp = tiny_selfplay(goals_per_step=G, attacks_per_goal=A, responses_per_attack=R,
                       attacker_max_tokens=6, defender_max_tokens=6, max_prompt_tokens=96,
                       benign_per_step=2, defender_weight=0.5, benign_weight=3.0)
    checks = no_declines_or_noise()
    model, tok = load("tiny-random")
    benign = [PromptItem("how do I bake bread", "b", "b0"),
              PromptItem("what is a good name for a cat", "b", "b1")]
    ro = play_tiny_step(model, tok,
                 TableJudge(np.array([5.0, 1.0, 5.0, 1.0]), np.zeros(4, bool)), checks, sp,
                 [PromptItem("goal number 0 please", "t", "0")], [], benign)
    weights = ro.batches[1].role_weight
    np.testing.assert_array_equal(weights[:G * A * R], 0.5)
    np.testing.assert_array_equal(weights[G * A * R:G * A * R + 2 * R], 1.5)
