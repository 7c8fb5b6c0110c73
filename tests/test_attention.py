"""Attention kernels against the plain XLA path: `jax.nn.dot_product_attention` (the cuDNN
call, run with implementation="xla" on CPU) and the Pallas splash kernel (interpret mode),
on the grouped update's block mask with padding, directly, under a mesh and in the model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssp_jax import sharding
from ssp_jax.models import load
from ssp_jax.models.attention import (
    MaskPattern,
    dense_mask,
    dot_product_attention,
    resolve,
    splash_attention,
    xla_attention,
)
from ssp_jax.models.transformer import forward
from ssp_jax.rl.update import completion_logprobs

P_LEN, S, C = 6, 3, 5  # grouped layout: a 6-token prompt, then 3 completions of 5 tokens
T = P_LEN + S * C


def grouped_reference(prompt_real: np.ndarray) -> np.ndarray:
    """`[T, T]` visibility from the definition: a prompt token sees earlier real prompt tokens;
    a completion token sees the real prompt and the earlier tokens of its own completion."""
    out = np.zeros((T, T), bool)
    for i in range(T):
        for j in range(i + 1):
            if j < P_LEN:
                out[i, j] = prompt_real[j] and (i >= P_LEN or prompt_real[i])
            else:
                out[i, j] = (i - P_LEN) // C == (j - P_LEN) // C
    return out


def random_inputs(b=4, h=4, kv=2, hd=16, seed=0):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(b, T, h, hd)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(b, kv, T, hd)), jnp.float32) for _ in range(2))
    prompt_len = rng.integers(1, P_LEN + 1, b)
    real = np.concatenate([np.arange(P_LEN)[None] < prompt_len[:, None],
                           np.ones((b, S * C), bool)], axis=1)
    return q, k, v, real, jnp.asarray(np.where(real, 0, 1), jnp.int32)


def test_grouped_pattern_and_segments_give_the_block_mask():
    _, _, _, real, seg = random_inputs()
    mask = np.asarray(dense_mask(MaskPattern(P_LEN, C), seg))
    for b in range(len(real)):
        ref = grouped_reference(real[b])
        np.testing.assert_array_equal(mask[b][real[b]], ref[real[b]])  # real queries


@pytest.mark.parametrize("kernel", ["dot_product", "splash"])
def test_kernels_equal_the_xla_path_with_gradients(kernel):
    q, k, v, real, seg = random_inputs()
    pattern = MaskPattern(P_LEN, C)
    weights = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32)
    weights = weights * jnp.asarray(real)[:, :, None, None]  # only real queries count

    def run(name, q, k, v):
        if name == "splash":
            return splash_attention(q, k, v, pattern, seg)
        mask = dense_mask(pattern, seg)
        if name == "dot_product":
            return dot_product_attention(q, k, v, mask, implementation="xla")
        return xla_attention(q, k, v, mask)

    loss = lambda name: lambda q, k, v: jnp.sum(run(name, q, k, v) * weights)  # noqa: E731
    out, ref = run(kernel, q, k, v), run("xla", q, k, v)
    np.testing.assert_allclose(np.asarray(out)[real], np.asarray(ref)[real], atol=2e-5)
    grads = jax.grad(loss(kernel), argnums=(0, 1, 2))(q, k, v)
    ref_grads = jax.grad(loss("xla"), argnums=(0, 1, 2))(q, k, v)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=5e-5)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_splash_under_a_mesh_runs_per_shard_and_equals_xla():
    q, k, v, real, seg = random_inputs(b=4, h=4, kv=2)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    pattern = MaskPattern(P_LEN, C)
    with jax.set_mesh(mesh):
        out = jax.jit(lambda *a: splash_attention(*a, pattern, seg))(q, k, v)
    ref = xla_attention(q, k, v, dense_mask(pattern, seg))
    np.testing.assert_allclose(np.asarray(out)[real], np.asarray(ref)[real], atol=2e-5)


def test_resolve_picks_by_backend_and_rejects_what_cannot_run():
    assert jax.default_backend() == "cpu"
    assert resolve("auto", jnp.bfloat16) == "xla"
    assert resolve("splash", jnp.float32) == "splash"  # interpreted off TPU
    with pytest.raises(ValueError, match="needs a GPU"):
        resolve("cudnn", jnp.bfloat16)
    with pytest.raises(ValueError, match="valid: auto, xla, cudnn, splash"):
        resolve("flash", jnp.float32)


@pytest.mark.slow
def test_model_with_splash_attention_equals_xla():
    model, tok = load("tiny-random", seed=2)
    cfg = model.config.replace(attention="xla")
    splash_cfg = cfg.replace(attention="splash")
    params = model.params()
    rng = np.random.default_rng(0)
    prompt_len = np.array([4, 9])
    prompts = rng.integers(3, cfg.vocab_size, (2, 9)).astype(np.int32)
    prompt_mask = np.arange(9)[None] < prompt_len[:, None]
    tokens = rng.integers(3, cfg.vocab_size, (6, 5)).astype(np.int32)
    ref, _ = completion_logprobs(params, cfg, prompts, prompt_mask, tokens, 1.0)
    out, _ = completion_logprobs(params, splash_cfg, prompts, prompt_mask, tokens, 1.0)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=2e-5)
    # left-padded causal forward (the sampler's prefill mask), real positions
    left = np.arange(9)[None] >= 9 - prompt_len[:, None]
    ref = forward(params, cfg, prompts, attention_mask=left)
    out = forward(params, splash_cfg, prompts, attention_mask=left)
    np.testing.assert_allclose(np.asarray(out)[left], np.asarray(ref)[left], atol=2e-5)
