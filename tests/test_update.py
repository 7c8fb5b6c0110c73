"""The jitted policy update: log-prob agreement with the sampler, exact micro-batching,
and skipping of non-finite updates."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssp_jax.models import forward, load
from ssp_jax.rl.batch import pack_groups
from ssp_jax.rl.update import completion_logprobs, init_train_state
from ssp_jax.rl.update import make_train_step as _make_train_step
from ssp_jax.rollout import generate
from ssp_jax.sections import rl_section

CFG = rl_section(learning_rate=1e-2)
TEMPERATURE = 0.8  # sampling and update
NUM_STEPS = 100  # run length the schedule is built for


def make_optimizer(cfg):
    return cfg.optimizer(NUM_STEPS)


def make_train_step(model_cfg, cfg, opt, **shardings):
    return _make_train_step(model_cfg, cfg, opt, temperature=TEMPERATURE, num_steps=NUM_STEPS,
                            **shardings)


@pytest.fixture(scope="module")
def rollout_batch():
    model, tok = load("tiny-random", seed=1)
    prompts = [tok.chat_prompt(text) for text in ("Tell me a story", "Write code please",
                                                  "Imagine a world", "Explain why")]
    out = generate(model, prompts, 10, temperature=TEMPERATURE, num_samples=2, seed=4,
                   stop_ids=tok.stop_ids, pad_id=tok.pad_id)
    adv = np.random.default_rng(0).normal(size=len(out.tokens)).astype(np.float32)
    batch = pack_groups(prompts, out.tokens, out.logprobs, adv,
                        np.ones(len(out.tokens), np.float32), group_size=2, num_groups=4,
                        prompt_length=32, completion_length=10, pad_id=tok.pad_id)
    return model, jax.tree.map(jnp.asarray, batch)


def test_grouped_forward_matches_every_row_run_on_its_own(rollout_batch):
    model, batch = rollout_batch
    logp, logits = completion_logprobs(model.params(), model.config, batch.prompt_tokens,
                                       batch.prompt_mask, batch.tokens, TEMPERATURE)
    lengths = np.asarray(batch.prompt_mask).sum(axis=1)
    for r in range(batch.tokens.shape[0]):
        prompt = np.asarray(batch.prompt_tokens[r // 2, :lengths[r // 2]])
        c = int(np.asarray(batch.loss_mask[r]).sum())
        row = np.concatenate([prompt, np.asarray(batch.tokens[r, :c])])[None]
        flat = forward(model.params(), model.config, jnp.asarray(row))[0]
        # completion token k is predicted at row position len(prompt) - 1 + k
        np.testing.assert_allclose(logits[r, :c], flat[len(prompt) - 1:len(prompt) - 1 + c],
                                   atol=2e-5)
    assert np.isfinite(np.asarray(logp)).all()


def test_trainer_logprobs_match_sampler_logprobs_before_update(rollout_batch):
    model, batch = rollout_batch
    logp, _ = completion_logprobs(model.params(), model.config, batch.prompt_tokens,
                                  batch.prompt_mask, batch.tokens, TEMPERATURE)
    mask = np.asarray(batch.loss_mask) > 0
    np.testing.assert_allclose(np.asarray(logp)[mask], np.asarray(batch.old_logp)[mask],
                               atol=2e-5)


def run_step(model, batch, cfg, params=None):
    opt = make_optimizer(cfg)
    state = init_train_state(params or jax.tree.map(jnp.copy, model.params()), opt)
    return make_train_step(model.config, cfg, opt)(state, None, (batch,), None)


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_micro_batches_accumulate_exactly(rollout_batch, aggregation):
    model, batch = rollout_batch
    cfg = dataclasses.replace(CFG, aggregation=aggregation)
    one, m1 = run_step(model, batch, cfg)
    four, m4 = run_step(model, batch, dataclasses.replace(cfg, micro_batches=4))
    assert float(m1["grad_norm"]) > 0
    np.testing.assert_allclose(float(m1["loss"]), float(m4["loss"]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(m1["grad_norm"]), float(m4["grad_norm"]), rtol=1e-4)
    # Adam turns tiny summation-order differences of near-zero gradients into visible ones;
    # 1e-4 is 1% of one step of size lr = 1e-2
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_update_changes_params_and_reports_metrics(rollout_batch):
    model, batch = rollout_batch
    state, metrics = run_step(model, batch, CFG)
    assert int(state.step) == 1 and float(metrics["update_skipped"]) == 0.0
    moved = [float(jnp.abs(a - b).max()) for a, b in
             zip(jax.tree.leaves(state.params), jax.tree.leaves(model.params()))]
    assert max(moved) > 0
    assert float(metrics["ratio_mean"]) == pytest.approx(1.0, abs=1e-4)  # on-policy
    assert float(metrics["entropy"]) > 0


def test_padding_tokens_do_not_change_the_update(rollout_batch):
    model, batch = rollout_batch
    # even rows stop after 6 tokens (the sampled rows all ran to the limit)
    stopped = (jnp.arange(batch.tokens.shape[0]) % 2 == 0)[:, None] & (jnp.arange(10) >= 6)
    batch = batch._replace(loss_mask=jnp.where(stopped, 0.0, batch.loss_mask),
                           old_logp=jnp.where(stopped, 0.0, batch.old_logp))
    noisy = batch._replace(
        prompt_tokens=jnp.where(batch.prompt_mask, batch.prompt_tokens, 7),
        tokens=jnp.where(stopped, 5, batch.tokens))
    assert not np.array_equal(noisy.prompt_tokens, batch.prompt_tokens)
    clean_state, clean = run_step(model, batch, CFG)
    noisy_state, dirty = run_step(model, noisy, CFG)
    for key in ("loss", "grad_norm", "entropy"):
        np.testing.assert_allclose(float(dirty[key]), float(clean[key]), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(noisy_state.params), jax.tree.leaves(clean_state.params)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_non_finite_gradient_update_is_skipped(rollout_batch):
    model, batch = rollout_batch
    poisoned = batch._replace(advantages=batch.advantages.at[0].set(jnp.nan))
    state, metrics = run_step(model, poisoned, CFG)
    assert float(metrics["update_skipped"]) == 1.0
    assert int(state.step) == 1
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(model.params())):
        np.testing.assert_array_equal(a, b)


def test_batches_of_different_shapes_make_one_exact_update(rollout_batch):
    model, batch = rollout_batch
    groups = lambda x, lo, hi: x[lo * (x.shape[0] // 4):hi * (x.shape[0] // 4)]  # noqa: E731
    head = jax.tree.map(lambda x: groups(x, 0, 2), batch)
    tail = jax.tree.map(lambda x: groups(x, 2, 4), batch)
    pad = lambda x, v: jnp.pad(x, ((0, 0), (0, 16)), constant_values=v)  # noqa: E731
    tail = tail._replace(prompt_tokens=pad(tail.prompt_tokens, 0),
                         prompt_mask=pad(tail.prompt_mask, False), tokens=pad(tail.tokens, 0),
                         loss_mask=pad(tail.loss_mask, 0.0), old_logp=pad(tail.old_logp, 0.0))
    opt = make_optimizer(CFG)
    step = make_train_step(model.config, CFG, opt)
    _, whole = step(init_train_state(jax.tree.map(jnp.copy, model.params()), opt), None,
                    (batch,), None)
    _, parts = step(init_train_state(jax.tree.map(jnp.copy, model.params()), opt), None,
                    (head, tail), None)
    for key in ("loss", "grad_norm", "token_count", "entropy"):
        np.testing.assert_allclose(float(parts[key]), float(whole[key]), rtol=1e-5, atol=1e-7)


def test_rematerialized_blocks_give_the_same_update(rollout_batch):
    model, batch = rollout_batch
    opt = make_optimizer(CFG)
    results = []
    for remat in (False, True):
        step = make_train_step(model.config.replace(remat=remat), CFG, opt)
        state = init_train_state(jax.tree.map(jnp.copy, model.params()), opt)
        results.append(step(state, None, (batch,), None))
    (plain, m_plain), (remat, m_remat) = results
    np.testing.assert_allclose(float(m_remat["loss"]), float(m_plain["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(m_remat["grad_norm"]), float(m_plain["grad_norm"]),
                               rtol=1e-5)
    for a, b in zip(jax.tree.leaves(remat.params), jax.tree.leaves(plain.params)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_zero_weight_batch_leaves_the_update_unchanged(rollout_batch):
    # a role whose rows all have weight 0 (the attacker under static_attacks) adds nothing to
    # the loss or its denominator: the update is the other role's alone
    model, batch = rollout_batch
    silent = batch._replace(role_weight=jnp.zeros_like(batch.role_weight))
    opt = make_optimizer(CFG)
    step = make_train_step(model.config, CFG, opt)
    fresh = lambda: init_train_state(jax.tree.map(jnp.copy, model.params()), opt)  # noqa: E731
    alone_state, alone = step(fresh(), None, (batch,), None)
    both_state, both = step(fresh(), None, (batch, silent), None)
    for key in ("loss", "grad_norm"):
        np.testing.assert_allclose(float(both[key]), float(alone[key]), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(both_state.params), jax.tree.leaves(alone_state.params)):
        np.testing.assert_allclose(a, b, atol=1e-6)
