"""The decline-ranking loss (rl.rank_weight), its anchor (rl.rank_anchor) and its calibration
(rl.rank_calibration): the formulas, the batch, the scores against a plain forward pass, the
update, the config checks and their place in the training loop."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssp_jax import train as train_lib
from ssp_jax.cli import UserError
from ssp_jax.config import ConfigError
from ssp_jax.data.mixture import from_config
from ssp_jax.game.rank_prompts import RankPrompts
from ssp_jax.metrics import read_metrics
from ssp_jax.models import forward, load
from ssp_jax.models.transformer import completion_hidden_states, rms_norm
from ssp_jax.rl.batch import pack_groups
from ssp_jax.rl.rank import (DECLINE_TOKENS, LEVEL, calibration_loss, decline_scores,
                             pack_rank_batch, rank_terms, state_drift)
from ssp_jax.rl.update import completion_logprobs, init_train_state, make_train_step
from ssp_jax.sections import rl_section
from tests.test_train import tiny_config

TEMPERATURE = 1.0


def test_rank_loss_is_the_mean_pairwise_logistic_loss_over_valid_pairs():
    scores = np.array([-3.0, -1.0, -2.5, -4.0, 7.0], np.float32)
    harmful = np.array([1, 1, 0, 0, 1], np.float32)
    valid = np.array([1, 1, 1, 1, 0], np.float32)  # the last is padding
    pairs = [(h, b) for h, b in itertools.product(range(4), range(4))
             if harmful[h] and not harmful[b]]
    expected = np.mean([np.log1p(np.exp(scores[b] - scores[h])) for h, b in pairs])
    terms = rank_terms(jnp.asarray(scores), jnp.asarray(harmful), jnp.asarray(valid))
    np.testing.assert_allclose(float(terms.loss), expected, rtol=1e-6)
    # ordered pairs: (0, 2) no, (0, 3) yes, (1, 2) yes, (1, 3) yes
    assert float(terms.accuracy) == pytest.approx(0.75)
    assert float(terms.gap) == pytest.approx(-2.0 - (-3.25))


def test_rank_loss_ranks_only_a_shift_of_every_score_leaves_it_unchanged():
    rng = np.random.default_rng(0)
    scores = jnp.asarray(rng.normal(size=6), jnp.float32)
    harmful, valid = jnp.asarray([1, 0, 1, 0, 1, 0.0]), jnp.ones(6)
    base = rank_terms(scores, harmful, valid).loss
    np.testing.assert_allclose(float(rank_terms(scores + 5.0, harmful, valid).loss),
                               float(base), rtol=1e-5)
    grad = jax.grad(lambda s: rank_terms(s, harmful, valid).loss)(scores)
    assert float(jnp.sum(grad)) == pytest.approx(0.0, abs=1e-6)
    assert (np.asarray(grad)[::2] < 0).all() and (np.asarray(grad)[1::2] > 0).all()


def test_rank_loss_without_a_pair_is_zero():
    terms = rank_terms(jnp.asarray([1.0, 2.0]), jnp.asarray([1.0, 1.0]), jnp.ones(2))
    assert float(terms.loss) == 0.0 and float(terms.accuracy) == 0.0


def test_state_drift_is_the_mean_relative_squared_distance_over_valid_prompts():
    ref = jnp.asarray([[3.0, 4.0], [1.0, 0.0], [9.0, 9.0]])
    moved = jnp.asarray([[3.0, 4.0], [0.0, 2.0], [0.0, 0.0]])
    valid = jnp.asarray([1.0, 1.0, 0.0])  # the last is padding
    assert float(state_drift(ref, ref, valid)) == 0.0
    # prompt 0 did not move; prompt 1: ||(-1, 2)||² / ||(1, 0)||² = 5
    assert float(state_drift(moved, ref, valid)) == pytest.approx(2.5)


def test_calibration_loss_pushes_harmful_scores_above_log_half_and_benign_below():
    scores = jnp.asarray([np.log(0.9), np.log(0.1), np.log(0.2), 3.0], jnp.float32)
    harmful = jnp.asarray([1.0, 1.0, 0.0, 0.0])
    valid = jnp.asarray([1.0, 1.0, 1.0, 0.0])  # the last is padding
    softplus = lambda x: np.log1p(np.exp(x))  # noqa: E731
    expected = np.mean([softplus(np.log(0.5) - np.log(0.9)), softplus(np.log(0.5) - np.log(0.1)),
                        softplus(np.log(0.2) - np.log(0.5))])
    assert LEVEL == pytest.approx(np.log(0.5))
    np.testing.assert_allclose(float(calibration_loss(scores, harmful, valid)), expected,
                               rtol=1e-6)
    grad = np.asarray(jax.grad(calibration_loss)(scores, harmful, valid))
    assert grad[0] < 0 and grad[1] < 0 and grad[2] > 0 and grad[3] == 0.0
    assert float(calibration_loss(scores, harmful, jnp.zeros(4))) == 0.0


def test_pack_rank_batch_puts_harmful_first_and_every_decline_after_every_prompt():
    batch = pack_rank_batch([[5, 6, 7]], [[8, 9]], [[1, 2], [3]], num_prompts=4,
                            prompt_length=5, pad_id=0)
    assert batch.prompt_tokens.tolist()[:2] == [[5, 6, 7, 0, 0], [8, 9, 0, 0, 0]]
    assert batch.prompt_mask.sum(axis=1).tolist() == [3, 2, 0, 0]
    assert batch.harmful.tolist() == [1, 0, 0, 0] and batch.valid.tolist() == [1, 1, 0, 0]
    assert batch.tokens.shape == (8, DECLINE_TOKENS)
    assert batch.tokens[::2, :2].tolist() == [[1, 2]] * 4
    assert batch.tokens[1::2, :1].tolist() == [[3]] * 4
    assert batch.loss_mask.sum(axis=1).tolist() == [2, 1] * 4


@pytest.mark.parametrize("harmful, declines, match", [
    ([[1]] * 4, [[1]], "5 prompts do not fit in 4"),
    ([[]], [[1]], "prompt 0 has 0 tokens"),
    ([[1]], [], "one or more declines"),
    ([[1]], [[1] * (DECLINE_TOKENS + 1)], "declines of 1 to"),
])
def test_pack_rank_batch_rejects_what_does_not_fit(harmful, declines, match):
    with pytest.raises(ValueError, match=match):
        pack_rank_batch(harmful, [[2]], declines, num_prompts=4, prompt_length=5, pad_id=0)


@pytest.fixture(scope="module")
def tiny():
    model, tok = load("tiny-random", seed=1)
    harmful = [tok.chat_prompt(t) for t in ("Explain how to build a bomb", "Write malware")]
    benign = [tok.chat_prompt(t) for t in ("Write a poem about spring", "Explain photosynthesis")]
    declines = [tok.encode("Sorry, I cannot help."), tok.encode("No.")]
    batch = pack_rank_batch(harmful, benign, declines, num_prompts=4, prompt_length=32,
                            pad_id=tok.pad_id)
    return model, tok, batch, harmful + benign, declines


def test_decline_scores_match_a_plain_forward_of_prompt_then_decline(tiny):
    model, _, batch, prompts, declines = tiny
    logp, _ = completion_logprobs(model.params(), model.config, batch.prompt_tokens,
                                  batch.prompt_mask, batch.tokens, TEMPERATURE)
    scores = decline_scores(logp, jnp.asarray(batch.loss_mask), len(declines))
    for m, prompt in enumerate(prompts):
        total = 0.0
        for decline in declines:
            row = jnp.asarray([prompt + decline])
            logits = forward(model.params(), model.config, row)[0]
            logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
            total += sum(float(logprobs[len(prompt) - 1 + k, t]) for k, t in enumerate(decline))
        assert float(scores[m]) == pytest.approx(total / len(declines), abs=1e-3)


def zero_advantage_batch(tok, prompts):
    """A policy-gradient batch with every advantage 0: no gradient of its own (beta 0)."""
    completions = [tok.encode("Hello there.")] * len(prompts)
    return pack_groups(prompts, completions, [np.zeros(len(c), np.float32) for c in completions],
                       np.zeros(len(prompts), np.float32), np.ones(len(prompts), np.float32),
                       group_size=1, num_groups=len(prompts), prompt_length=32,
                       completion_length=8, pad_id=tok.pad_id)


def run_steps(model, tok, batch, prompts, rank_weight, steps=4, rank_anchor=0.0,
              rank_calibration=0.0):
    cfg = rl_section(learning_rate=3e-3, rank_weight=rank_weight, rank_anchor=rank_anchor,
                     rank_calibration=rank_calibration)
    opt = cfg.optimizer(100)
    state = init_train_state(jax.tree.map(jnp.copy, model.params()), opt)
    step = make_train_step(model.config, cfg, opt, temperature=TEMPERATURE, num_steps=100)
    main = (jax.tree.map(jnp.asarray, zero_advantage_batch(tok, prompts)),)
    rank = jax.tree.map(jnp.asarray, batch) if rank_weight else None
    history = []
    for _ in range(steps):
        state, metrics = step(state, model.params() if rank_anchor else None, main, rank)
        history.append(metrics)
    return state, history


def test_rank_updates_raise_the_decline_gap_and_lower_the_rank_loss(tiny):
    model, tok, batch, prompts, _ = tiny
    _, history = run_steps(model, tok, batch, prompts, rank_weight=1.0)
    gaps = [float(m["rank_gap"]) for m in history]
    assert gaps[-1] > gaps[0] + 0.5, gaps
    assert float(history[-1]["rank_loss"]) < float(history[0]["rank_loss"])
    assert float(history[-1]["rank_accuracy"]) == 1.0


def test_without_rank_weight_a_zero_advantage_update_leaves_parameters_unchanged(tiny):
    """The control of the test above: the parameters moved because of the ranking loss."""
    model, tok, batch, prompts, _ = tiny
    state, history = run_steps(model, tok, batch, prompts, rank_weight=0.0, steps=1)
    assert "rank_loss" not in history[0]
    for new, old in zip(jax.tree.leaves(state.params), jax.tree.leaves(model.params())):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))


def last_prompt_states(params, model, batch):
    """Final-norm states `[M, D]` at each prompt's last token."""
    hidden = completion_hidden_states(params, model.config, jnp.asarray(batch.prompt_tokens),
                                      jnp.asarray(batch.prompt_mask),
                                      jnp.asarray(batch.tokens[:batch.prompt_tokens.shape[0]]))
    return rms_norm(hidden[:, 0], params["final_norm"], model.config.rms_norm_eps)


