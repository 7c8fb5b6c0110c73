"""Models besides the policy on the mesh: the KL reference is placed by the rule table (the
policy's shardings), shares the loaded arrays, and is not built when rl.beta = 0."""

import jax
import numpy as np
import pytest

from configs import tiny
from ssp_jax import sharding
from ssp_jax.models import load
from ssp_jax.train import Trainer

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")


def mesh_trainer(tmp_path, beta):
    cfg = tiny.get_config()
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 2, 2, 2
    cfg.rl.beta = beta
    cfg.model.seed = 3
    return Trainer(cfg, tmp_path)


@pytest.mark.slow
def test_reference_lands_with_the_rule_table_shardings(tmp_path):
    trainer = mesh_trainer(tmp_path, beta=0.05)
    model, _ = load("tiny-random", seed=3)
    axes = sharding.param_logical_axes(model)
    ref = trainer.ref_params
    expected = jax.tree.map(
        lambda a, x: sharding.logical_sharding(a, x.shape, trainer.mesh, sharding.TRAIN_RULES),
        axes, ref, is_leaf=lambda a: isinstance(a, tuple))
    for x, s in zip(jax.tree.leaves(ref), jax.tree.leaves(expected)):
        assert x.sharding.is_equivalent_to(s, x.ndim)
    assert ref["layers"]["q_proj"].sharding.spec == jax.P(None, "fsdp", "tensor", None)
    # the policy's shardings and the initial values
    for r, p, init in zip(jax.tree.leaves(ref), jax.tree.leaves(trainer.state.params),
                          jax.tree.leaves(model.params())):
        assert r.sharding.is_equivalent_to(p.sharding, r.ndim)
        np.testing.assert_array_equal(np.asarray(r), np.asarray(init))
    trainer.step(0)  # the update donates the policy state; the reference stays the initial one
    assert trainer.ref_params is ref
    moved = False
    for r, p, init in zip(jax.tree.leaves(ref), jax.tree.leaves(trainer.state.params),
                          jax.tree.leaves(model.params())):
        np.testing.assert_array_equal(np.asarray(r), np.asarray(init))
        moved |= not np.array_equal(np.asarray(p), np.asarray(init))
    assert moved


def test_no_reference_without_a_kl_term(tmp_path):
    trainer = mesh_trainer(tmp_path, beta=0.0)
    assert trainer.ref_params is None
    assert trainer.layout.row_shards == 4  # data x fsdp
    for groups, shardings in zip(trainer.layout.num_groups, trainer.batch_shardings):
        assert groups % 4 == 0  # update groups padded to whole groups per row shard
        assert shardings.tokens.spec[0] == ("data", "fsdp")


def test_optimizer_moments_are_sharded_like_their_parameters(tmp_path):
    trainer = mesh_trainer(tmp_path, beta=0.0)
    adam = trainer.state.opt_state[1][0]
    for moments in (adam.mu, adam.nu):
        for m, p in zip(jax.tree.leaves(moments), jax.tree.leaves(trainer.state.params)):
            assert m.sharding.is_equivalent_to(p.sharding, p.ndim)
    assert adam.mu["layers"]["q_proj"].sharding.spec == jax.P(None, "fsdp", "tensor", None)
