"""Per-layer parameter shapes of the decoder: what the transformer allocates, the weight I/O
reads and the LoRA adapters wrap (here, below all three, so none imports another for them)."""

from __future__ import annotations

from ssp_jax.models.config import ModelConfig

Spec = tuple[tuple[int, ...], tuple[str, ...]]  # (shape, logical axes)


def layer_param_shapes(cfg: ModelConfig) -> dict[str, Spec]:
    """Name -> (per-layer shape, logical axes) of every stacked decoder-layer parameter."""
    d, f, h, k, hd = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads,
                      cfg.head_dim)
    shapes = {
        "attn_norm": ((d,), ("embed",)),
        "q_proj": ((d, h, hd), ("embed", "heads", "head_dim")),
        "k_proj": ((d, k, hd), ("embed", "kv_heads", "head_dim")),
        "v_proj": ((d, k, hd), ("embed", "kv_heads", "head_dim")),
        "o_proj": ((h, hd, d), ("heads", "head_dim", "embed")),
        "mlp_norm": ((d,), ("embed",)),
        "gate_proj": ((d, f), ("embed", "mlp")),
        "up_proj": ((d, f), ("embed", "mlp")),
        "down_proj": ((f, d), ("mlp", "embed")),
    }
    if cfg.attention_bias:
        shapes["q_bias"] = ((h, hd), ("heads", "head_dim"))
        shapes["k_bias"] = ((k, hd), ("kv_heads", "head_dim"))
        shapes["v_bias"] = ((k, hd), ("kv_heads", "head_dim"))
    if cfg.qk_norm:
        shapes["q_norm"] = ((hd,), ("head_dim",))
        shapes["k_norm"] = ((hd,), ("head_dim",))
    return shapes