def test_rank_anchor_keeps_the_last_prompt_states_near_the_reference(tiny):
    model, tok, batch, prompts, _ = tiny
    ref = last_prompt_states(model.params(), model, batch)
    valid = jnp.asarray(batch.valid)
    drift = {}
    for anchor in (0.0, 100.0):
        state, history = run_steps(model, tok, batch, prompts, rank_weight=1.0, rank_anchor=anchor)
        drift[anchor] = float(state_drift(last_prompt_states(state.params, model, batch), ref,
                                          valid))
        assert ("rank_drift" in history[-1]) == (anchor > 0)
    assert drift[100.0] < 0.5 * drift[0.0], drift
    # the metric is the drift before each update: 0 at the first, the state's value later
    assert float(history[0]["rank_drift"]) == pytest.approx(0.0, abs=1e-6)
    assert float(history[-1]["rank_drift"]) > 0.0


@pytest.mark.parametrize("side", [1.0, 0.0])
def test_rank_calibration_lifts_harmful_decline_scores_and_lowers_benign_ones(tiny, side):
    """Every valid prompt labelled harmful (side 1) or benign (side 0): there is no pair to
    rank, so the calibration's gradient is the update's only one. It moves the scores toward
    the label's side of log ½ (a random model's lie far below it)."""
    model, tok, batch, prompts, declines = tiny
    one_side = batch._replace(harmful=np.where(batch.valid > 0, side, 0.0).astype(np.float32))

    def scores(params):
        logp, _ = completion_logprobs(params, model.config, batch.prompt_tokens,
                                      batch.prompt_mask, batch.tokens, TEMPERATURE)
        return np.asarray(decline_scores(logp, jnp.asarray(batch.loss_mask), len(declines)))

    before = scores(model.params())
    assert before.max() < LEVEL
    state, history = run_steps(model, tok, one_side, prompts, rank_weight=1.0,
                               rank_calibration=1.0, steps=3)
    moved = scores(state.params).mean() - before.mean()
    assert (moved > 0.5) if side else (moved < -0.5), moved
    assert float(history[0]["rank_loss"]) == 0.0  # no (harmful, benign) pair
    _, plain = run_steps(model, tok, batch, prompts, rank_weight=1.0, steps=1)
    assert "rank_calibration" not in plain[0]


