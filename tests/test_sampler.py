"""The jitted KV-cache sampler against full forward passes; greedy rows in a sampled batch;
compilation counts; bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ssp_jax.models import Transformer, forward
from ssp_jax.rollout import generate
from ssp_jax.rl.losses import token_logprobs
from ssp_jax.rollout.sampler import filter_logits, sample_token
from tests.compile_count import count_compiles
from tests.sampler_helpers import CFG, PROMPTS



@pytest.fixture(scope="module")
def model():
    m = Transformer(CFG, rngs=nnx.Rngs(0))
    # sharper weights than the 0.02 init so greedy continuations are not all one token
    m.embed[...] = m.embed[...] * 20
    return m


def full_forward_logprobs(model, prompt, continuation):
    logits = forward(model.params(), CFG, jnp.asarray([prompt + continuation], jnp.int32))
    logp = jax.nn.log_softmax(logits[0, len(prompt) - 1:-1], axis=-1)
    return np.asarray(logp[np.arange(len(continuation)), continuation])


def test_greedy_decode_matches_repeated_full_forward_argmax(model):
    out = generate(model, PROMPTS, 12, temperature=0.0)
    for prompt, tokens in zip(PROMPTS, out.tokens):
        seq = list(prompt)
        for _ in range(12):
            logits = forward(model.params(), CFG, jnp.asarray([seq], jnp.int32))
            seq.append(int(jnp.argmax(logits[0, -1])))
        assert tokens == seq[len(prompt):]


def test_sampled_logprobs_equal_full_forward_logprobs(model):
    out = generate(model, PROMPTS, 10, temperature=1.0, num_samples=2, seed=3)
    assert len(out.tokens) == len(PROMPTS) * 2
    for i, (tokens, logps) in enumerate(zip(out.tokens, out.logprobs)):
        ref = full_forward_logprobs(model, PROMPTS[i // 2], tokens)
        np.testing.assert_allclose(logps, ref, atol=2e-5)


def test_temperature_scales_reported_logprobs(model):
    out = generate(model, PROMPTS[:1], 6, temperature=0.5, seed=1)
    logits = forward(model.params(), CFG, jnp.asarray([PROMPTS[0] + out.tokens[0]], jnp.int32))
    logp = jax.nn.log_softmax(logits[0, len(PROMPTS[0]) - 1:-1] / 0.5, axis=-1)
    ref = np.asarray(logp[np.arange(6), out.tokens[0]])
    np.testing.assert_allclose(out.logprobs[0], ref, atol=2e-5)


def test_group_sampling_fans_out_each_prompt(model):
    greedy = generate(model, PROMPTS, 8, temperature=0.0)
    grouped = generate(model, PROMPTS, 8, temperature=0.0, num_samples=3)
    for i, tokens in enumerate(grouped.tokens):
        assert tokens == greedy.tokens[i // 3]
    sampled = generate(model, PROMPTS, 8, temperature=1.0, num_samples=4, seed=0)
    assert len({tuple(t) for t in sampled.tokens[:4]}) > 1  # samples of one prompt differ


def test_stop_ids_end_rows_and_are_kept(model):
    free = generate(model, PROMPTS, 12, temperature=0.0)
    stop = free.tokens[0][4]
    out = generate(model, PROMPTS, 12, temperature=0.0, stop_ids=[stop])
    first = free.tokens[0].index(stop)
    assert out.tokens[0] == free.tokens[0][:first + 1]
    assert out.finished[0]
    assert len(out.logprobs[0]) == len(out.tokens[0])


def test_loop_exits_early_when_every_row_is_done(model):
    free = generate(model, PROMPTS, 12, temperature=0.0)
    stops = sorted({row[0] for row in free.tokens})
    out = generate(model, PROMPTS, 12, temperature=0.0, stop_ids=stops)
    assert out.num_steps == 1 and all(len(t) == 1 for t in out.tokens)


def test_top_k_one_is_greedy(model):
    greedy = generate(model, PROMPTS, 8, temperature=0.0)
    top1 = generate(model, PROMPTS, 8, temperature=1.3, top_k=1, seed=5)
    assert top1.tokens == greedy.tokens


@pytest.mark.parametrize("top_k, top_p", [(1, 1.0), (3, 1.0), (0, 0.5), (4, 0.7)])
def test_filtered_sampling_reports_unfiltered_logprobs(model, top_k, top_p):
    """top-k/top-p pick the token; its log-prob is under the full softmax(logits / T), the
    distribution the trainer scores."""
    out = generate(model, PROMPTS, 6, temperature=1.3, top_k=top_k, top_p=top_p, seed=2)
    for prompt, tokens, logps in zip(PROMPTS, out.tokens, out.logprobs):
        logits = forward(model.params(), CFG, jnp.asarray([prompt + tokens], jnp.int32))
        logp = jax.nn.log_softmax(logits[0, len(prompt) - 1:-1] / 1.3, axis=-1)
        ref = np.asarray(logp[np.arange(len(tokens)), tokens])
        np.testing.assert_allclose(logps, ref, atol=2e-5)
        assert np.all(ref < -1e-3)  # the kept tokens never hold all the mass here, so the
        # filtered (renormalised) log-probs would differ from these


def test_greedy_rows_are_greedy_decodes_and_the_other_rows_still_sample(model):
    greedy = generate(model, PROMPTS, 10, temperature=0.0)
    runs = [generate(model, PROMPTS, 10, temperature=0.7, num_samples=4, greedy_samples=2,
                     seed=seed) for seed in range(3)]
    for out in runs:
        for i, ref in enumerate(greedy.tokens):
            assert out.tokens[4 * i] == out.tokens[4 * i + 1] == ref  # rows 0, 1 of prompt i
    for i, ref in enumerate(greedy.tokens):
        sampled = {tuple(out.tokens[4 * i + g]) for out in runs for g in (2, 3)}
        assert len(sampled) > 1 and tuple(ref) not in sampled  # rows 2, 3 vary with the seed


def test_greedy_rows_report_the_trainers_logprobs_at_the_sampling_temperature(model):
    """The first importance ratio stays 1: a greedy row's log-probs are those the update
    scores (`rl.losses.token_logprobs` at the sampling temperature), not temperature 1's."""
    out = generate(model, PROMPTS, 8, temperature=0.7, num_samples=2, greedy_samples=1, seed=4)
    for i, prompt in enumerate(PROMPTS):
        tokens = out.tokens[2 * i]  # the greedy row
        logits = forward(model.params(), CFG, jnp.asarray([prompt + tokens], jnp.int32))
        scored = logits[:, len(prompt) - 1:-1]  # [1, 8, V]
        target = jnp.asarray([tokens], jnp.int32)
        ref = np.asarray(token_logprobs(scored, target, 0.7))[0]
        np.testing.assert_allclose(out.logprobs[2 * i], ref, atol=2e-5)
        at_one = np.asarray(token_logprobs(scored, target, 1.0))[0]
        assert np.max(np.abs(at_one - ref)) > 1e-3  # temperature 1's would fail the check


