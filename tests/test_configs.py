"""Every shipped config validates, and the memory estimate adds up."""

import pathlib

import pytest
from ml_collections.config_flags import config_flags

from ssp_jax.config import validate
from ssp_jax.memory import estimate, format_table, model_shape

CONFIGS = sorted(p for p in (pathlib.Path(__file__).parents[1] / "configs").glob("*.py")
                 if p.name != "__init__.py")


def load_config(path):
    return config_flags.ConfigFileFlagParser(name="config").parse(str(path))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_validates(path):
    cfg = validate(load_config(path))
    assert cfg.train.num_steps > 0
    assert all(groups % cfg.rl.micro_batches == 0 for groups in cfg.selfplay.num_groups)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_memory_estimate_sums_its_parts(path):
    cfg = validate(load_config(path))
    shape = model_shape(cfg.model.spec)
    parts = estimate(cfg, shape)
    assert all(v > 0 for v in parts.values())
    optimizer_bytes = 8 * shape.num_params  # two float32 Adam moments
    assert parts["optimizer"] == optimizer_bytes
    table = format_table(parts, 8)
    total = float(table.splitlines()[-1].split()[1])
    assert total == pytest.approx(sum(parts.values()) / 2**30, abs=0.01)


def test_model_shape_of_a_folder_reads_its_config(tmp_path):
    (tmp_path / "config.json").write_text(
        '{"model_type": "qwen2", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, '
        '"num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1}')
    shape = model_shape(str(tmp_path))
    assert shape.architecture == "qwen2" and shape.attention_bias and shape.head_dim == 4
    with pytest.raises(ValueError, match="cannot tell the shape"):
        model_shape(str(tmp_path / "missing"))


@pytest.mark.parametrize("overrides", [{}, {"tie_word_embeddings": False},
                                       {"architecture": "qwen2", "attention_bias": True},
                                       {"architecture": "qwen3", "qk_norm": True}])
def test_num_params_counts_every_parameter(overrides):
    import jax
    from flax import nnx

    from ssp_jax.models import Transformer
    from ssp_jax.models.tiny import tiny_config

    cfg = tiny_config(**overrides)
    state = nnx.state(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    assert cfg.num_params == sum(x.size for x in jax.tree.leaves(state))