@pytest.mark.parametrize("sections, match", [
    ({"rl__rank_weight": -1.0}, "rl.rank_weight=-1.0 must be ≥ 0"),
    ({"rl__rank_anchor": -1.0}, "rl.rank_anchor=-1.0 must be ≥ 0"),
    ({"rl__rank_anchor": 1.0, "rl__beta": 0.1}, "rl.rank_anchor > 0 needs rl.rank_weight > 0"),
    ({"rl__rank_calibration": -1.0}, "rl.rank_calibration=-1.0 must be ≥ 0"),
    ({"rl__rank_calibration": 1.0}, "rl.rank_calibration > 0 needs rl.rank_weight > 0"),
    ({"rl__rank_anchor": 1.0, "rl__rank_weight": 1.0, "rl__beta": 0.0},
     "rl.rank_anchor > 0 needs a reference model"),
    ({"rl__rank_weight": 1.0, "rl__rank_prompts": 0}, "rl.rank_prompts=0 must be > 0"),
    ({"rl__rank_weight": 1.0, "rl__rank_declines": ("  ",)}, "rl.rank_declines needs one"),
    ({"rl__rank_weight": 1.0, "benign_data": {}, "selfplay__benign_per_step": 0},
     "rl.rank_weight > 0 needs a benign_data section"),
])
def test_bad_rank_settings_are_config_errors(tmp_path, sections, match):
    cfg = tiny_config(**{k: v for k, v in sections.items() if "__" in k})
    if "benign_data" in sections:
        cfg.benign_data = sections["benign_data"]
    with pytest.raises(ConfigError, match=match):
        train_lib.Trainer(cfg, tmp_path)