def test_greedy_rows_leave_the_sampled_rows_draws_unchanged(model):
    kwargs = dict(temperature=0.7, num_samples=4, seed=5, stop_ids=[3])
    mixed = generate(model, PROMPTS, 8, greedy_samples=2, **kwargs)
    sampled = generate(model, PROMPTS, 8, **kwargs)
    for row in range(len(PROMPTS) * 4):
        if row % 4 >= 2:
            assert mixed.tokens[row] == sampled.tokens[row]
            np.testing.assert_array_equal(mixed.logprobs[row], sampled.logprobs[row])
            assert mixed.finished[row] == sampled.finished[row]


# generate(model, PROMPTS, 8, temperature=0.7, num_samples=2, seed=5) on main at bb425c6,
# before greedy rows existed (a run of both trees also agreed on the log-probs bit for bit)
TOKENS_BEFORE_GREEDY_ROWS = [
    [64, 8, 92, 11, 76, 18, 66, 72], [85, 21, 73, 51, 63, 21, 20, 56],
    [25, 10, 19, 85, 16, 37, 69, 95], [87, 27, 55, 88, 55, 6, 31, 10],
    [71, 11, 60, 52, 84, 43, 19, 42], [51, 43, 45, 3, 38, 88, 52, 92]]


def test_no_greedy_samples_give_the_tokens_sampled_before_greedy_rows(model):
    out = generate(model, PROMPTS, 8, temperature=0.7, num_samples=2, greedy_samples=0, seed=5)
    assert out.tokens == TOKENS_BEFORE_GREEDY_ROWS
    for i, (tokens, logps) in enumerate(zip(out.tokens, out.logprobs)):
        logits = forward(model.params(), CFG, jnp.asarray([PROMPTS[i // 2] + tokens], jnp.int32))
        ref = jax.nn.log_softmax(logits[0, len(PROMPTS[i // 2]) - 1:-1] / 0.7, axis=-1)
        np.testing.assert_allclose(logps, np.asarray(ref[np.arange(8), tokens]), atol=2e-5)


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.0, 0, 1.0), (0.7, 0, 1.0),
                                                       (1.3, 5, 0.8)])
def test_sample_token_greedy_rows_mask(temperature, top_k, top_p):
    """No greedy row: bit for bit the tokens and log-probs of no mask (the serving path); a
    greedy row: the argmax, with its log-prob under softmax(logits / T) (T = 1 when T ≤ 0)."""
    logits = jax.random.normal(jax.random.key(0), (6, 97))  # [N, V]: flat, samples vary
    key = jax.random.key(1)
    args = (key, jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p))
    plain = sample_token(logits, *args)
    no_row = sample_token(logits, *args, jnp.zeros(6, bool))
    np.testing.assert_array_equal(no_row[0], plain[0])
    np.testing.assert_array_equal(no_row[1], plain[1])
    rows = jnp.asarray([True, False, True, False, False, True])
    token, logp = sample_token(logits, *args, rows)
    x = np.asarray(logits, np.float64) / (temperature if temperature > 0 else 1.0)
    x = x - x.max(-1, keepdims=True)
    ref = x - np.log(np.exp(x).sum(-1, keepdims=True))  # float64 log-softmax
    argmax = np.argmax(np.asarray(logits), axis=-1)
    want = np.where(np.asarray(rows), argmax, np.asarray(plain[0]))
    np.testing.assert_array_equal(token, want)
    np.testing.assert_allclose(logp, ref[np.arange(6), want], atol=1e-5)
    if temperature > 0:
        assert np.any(np.asarray(plain[0])[np.asarray(rows)] != argmax[np.asarray(rows)])


def test_filter_logits_keeps_top_k_and_nucleus():
    logits = jnp.log(jnp.asarray([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = lambda k, p: np.isfinite(np.asarray(filter_logits(logits, jnp.int32(k),  # noqa: E731
                                                             jnp.float32(p))))[0].tolist()
    assert kept(2, 1.0) == [True, True, False, False, False]
    assert kept(0, 0.6) == [True, True, False, False, False]
    assert kept(0, 0.5) == [True, False, False, False, False]
    assert kept(0, 0.86) == [True, True, True, True, False]
    assert kept(3, 0.95) == [True, True, True, False, False]


def test_no_recompilation_for_sampling_params_seed_or_same_bucket(model):
    generate(model, PROMPTS, 8, temperature=1.0, seed=0)  # warm up: compiles
    n = count_compiles(lambda: [
        generate(model, PROMPTS, 8, temperature=0.7, top_p=0.9, top_k=5, seed=1),
        generate(model, PROMPTS, 8, temperature=0.0, seed=2),
        generate(model, PROMPTS, 8, temperature=0.7, greedy_samples=1, seed=4),
        generate(model, [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [3], [4, 5]], 8, seed=3),
    ])
    assert n == 0
    assert count_compiles(lambda: generate(model, [[1] * 40] * 3, 8)) > 0  # new bucket: 48


def test_prompt_longer_than_cache_is_a_clear_error(model):
    with pytest.raises(ValueError, match="exceeds the cache length 256"):
        generate(model, [[1] * 250], 10)


@pytest.mark.parametrize("greedy_samples", [-1, 3])
def test_greedy_samples_outside_zero_to_num_samples_is_a_clear_error(model, greedy_samples):
    with pytest.raises(ValueError, match=rf"greedy_samples \({greedy_samples}\) must be in "
                                         r"\[0, num_samples = 2\]"):
        generate(model, PROMPTS, 4, num_samples=2, greedy_samples=greedy_samples)


def test_bad_prompts_are_clear_errors(model):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(model, [[1], []], 4)
    with pytest.raises(ValueError, match="outside"):
        generate(model, [[1, 500]], 4)
    with pytest.raises(ValueError, match="at least one prompt"):
        generate(model, [], 4)
