"""The memory estimate against XLA's memory analysis of the compiled update and sampler, on
abstract inputs sharded over 8 fake devices (nothing allocated)."""

import dataclasses

import jax
import pytest

from configs import tiny
from ssp_jax import memory, sharding
from ssp_jax.config import validate
from ssp_jax.models import ModelConfig, lora

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
# wide enough that parameters, activations and logits dominate XLA's fixed overheads
SHAPE = ModelConfig("llama", 8192, 256, 768, 4, 4, 2, 64)


def run_config(remat: bool, lora_rank: int = 0):
    c = tiny.get_config()
    c.model.lora.rank = lora_rank
    c.selfplay.max_prompt_tokens = 128
    c.selfplay.attacker_max_tokens = c.selfplay.defender_max_tokens = 32
    c.model.remat = remat
    return validate(c)


@pytest.mark.slow
@pytest.mark.parametrize("remat", [False, True])
def test_update_estimate_is_within_a_factor_of_three_of_the_compiled_peak(remat):
    """The estimate counts the larger role's micro-batch; XLA may hold both roles' at once
    (measured here: 0.56 without remat)."""
    cfg = run_config(remat)
    mesh = sharding.make_mesh(dataclasses.asdict(cfg.mesh))
    with jax.set_mesh(mesh):
        compiled = memory.compiled_update(cfg, SHAPE, mesh)
    parts = memory.estimate(cfg, SHAPE, 8, "xla")
    ratio = memory.update_estimate(cfg, parts, SHAPE, 8) / compiled.peak
    assert 1 / 3 < ratio < 1.5, (ratio, compiled)
    # the donated state is aliased, and is each device's share of it (FSDP over 8)
    state_bytes = SHAPE.num_params * (4 + 8) + 4
    assert compiled.aliased == pytest.approx(state_bytes / 8, rel=0.01)


@pytest.mark.slow
def test_lora_update_holds_only_adapter_state_and_the_estimate_follows():
    cfg = run_config(True, lora_rank=8)
    mesh = sharding.make_mesh(dataclasses.asdict(cfg.mesh))
    with jax.set_mesh(mesh):
        compiled = memory.compiled_update(cfg, SHAPE, mesh)
    adapters = lora.num_params(SHAPE.replace(lora=cfg.model.lora))
    # the donated state is the adapters and their two moments, spread over the 8 devices
    assert adapters * 12 / 8 <= compiled.aliased <= adapters * 12
    assert compiled.aliased < SHAPE.num_params * 12 / 8 / 5  # under a fifth of full FT (rank 8)
    parts = memory.estimate(cfg, SHAPE, 8, "xla")
    ratio = memory.update_estimate(cfg, parts, SHAPE, 8) / compiled.peak
    assert 1 / 3 < ratio < 3, (ratio, compiled)


@pytest.mark.slow
def test_sampler_estimate_is_within_a_factor_of_four_of_the_compiled_peak():
    cfg = run_config(False)
    mesh = sharding.make_mesh(dataclasses.asdict(cfg.mesh))
    with jax.set_mesh(mesh):
        compiled = memory.compiled_sampler(cfg, SHAPE, mesh)
    parts = memory.estimate(cfg, SHAPE, 8, "xla")
    ratio = memory.sampler_estimate(cfg, parts, SHAPE, 8) / compiled.peak
    assert 0.25 < ratio < 4, (ratio, compiled)


def test_cli_prints_the_estimate_beside_the_compiled_analysis(capsys):
    assert memory.main(["--config", "configs/tiny.py", "--devices", "8"]) == 0
    out = capsys.readouterr().out
    assert "XLA memory analysis on 8 cpu devices" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith(("update", "sampler"))}
    for name in ("update", "sampler"):
        estimate, compiled = float(rows[name][1]), float(rows[name][2])
        assert compiled > 0 and estimate >= 0


@pytest.mark.slow
def test_the_update_with_a_decline_ranking_batch_compiles_on_the_mesh():
    """`compiled_update` lowers the ranking batch (rl.rank_weight) sharded like the update's
    rows; it adds activations, not donated state."""
    cfg = run_config(True)
    ranked = dataclasses.replace(cfg, rl=dataclasses.replace(cfg.rl, rank_weight=1.0))
    mesh = sharding.make_mesh(dataclasses.asdict(cfg.mesh))
    with jax.set_mesh(mesh):
        plain = memory.compiled_update(cfg, SHAPE, mesh)
        compiled = memory.compiled_update(ranked, SHAPE, mesh)
    assert compiled.aliased == plain.aliased
    assert compiled.peak > 0
