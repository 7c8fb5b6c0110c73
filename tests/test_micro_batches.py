"""Strided micro-batches: each keeps its groups spread over every data shard (read from the
compiled program on 8 fake devices), and accumulation over them stays exact on the mesh."""

import dataclasses
import functools

import jax
import numpy as np
import pytest
from flax import nnx

from ssp_jax import sharding
from ssp_jax.models import Transformer
from ssp_jax.rl.batch import TrainBatch
from ssp_jax.rl.update import init_train_state, make_train_step, split_micro_batches
from ssp_jax.sections import rl_section
from ssp_jax.train import BATCH_AXES
from tests.test_sharding import CFG, place_params, random_batch

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")


def batch_shardings(batch, mesh):
    return TrainBatch(*[sharding.logical_sharding(a, np.shape(x), mesh, sharding.TRAIN_RULES)
                        for a, x in zip(BATCH_AXES, batch)])


def test_micro_batch_m_holds_groups_m_plus_multiples_of_n():
    batch = random_batch(8, 3, 5, 4, 50)
    micro = split_micro_batches(batch, 4)
    for m in range(4):
        groups = [m, m + 4]
        np.testing.assert_array_equal(micro.prompt_tokens[m], batch.prompt_tokens[groups])
        rows = [g * 3 + s for g in groups for s in range(3)]
        np.testing.assert_array_equal(micro.tokens[m], batch.tokens[rows])
        np.testing.assert_array_equal(micro.advantages[m], batch.advantages[rows])


@pytest.mark.parametrize("pinned", [False, True])
def test_compiled_micro_batches_are_spread_over_all_data_shards(pinned):
    mesh = sharding.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    groups, size, n = 32, 2, 4  # 8 groups per micro-batch, one per device
    batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype),
                         random_batch(groups, size, 16, 6, CFG.vocab_size))
    shardings = batch_shardings(batch, mesh)
    split = functools.partial(split_micro_batches, n=n, shardings=shardings if pinned else None)
    compiled = jax.jit(split, in_shardings=(shardings,)).lower(batch).compile()
    out = jax.eval_shape(split, batch)
    per_device = jax.tree.map(lambda s, x: s.shard_shape(x.shape), compiled.output_shardings,
                              out)
    assert per_device.prompt_tokens == (n, groups // n // 8, 16)
    assert per_device.tokens == (n, groups // n // 8 * size, 6)
    assert per_device.advantages == (n, groups // n // 8 * size)
    # every micro-batch's rows sit on all 8 devices, one group's worth each
    for s in jax.tree.leaves(compiled.output_shardings):
        assert len(s.device_set) == 8 and s.spec[0] is None


def test_micro_batches_on_the_mesh_accumulate_exactly():
    model = Transformer(CFG, rngs=nnx.Rngs(0))
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    batch = random_batch(16, 2, 16, 6, CFG.vocab_size)
    shardings = batch_shardings(batch, mesh)
    cfg = rl_section(learning_rate=1e-3, beta=0.05)
    opt = cfg.optimizer(num_steps=100)
    results = []
    for n in (1, 4):
        params, param_sh = place_params(model.params(), model, mesh)
        ref, _ = place_params(model.params(), model, mesh)
        state = jax.jit(lambda p: init_train_state(p, opt))(params)
        step = make_train_step(CFG, dataclasses.replace(cfg, micro_batches=n), opt,
                               temperature=1.0, num_steps=100,
                               state_shardings=jax.tree.map(lambda x: x.sharding, state),
                               batch_shardings=(shardings,), ref_shardings=param_sh)
        results.append(step(state, ref, (jax.device_put(batch, shardings),), None))
    (one, m1), (four, m4) = results
    for key in ("loss", "kl", "grad_norm", "token_count"):
        np.testing.assert_allclose(float(m4[key]), float(m1[key]), rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(four.params), jax.tree.leaves(one.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)
