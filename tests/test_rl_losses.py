"""Policy loss pieces against float64 NumPy references; masking, clipping, micro-batching."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssp_jax.rl.losses import (
    LossTerms,
    entropy_from_logits,
    finalize,
    kl_k3,
    policy_loss_terms,
    token_logprobs,
)

EPS_LOW, EPS_HIGH = 0.2, 0.28


def _np_log_softmax(logits, temperature):
    z = logits.astype(np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_terms(logp, old, ref, adv, mask, weight, beta, aggregation):
    """Float64 reference of policy_loss_terms, written straight from the formula."""
    logp, old, mask = (np.asarray(x, np.float64) for x in (logp, old, mask))
    adv, weight = np.asarray(adv, np.float64), np.asarray(weight, np.float64)
    ratio = np.exp(logp - old)
    a = adv[:, None]
    surrogate = -np.minimum(ratio * a, np.clip(ratio, 1 - EPS_LOW, 1 + EPS_HIGH) * a)
    d = np.asarray(ref, np.float64) - logp
    k3 = np.exp(d) - d - 1
    per_token = (surrogate + beta * k3) * weight[:, None]
    n = mask.sum(axis=1)
    if aggregation == "token":  # the mean over weighted tokens
        loss_sum, denom = (per_token * mask).sum(), (mask * weight[:, None]).sum()
    else:  # the weighted mean over rows with tokens
        loss_sum = sum((per_token[b] * mask[b]).sum() / n[b] for b in range(len(n)) if n[b] > 0)
        denom = sum(weight[b] for b in range(len(n)) if n[b] > 0)
    clipped = ((a > 0) & (ratio > 1 + EPS_HIGH)) | ((a < 0) & (ratio < 1 - EPS_LOW))
    return dict(loss_sum=loss_sum, denom=denom, kl_sum=(k3 * mask).sum(),
                clip_count=(clipped * mask).sum(), ratio_sum=(ratio * mask).sum(),
                token_count=mask.sum())


def _batch(seed, B=6, T=9):
    """Random log-probs near each other, ragged masks (one row fully masked), mixed-sign A."""
    rng = np.random.default_rng(seed)
    logp = np.log(rng.uniform(0.05, 1.0, (B, T))).astype(np.float32)
    old = (logp + rng.normal(0, 0.3, (B, T))).astype(np.float32)
    ref = (logp + rng.normal(0, 0.3, (B, T))).astype(np.float32)
    mask = np.zeros((B, T), np.float32)
    for b, (start, stop) in enumerate([(2, 9), (3, 5), (0, 0), (1, 8), (4, 6), (2, 3)][:B]):
        mask[b, start:stop] = 1.0
    adv = rng.normal(0, 1, B).astype(np.float32)
    weight = rng.uniform(0.5, 1.5, B).astype(np.float32)
    return logp, old, ref, adv, mask, weight


def _terms(logp, old, ref, adv, mask, weight, beta=0.1, aggregation="token"):
    return policy_loss_terms(jnp.asarray(logp), jnp.asarray(old),
                             None if ref is None else jnp.asarray(ref), jnp.asarray(adv),
                             jnp.asarray(mask), jnp.asarray(weight), clip_eps_low=EPS_LOW,
                             clip_eps_high=EPS_HIGH, beta=beta, aggregation=aggregation)


def test_token_logprobs_match_numpy_log_softmax():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (3, 5, 17)).astype(np.float32)
    targets = rng.integers(0, 17, (3, 5)).astype(np.int32)
    got = token_logprobs(jnp.asarray(logits), jnp.asarray(targets), 0.7)
    expected = np.take_along_axis(_np_log_softmax(logits, 0.7), targets[..., None], -1)[..., 0]
    assert got.dtype == jnp.float32 and got.shape == (3, 5)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
    # bfloat16 logits are upcast before the softmax
    half = token_logprobs(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(targets), 0.7)
    assert half.dtype == jnp.float32


def test_entropy_matches_numpy_and_ignores_impossible_tokens():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (2, 4, 11)).astype(np.float32)
    logp = _np_log_softmax(logits, 1.3)
    expected = -(np.exp(logp) * logp).sum(-1)
    got = entropy_from_logits(jnp.asarray(logits), 1.3)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)
    blocked = logits.copy()
    blocked[..., :3] = -np.inf
    got = np.asarray(entropy_from_logits(jnp.asarray(blocked), 1.3))
    logp = _np_log_softmax(logits[..., 3:], 1.3)
    np.testing.assert_allclose(got, -(np.exp(logp) * logp).sum(-1), rtol=1e-5, atol=1e-6)


def test_kl_k3_matches_numpy_and_is_non_negative():
    rng = np.random.default_rng(3)
    logp = rng.normal(-2, 1, (4, 50)).astype(np.float32)
    ref = (logp + rng.normal(0, 0.5, (4, 50))).astype(np.float32)
    ref[0] = logp[0] + rng.normal(0, 1e-7, 50).astype(np.float32)  # near-equal: rounding zone
    d = ref.astype(np.float64) - logp.astype(np.float64)
    got = np.asarray(kl_k3(jnp.asarray(logp), jnp.asarray(ref)))
    np.testing.assert_allclose(got, np.exp(d) - d - 1, rtol=1e-4, atol=1e-7)
    assert np.all(got >= 0)
    np.testing.assert_array_equal(np.asarray(kl_k3(jnp.asarray(logp), jnp.asarray(logp))), 0.0)


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_loss_terms_match_numpy_reference(aggregation, beta):
    batch = _batch(4)
    got = _terms(*batch, beta=beta, aggregation=aggregation)
    expected = _np_terms(*batch, beta=beta, aggregation=aggregation)
    assert isinstance(got, LossTerms)
    for name, value in expected.items():
        np.testing.assert_allclose(float(getattr(got, name)), value, rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    # by hand: rows 0, 1, 3, 4, 5 hold 7, 2, 7, 2, 1 tokens; row 2 none
    _, _, _, _, _, weight = batch
    by_hand = (weight[[0, 1, 3, 4, 5]].sum() if aggregation == "sequence"
               else 7 * weight[0] + 2 * weight[1] + 7 * weight[3] + 2 * weight[4] + weight[5])
    np.testing.assert_allclose(float(got.denom), by_hand, rtol=1e-6)


def test_loss_terms_run_under_jit():
    batch = [jnp.asarray(x) for x in _batch(5)]
    fn = jax.jit(functools.partial(policy_loss_terms, clip_eps_low=EPS_LOW,
                                   clip_eps_high=EPS_HIGH, beta=0.1, aggregation="sequence"))
    got = finalize(fn(*batch))
    expected = _np_terms(*_batch(5), beta=0.1, aggregation="sequence")
    np.testing.assert_allclose(float(got["loss"]), expected["loss_sum"] / expected["denom"],
                               rtol=1e-5)


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_micro_batch_sums_reproduce_full_batch(aggregation):
    batch = _batch(6)
    full = finalize(_terms(*batch, aggregation=aggregation))
    halves = [_terms(*(x[s] for x in batch), aggregation=aggregation)
              for s in (slice(0, 2), slice(2, 6))]
    summed = finalize(jax.tree.map(jnp.add, *halves))
    for name in full:
        np.testing.assert_allclose(float(summed[name]), float(full[name]), rtol=1e-6,
                                   err_msg=name)
    # the ragged rows make a mean of per-half means differ: the test can tell them apart
    naive = np.mean([float(finalize(h)["loss"]) for h in halves])
    assert abs(naive - float(full["loss"])) > 1e-3


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_masked_positions_get_exactly_zero_gradient(aggregation):
    rng = np.random.default_rng(7)
    logits = jnp.asarray(rng.normal(0, 2, (6, 9, 13)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 13, (6, 9)), jnp.int32)
    _, old, ref, adv, mask, weight = _batch(7)

    def loss(lg):
        logp = token_logprobs(lg, targets, 0.9)
        return _terms(logp, old, ref, adv, mask, weight, aggregation=aggregation).loss_sum

    grad = np.asarray(jax.grad(loss)(logits))
    off = mask == 0
    np.testing.assert_array_equal(grad[off], 0.0)
    assert np.all(np.abs(grad[~off]).sum(-1) > 0)
    # garbage logits at masked positions change nothing
    garbage = jnp.where(jnp.asarray(off)[..., None], 1e4 * jnp.sign(logits), logits)
    assert float(loss(garbage)) == float(loss(logits))


def test_non_finite_values_at_masked_positions_are_ignored():
    logp, old, ref, adv, mask, weight = _batch(8)
    clean = _terms(logp, old, ref, adv, mask, weight)
    off = mask == 0
    dirty = [np.where(off, v, x) for x, v in ((logp, np.nan), (old, np.inf), (ref, -np.inf))]
    got = _terms(*dirty, adv, mask, weight)
    for name in LossTerms._fields:
        assert float(getattr(got, name)) == float(getattr(clean, name)), name
    grad = jax.grad(lambda lp: _terms(lp, *dirty[1:], adv, mask, weight).loss_sum)(
        jnp.asarray(dirty[0]))
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[off] == 0)


def test_clip_counts_only_the_side_that_matters():
    ratios = np.array([[1.5, 0.5, 1.1, 1.28], [0.5, 1.5, 0.9, 0.8]], np.float32)
    adv = np.array([2.0, -1.0], np.float32)  # row 0: A > 0 clips above; row 1: A < 0 below
    old = np.zeros_like(ratios)
    mask = np.ones_like(ratios)
    terms = _terms(np.log(ratios), old, None, adv, mask, np.ones(2, np.float32), beta=0.0)
    # clipped: (0, 0) ratio 1.5 > 1.28 with A > 0; (1, 0) ratio 0.5 < 0.8 with A < 0.
    # 1.28 and 0.8 sit on the boundary and are not clipped.
    assert float(terms.clip_count) == 2.0
    np.testing.assert_allclose(float(finalize(terms)["clip_fraction"]), 2 / 8)
    grad = jax.grad(lambda lp: _terms(lp, old, None, adv, mask, np.ones(2, np.float32),
                                      beta=0.0).loss_sum)(jnp.asarray(np.log(ratios)))
    # d/dlogp of -ρA is -ρA where unclipped, and 0 where the clip is active
    expected = -ratios * adv[:, None]
    expected[0, 0] = expected[1, 0] = 0.0
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-5)


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_zero_weight_rows_do_not_dilute_the_loss(aggregation):
    # weights [w, 0]: the loss is row 0's alone, as if row 1 were not in the batch
    logp, old, ref, adv, mask, weight = _batch(12)
    zero_rest = np.where(np.arange(len(weight)) == 0, weight, 0.0).astype(np.float32)
    both = finalize(_terms(logp, old, ref, adv, mask, zero_rest, aggregation=aggregation))
    alone = finalize(_terms(logp[:1], old[:1], ref[:1], adv[:1], mask[:1], weight[:1],
                            aggregation=aggregation))
    np.testing.assert_allclose(float(both["loss"]), float(alone["loss"]), rtol=1e-6)


def test_weights_below_one_still_average():
    # one row of weight 0.25 and one token: the loss is that token's, not a quarter of it
    logp, old, ref, adv, mask, _ = (x[:1] for x in _batch(13))
    mask = np.zeros_like(mask)
    mask[0, 0] = 1.0
    quarter = finalize(_terms(logp, old, ref, adv, mask, np.array([0.25], np.float32)))
    one = finalize(_terms(logp, old, ref, adv, mask, np.array([1.0], np.float32)))
    np.testing.assert_allclose(float(quarter["loss"]), float(one["loss"]), rtol=1e-6)


def test_role_weight_scales_rows():
    logp, old, ref, adv, mask, weight = _batch(9)
    zero_first = weight.copy()
    zero_first[0] = 0.0
    only_rest = _terms(logp, old, ref, adv, mask, zero_first)
    expected = _np_terms(logp[1:], old[1:], ref[1:], adv[1:], mask[1:], weight[1:], 0.1, "token")
    np.testing.assert_allclose(float(only_rest.loss_sum), expected["loss_sum"], rtol=1e-5)


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_fully_masked_batch_gives_zero_loss_and_finite_grads(aggregation):
    logp, old, ref, adv, _, weight = _batch(10)
    mask = np.zeros_like(logp)
    terms = _terms(logp, old, ref, adv, mask, weight, aggregation=aggregation)
    metrics = finalize(terms)
    assert float(terms.denom) == 0.0
    for name, value in metrics.items():
        assert float(value) == 0.0, name
    grad = jax.grad(lambda lp: finalize(_terms(lp, old, ref, adv, mask, weight,
                                               aggregation=aggregation))["loss"])(
        jnp.asarray(logp))
    np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_bad_settings_are_rejected():
    batch = _batch(11)
    with pytest.raises(ValueError, match="aggregation"):
        _terms(*batch, aggregation="mean")
    with pytest.raises(ValueError, match="ref_logp"):
        _terms(*batch[:2], None, *batch[3:], beta=0.1)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(jnp.zeros((1, 1, 3)), jnp.zeros((1, 1), jnp.int32), 0.0)