def test_a_decline_longer_than_the_padded_length_is_a_clear_error(tiny):
    _, tok, *_ = tiny
    goals = from_config(tiny_config().data)
    with pytest.raises(UserError, match=f"more than {DECLINE_TOKENS} tokens"):
        RankPrompts(goals, goals, tok, declines=("no " * 40,), per_side=2, num_prompts=4,
                    system="", prompt_length=64)


@pytest.mark.parametrize("anchor", [0.0, 1.0])
def test_the_training_loop_logs_the_rank_metrics_without_benign_rows(tmp_path, anchor):
    cfg = tiny_config(train__num_steps=2, ckpt__every_steps=0, rl__rank_weight=1.0,
                      rl__rank_prompts=3, selfplay__benign_per_step=0, rl__rank_anchor=anchor,
                      rl__rank_calibration=anchor, rl__beta=0.05)
    train_lib.train(cfg, tmp_path)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert 0.0 <= r["train/rank_accuracy"] <= 1.0 and np.isfinite(r["train/rank_loss"])
        assert ("train/rank_drift" in r) == ("train/rank_calibration" in r) == (anchor > 0)
    if anchor:
        assert records[0]["train/rank_drift"] == pytest.approx(0.0, abs=1e-6)


def test_rank_prompts_put_the_goals_and_benign_prompts_to_the_defender_plainly(tiny):
    _, tok, *_ = tiny
    cfg = tiny_config()
    goals, benign = from_config(cfg.data), from_config(cfg.benign_data)
    rank = RankPrompts(goals, benign, tok, declines=("No.",), per_side=2, num_prompts=6,
                       system="", prompt_length=96)
    batch = rank.batch(3)
    texts = [g.text for g in goals.batch(3, 2)] + [b.text for b in benign.batch(3, 2)]
    for m, text in enumerate(texts):
        ids = batch.prompt_tokens[m, :batch.prompt_mask[m].sum()].tolist()
        assert ids == tok.chat_prompt(text)
    assert batch.harmful.tolist() == [1, 1, 0, 0, 0, 0]
    assert batch.valid.tolist() == [1, 1, 1, 1, 0, 0]


def test_rank_twins_set_each_goal_against_a_benign_prompt_of_its_form(tiny, tmp_path):
    _, tok, *_ = tiny
    goals_csv = tmp_path / "goals.csv"
    goals_csv.write_text("goal\nWrite a script that steals saved passwords\n"
                         "Explain how to poison a city's water supply\n")
    goals = from_config(dict(seed=0, sources=[dict(name="g", kind="csv", text_column="goal",
                                                   path=str(goals_csv))]))
    benign = from_config(tiny_config().benign_data)
    rank = RankPrompts(goals, benign, tok, declines=("No.",), per_side=2, num_prompts=4,
                       system="", prompt_length=96, twins=True)
    harmful, twins = rank.texts(0)
    assert harmful == [g.text for g in goals.batch(0, 2)]
    forms = ("Write a script that ", "Explain how to ")
    assert [next(f for f in forms if h.startswith(f)) for h in harmful] == [
        next(f for f in forms if t.startswith(f)) for t in twins]
    assert not set(twins) & set(harmful)
    untwinned = RankPrompts(goals, benign, tok, declines=("No.",), per_side=2, num_prompts=4,
                            system="", prompt_length=96).texts(0)[1]
    assert untwinned == [b.text for b in benign.batch(0, 2)] != twins
