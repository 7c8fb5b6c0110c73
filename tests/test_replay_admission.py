"""What may enter the replay pool: only valid, on-intent attacks whose answer the judge scored;
never an invalid attack (malformed, declined by the attacker, off-intent), never a direct slot
(the goal verbatim), never a benign prompt."""

import numpy as np

from ssp_jax import train as train_lib
from ssp_jax.data.loaders import PromptItem
from ssp_jax.models import load
from ssp_jax.selfplay import default_checks
from tests.test_selfplay_excluded import TableJudge
from tests.test_train import play_tiny_step, tiny_config, tiny_selfplay


def test_invalid_attacks_never_enter_the_pool_and_valid_ones_do(tmp_path):
    # the tiny judge scores nearly every random answer a failure (5): each valid attack of a
    # step is a candidate. Step 1's attacks all "decline their brief": none may enter.
    trainer = train_lib.Trainer(tiny_config(train__num_steps=2, ckpt__every_steps=0), tmp_path)
    checks = trainer.checks
    trainer.checks = checks._replace(attack_refusal=lambda text: True)
    trainer.step(0)
    assert len(trainer.pool) == 0
    trainer.checks = checks  # the same game with valid attacks fills the pool
    trainer.step(1)
    assert len(trainer.pool) > 0


def test_replayable_rows_are_judged_valid_non_direct_attacks():
    # A = 3 with one direct slot, R = 2; the judge failed on row 2 (slot 1, first answer)
    G, A, R = 1, 3, 2
    sp = tiny_selfplay(goals_per_step=G, attacks_per_goal=A, responses_per_attack=R,
                       attacker_max_tokens=6, defender_max_tokens=6, benign_per_step=1,
                       direct_attacks_per_goal=1)
    failed = np.array([0, 0, 1, 0, 0, 0], bool)
    model, tok = load("tiny-random")
    checks = default_checks()._replace(attack_refusal=lambda text: False)
    ro = play_tiny_step(model, tok, TableJudge(np.full(6, 5.0), failed), checks, sp,
                        [PromptItem("goal number 0 please", "t", "0")], [],
                        [PromptItem("how do I bake bread", "b", "b0")])
    invalid = np.repeat(ro.episode.invalid, R)
    expected = np.array([False, False, True, True, True, True]) & ~failed & ~invalid
    np.testing.assert_array_equal(ro.episode.replayable, expected)
    assert len(ro.episode.replayable) == G * A * R  # benign rows are never candidates
