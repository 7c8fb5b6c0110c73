"""The sampler's rows and KV cache sharded over 8 fake devices: per-device shapes read from the
compiled programs, and the same tokens as the one-device sampler."""

import jax
import numpy as np
import pytest
from flax import nnx

from ssp_jax import sharding
from ssp_jax.models import Transformer
from ssp_jax.models.loading import lazy_from_arrays, place_params
from ssp_jax.rollout.sampler import (DecodeStart, SamplingInputs, generate_with_params,
                                     row_multiple, sampler_programs)
from tests.sampler_helpers import CFG, PROMPTS

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")


@pytest.fixture(scope="module")
def params():
    model = Transformer(CFG, rngs=nnx.Rngs(0))
    model.embed[...] = model.embed[...] * 20  # sharper logits: greedy rows are not all alike
    return model.params()


def on_mesh(params, sizes):
    mesh = sharding.make_mesh(sizes)
    return place_params(CFG, lazy_from_arrays(params), mesh, sharding.TRAIN_RULES)


def per_device(shardings, shapes):
    return jax.tree.map(lambda s, x: s.shard_shape(x.shape), shardings, shapes)


@pytest.mark.parametrize("sizes,row_shards,head_shards", [
    ({"data": 2, "fsdp": 4, "tensor": 1}, 8, 1),
    ({"data": 2, "fsdp": 2, "tensor": 2}, 4, 2),
])
def test_compiled_sampler_splits_rows_over_data_and_fsdp(params, sizes, row_shards,
                                                          head_shards):
    sharded = on_mesh(params, sizes)
    assert row_multiple(sharded) == row_shards
    prompts, prompt_len, new, samples = 16, 32, 8, 2
    prefill, decode = sampler_programs(CFG, sharded, prompts, prompt_len, new, samples)
    tokens = jax.ShapeDtypeStruct((prompts, prompt_len), np.int32)
    mask = jax.ShapeDtypeStruct((prompts, prompt_len), bool)
    compiled = prefill.lower(sharded, tokens, mask).compile()
    _, tok_sh, _ = compiled.input_shardings[0]
    assert tok_sh.shard_shape(tokens.shape) == (prompts // row_shards, prompt_len)
    out_shapes = jax.eval_shape(prefill, sharded, tokens, mask)
    logits, cache, kv_mask, lengths = per_device(compiled.output_shardings, out_shapes)
    rows = prompts * samples
    assert logits == (rows // row_shards, CFG.vocab_size)
    assert cache.k == (CFG.num_layers, rows // row_shards, CFG.num_kv_heads // head_shards,
                       prompt_len + new, CFG.head_dim)
    assert kv_mask == (rows // row_shards, prompt_len + new) and lengths == (rows // row_shards,)

    key = jax.ShapeDtypeStruct((2,), np.uint32)
    scalar = lambda dtype: jax.ShapeDtypeStruct((), dtype)  # noqa: E731
    args = (sharded, out_shapes[1],
            DecodeStart(out_shapes[0], *out_shapes[2:], jax.ShapeDtypeStruct((rows,), bool),
                        jax.ShapeDtypeStruct((rows,), bool)),
            SamplingInputs(key, scalar(np.float32), scalar(np.int32), scalar(np.float32),
                           jax.ShapeDtypeStruct((16,), np.int32)))
    compiled = decode.lower(*args).compile()
    out_tokens, out_logps, done, steps, out_cache = per_device(
        compiled.output_shardings, jax.eval_shape(decode, *args))
    assert out_tokens == out_logps == (rows // row_shards, new)
    assert done == (rows // row_shards,) and steps == ()
    assert out_cache.k == cache.k
    assert per_device(compiled.input_shardings[0][1], args[1]).v == cache.v
    # XLA's buffers per device: even with every parameter counted in full, less than half
    # of the whole cache (each device holds its share of it)
    full_cache = 2 * 4 * CFG.num_layers * rows * CFG.num_kv_heads * (prompt_len + new) * 16
    full_params = sum(x.nbytes for x in jax.tree.leaves(params))
    assert compiled.memory_analysis().argument_size_in_bytes - full_params < full_cache / 2


@pytest.mark.parametrize("temperature, greedy_samples", [(0.0, 0), (1.0, 0), (1.0, 1)])
def test_sharded_sampler_gives_the_one_device_tokens(params, temperature, greedy_samples):
    kwargs = dict(temperature=temperature, num_samples=2, greedy_samples=greedy_samples, seed=7,
                  stop_ids=[3])
    one = generate_with_params(CFG, params, PROMPTS, 10, **kwargs)
    sharded = on_mesh(params, {"data": 2, "fsdp": 2, "tensor": 2})
    mesh = generate_with_params(CFG, sharded, PROMPTS, 10, **kwargs)  # 3 prompts padded to 4
    assert mesh.tokens == one.tokens
    np.testing.assert_array_equal(mesh.finished, one.finished)
    assert mesh.num_steps == one.num_steps
    for a, b in zip(mesh.logprobs, one.logprobs):
        np.testing.assert_allclose(a, b, atol=2e-5)
