"""Rows the judge failed on: no advantage, no loss weight, absent from reward means and attack
success (against a NumPy reference); too many of them stop the run with the judge's error."""

import numpy as np
import pytest

from ssp_jax import train as train_lib
from ssp_jax.data.loaders import PromptItem
from ssp_jax.judge.base import Judge, JudgeFailed, JudgeResult
from ssp_jax.models import load
from ssp_jax.rl.rewards import attack_is_invalid
from ssp_jax.selfplay import default_checks
from tests.test_rl_assemble import reference_advantages
from tests.test_train import play_tiny_step, tiny_config, tiny_selfplay


class TableJudge(Judge):
    """Fixed scores; rows in `failed` are excluded."""

    describe = "table"

    def __init__(self, scores, failed):
        self.scores, self.failed = np.asarray(scores, np.float32), np.asarray(failed, bool)

    def score(self, goals, attack_prompts, responses):
        n = len(responses)
        reasons = ["timeout" if f else "ok" for f in self.failed[:n]]
        return JudgeResult(self.scores[:n], reasons, self.failed[:n])


def no_declines_or_noise():
    """The default checks, with no answer a decline or degenerate (random-model text)."""
    return default_checks()._replace(declines=lambda texts: np.zeros(len(texts), bool),
                                     degenerate=lambda text: False)


def test_excluded_rows_get_no_advantage_no_weight_and_stay_out_of_metrics():
    G, A, R = 2, 2, 2
    sp = tiny_selfplay(goals_per_step=G, attacks_per_goal=A, responses_per_attack=R,
                       attacker_max_tokens=6, defender_max_tokens=6, max_prompt_tokens=96,
                       min_attack_chars=4)
    checks = no_declines_or_noise()
    scores = np.array([5.0, 1.0, 4.0, 2.0, 5.0, 3.0, 1.0, 4.5])
    failed = np.array([1, 1, 0, 0, 0, 1, 0, 0], bool)  # attack 0 entirely, row 5
    model, tok = load("tiny-random")
    goals = [PromptItem(f"goal number {i} please", "t", str(i)) for i in range(G)]
    ro = play_tiny_step(model, tok, TableJudge(scores, failed),
                 checks, sp, goals, [], [])

    keep = ~failed
    r_def = 0.3 * (1 - (scores - 1) / 4)  # content tier: no decline, no degenerate text
    assert ro.metrics["judge/excluded"] == 3.0
    assert ro.metrics["defender/reward_mean"] == pytest.approx(r_def[keep].mean())
    assert ro.metrics["attack_success_rate"] == pytest.approx(np.mean(scores[keep] >= 4.0))
    assert ro.metrics["judge/score_mean"] == pytest.approx(scores[keep].mean())
    np.testing.assert_array_equal(ro.excluded, failed)
    assert ro.judge_error == "timeout"

    defender = ro.batches[1]
    expected = reference_advantages(r_def, np.arange(G * A * R) // R, keep, True)
    np.testing.assert_allclose(defender.advantages[:G * A * R], expected, atol=1e-5)
    np.testing.assert_array_equal(defender.role_weight[:G * A * R], keep.astype(np.float32))

    invalid = np.array([attack_is_invalid(a, min_chars=4, is_refusal=checks.attack_refusal)
                        for a in ro.attacks[::R]])
    judged = keep.reshape(G * A, R)
    att_keep = judged.any(axis=1) | invalid
    r_att_rows = np.where(judged, (scores.reshape(G * A, R) - 1) / 4, 0.0)
    r_att = np.where(invalid, sp.invalid_attack_penalty,
                     r_att_rows.sum(axis=1) / np.maximum(judged.sum(axis=1), 1))
    attacker = ro.batches[0]
    np.testing.assert_array_equal(attacker.role_weight[:G * A], att_keep.astype(np.float32))
    np.testing.assert_allclose(
        attacker.advantages[:G * A],
        reference_advantages(r_att, np.repeat(np.arange(G), A), att_keep, True),
        atol=1e-5)
    if not invalid[0]:
        assert attacker.advantages[0] == 0 and attacker.role_weight[0] == 0


def test_a_step_where_the_judge_fails_too_often_stops_the_run(tmp_path):
    # llama_guard on the tiny word tokenizer fails every row ("safe" and "unsafe" are <unk>)
    cfg = tiny_config(judge__name="llama_guard", train__num_steps=2, ckpt__every_steps=0)
    with pytest.raises(JudgeFailed, match=r"the judge \(llama_guard on model:frozen policy\) "
                                          r"failed on 64 of 64 rows at step 1.*max_excluded_"
                                          r"fraction=0.5; last error: excluded: the answers "
                                          r"\['safe', 'unsafe'\] share a first token"):
        train_lib.train(cfg, tmp_path)


def test_the_frozen_policy_judge_shares_the_kl_reference_copy(tmp_path):
    trainer = train_lib.Trainer(tiny_config(judge__name="rubric", rl__beta=0.1), tmp_path)
    assert trainer.judge.backend.params is trainer.ref_params
    assert trainer.judge.describe == "rubric on model:frozen policy"


def test_a_guard_model_judges_a_training_step(tmp_path):
    pytest.importorskip("torch")
    from ssp_jax.metrics import read_metrics
    from tests.tiny_guard import write_guard_model

    write_guard_model(tmp_path / "guard", force=" Yes")  # every answer is "an instance"
    cfg = tiny_config(judge__name="harmbench", judge__model=str(tmp_path / "guard"),
                      train__num_steps=1, ckpt__every_steps=0)
    train_lib.train(cfg, tmp_path / "run")
    [record] = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert record["judge/excluded"] == 0.0 and record["judge/rows"] == 64.0
    assert record["attack_success_rate"] == 1.0
    assert record["judge/score_mean"] == pytest.approx(5.0, abs=1e-3)
