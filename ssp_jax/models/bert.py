"""BERT encoder (Flax NNX) with mean pooling: token ids -> L2-normalised sentence embeddings.

The network of all-MiniLM-L6-v2 and any Hugging Face `BertModel` with absolute positions:
post-norm blocks (attention, residual, LayerNorm; GELU MLP, residual, LayerNorm). Layer weights
are stacked on a leading `layers` axis and run under `jax.lax.scan`; every parameter carries
`logical_axes` metadata with the decoder's names (`ssp_jax.models.transformer.LOGICAL_AXES`,
plus None for the position and token-type tables) so `ssp_jax.sharding` rules can place it.

Shapes: B batch, T tokens, D hidden, H heads, Dh head dim, F MLP width, V vocab,
P positions, L layers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Params = dict[str, Any]
_ACTIVATIONS = {"gelu": lambda x: jax.nn.gelu(x, approximate=False),
                "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
                "relu": jax.nn.relu}
_MASK_VALUE = -1e30


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT `config.json` the encoder needs."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads "
                             f"{self.num_heads}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of "
                             f"{', '.join(_ACTIVATIONS)}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any], where: str = "config.json") -> "BertConfig":
        """From a parsed HF `config.json`; ValueError naming `where` for a non-BERT config."""
        if hf.get("model_type") != "bert":
            raise ValueError(f"{where}: model_type {hf.get('model_type')!r} is not 'bert'")
        kind = hf.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise ValueError(f"{where}: position_embedding_type {kind!r} is not supported "
                             "(only 'absolute')")
        return cls(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
                   num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
                   intermediate_size=hf["intermediate_size"],
                   max_positions=hf["max_position_embeddings"],
                   type_vocab_size=hf.get("type_vocab_size", 2),
                   layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                   hidden_act=hf.get("hidden_act", "gelu"))


def param_shapes(cfg: BertConfig) -> dict[str, Any]:
    """Nested name -> (shape, logical axes) of every parameter; layer shapes include `L`."""
    d, f, h, hd, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.head_dim, \
        cfg.num_layers

    def stacked(shape: tuple[int, ...], axes: tuple[str, ...]):
        return (n, *shape), ("layers", *axes)

    return {
        "embed": ((cfg.vocab_size, d), ("vocab", "embed")),
        "positions": ((cfg.max_positions, d), (None, "embed")),
        "token_types": ((cfg.type_vocab_size, d), (None, "embed")),
        "embed_norm_scale": ((d,), ("embed",)),
        "embed_norm_bias": ((d,), ("embed",)),
        "layers": {
            "q_proj": stacked((d, h, hd), ("embed", "heads", "head_dim")),
            "k_proj": stacked((d, h, hd), ("embed", "heads", "head_dim")),
            "v_proj": stacked((d, h, hd), ("embed", "heads", "head_dim")),
            "q_bias": stacked((h, hd), ("heads", "head_dim")),
            "k_bias": stacked((h, hd), ("heads", "head_dim")),
            "v_bias": stacked((h, hd), ("heads", "head_dim")),
            "o_proj": stacked((h, hd, d), ("heads", "head_dim", "embed")),
            "o_bias": stacked((d,), ("embed",)),
            "attn_norm_scale": stacked((d,), ("embed",)),
            "attn_norm_bias": stacked((d,), ("embed",)),
            "up_proj": stacked((d, f), ("embed", "mlp")),
            "up_bias": stacked((f,), ("mlp",)),
            "down_proj": stacked((f, d), ("mlp", "embed")),
            "down_bias": stacked((d,), ("embed",)),
            "mlp_norm_scale": stacked((d,), ("embed",)),
            "mlp_norm_bias": stacked((d,), ("embed",)),
        },
    }


class _Params(nnx.Module):
    """One level of the nested parameter dict as `nnx.Param`s with `logical_axes` metadata."""

    def __init__(self, values: Params, shapes: dict[str, Any]):
        self._names = tuple(values)
        for name in self._names:
            value = values[name]
            if isinstance(value, dict):
                setattr(self, name, _Params(value, shapes[name]))
            else:
                setattr(self, name, nnx.Param(jnp.asarray(value),
                                              logical_axes=shapes[name][1]))

    def arrays(self) -> Params:
        out = {}
        for name in self._names:
            v = getattr(self, name)
            out[name] = v.arrays() if isinstance(v, _Params) else v[...]
        return out


class BertEncoder(_Params):
    """The encoder's parameters (with logical axes) and config. `params` is the nested dict
    of `param_shapes(cfg)`, e.g. from `params_from_hf`; run it with the pure `encode`, or
    call it: token ids `[B, T]` int32 + mask `[B, T]` bool -> `[B, D]` f32 unit rows."""

    def __init__(self, cfg: BertConfig, params: Params):
        self.config = cfg
        super().__init__(params, param_shapes(cfg))

    def params(self) -> Params:
        """Parameter arrays as the nested dict `encode` takes (the layout of
        `ssp_jax.sharding.param_logical_axes(self)`)."""
        return self.arrays()

    def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
        return encode(self.params(), self.config, tokens, mask)


# ----------------------------------------------------------------------------- pure functions


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """LayerNorm over the last axis, computed in float32."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def hidden_states(params: Params, cfg: BertConfig, tokens: jax.Array,
                  mask: jax.Array) -> jax.Array:
    """Last-layer hidden states `[B, T, D]` f32 of tokens `[B, T]` int32 (token type 0,
    positions 0..T-1); `mask [B, T]` bool hides padding keys."""
    t = tokens.shape[1]
    if t > cfg.max_positions:
        raise ValueError(f"{t} tokens exceed the model's {cfg.max_positions} positions")
    x = (jnp.take(params["embed"], tokens, axis=0) + params["positions"][:t]
         + params["token_types"][0])
    x = layer_norm(x, params["embed_norm_scale"], params["embed_norm_bias"], cfg.layer_norm_eps)
    act = _ACTIVATIONS[cfg.hidden_act]
    key_mask = mask[:, None, None, :]  # [B, 1, 1, T]: heads and queries broadcast

    def block(x, lp):
        q = jnp.einsum("btd,dhk->bhtk", x, lp["q_proj"]) + lp["q_bias"][:, None]
        k = jnp.einsum("btd,dhk->bhtk", x, lp["k_proj"]) + lp["k_bias"][:, None]
        v = jnp.einsum("btd,dhk->bhtk", x, lp["v_proj"]) + lp["v_bias"][:, None]
        scores = jnp.einsum("bhqk,bhsk->bhqs", q, k) / math.sqrt(cfg.head_dim)
        probs = jax.nn.softmax(jnp.where(key_mask, scores, _MASK_VALUE), axis=-1)
        attn = jnp.einsum("bhqs,bhsk->bqhk", probs, v)
        x = layer_norm(x + jnp.einsum("bqhk,hkd->bqd", attn, lp["o_proj"]) + lp["o_bias"],
                       lp["attn_norm_scale"], lp["attn_norm_bias"], cfg.layer_norm_eps)
        h = act(jnp.einsum("btd,df->btf", x, lp["up_proj"]) + lp["up_bias"])
        x = layer_norm(x + jnp.einsum("btf,fd->btd", h, lp["down_proj"]) + lp["down_bias"],
                       lp["mlp_norm_scale"], lp["mlp_norm_bias"], cfg.layer_norm_eps)
        return x, None

    x, _ = jax.lax.scan(block, x, params["layers"])
    return x


def encode(params: Params, cfg: BertConfig, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """Sentence embeddings `[B, D]` f32: hidden states averaged over the tokens where
    `mask [B, T]` is True, then divided by their L2 norm. An all-padding row gives zeros."""
    x = hidden_states(params, cfg, tokens, mask)
    m = mask.astype(jnp.float32)[..., None]  # [B, T, 1]
    pooled = jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1e-9)
    norm = jnp.sqrt(jnp.sum(pooled * pooled, axis=-1, keepdims=True))
    return pooled / jnp.maximum(norm, 1e-12)


# ----------------------------------------------------------------------------- HF weights

_HF_LAYER = "encoder.layer.{i}."
# our stacked name -> HF per-layer tensor name
_HF_LAYER_NAMES = {
    "q_proj": "attention.self.query.weight", "q_bias": "attention.self.query.bias",
    "k_proj": "attention.self.key.weight", "k_bias": "attention.self.key.bias",
    "v_proj": "attention.self.value.weight", "v_bias": "attention.self.value.bias",
    "o_proj": "attention.output.dense.weight", "o_bias": "attention.output.dense.bias",
    "attn_norm_scale": "attention.output.LayerNorm.weight",
    "attn_norm_bias": "attention.output.LayerNorm.bias",
    "up_proj": "intermediate.dense.weight", "up_bias": "intermediate.dense.bias",
    "down_proj": "output.dense.weight", "down_bias": "output.dense.bias",
    "mlp_norm_scale": "output.LayerNorm.weight", "mlp_norm_bias": "output.LayerNorm.bias",
}
_HF_TOP_NAMES = {
    "embed": "embeddings.word_embeddings.weight",
    "positions": "embeddings.position_embeddings.weight",
    "token_types": "embeddings.token_type_embeddings.weight",
    "embed_norm_scale": "embeddings.LayerNorm.weight",
    "embed_norm_bias": "embeddings.LayerNorm.bias",
}


def _from_hf_layer(name: str, w: np.ndarray, cfg: BertConfig) -> np.ndarray:
    """One layer's HF tensor (`[out, in]` matrices) -> our per-layer layout."""
    d, h, hd = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    if name in ("q_proj", "k_proj", "v_proj"):
        return w.T.reshape(d, h, hd)
    if name in ("q_bias", "k_bias", "v_bias"):
        return w.reshape(h, hd)
    if name == "o_proj":
        return w.T.reshape(h, hd, d)
    if name in ("up_proj", "down_proj"):
        return w.T
    return w


def params_from_hf(cfg: BertConfig, tensors: Mapping[str, np.ndarray],
                   where: str = "model.safetensors") -> Params:
    """Our nested float32 parameter dict from HF-named tensors, with or without the `bert.`
    prefix of task models (`BertForMaskedLM`, ...); KeyError naming `where` and the tensor
    when one is missing, ValueError for a shape that does not match `cfg`."""
    prefix = "bert." if any(k.startswith("bert.embeddings.") for k in tensors) else ""

    def get(name: str) -> np.ndarray:
        if prefix + name not in tensors:
            raise KeyError(f"{where}: tensor {prefix + name!r} not found")
        return np.asarray(tensors[prefix + name], np.float32)

    shapes = param_shapes(cfg)
    params: Params = {name: get(hf) for name, hf in _HF_TOP_NAMES.items()}
    params["layers"] = {
        name: np.stack([_from_hf_layer(name, get(_HF_LAYER.format(i=i) + hf), cfg)
                        for i in range(cfg.num_layers)])
        for name, hf in _HF_LAYER_NAMES.items()}
    for name, value in [*params.items(), *params["layers"].items()]:
        if name == "layers":
            continue
        expected = shapes[name][0] if name in shapes else shapes["layers"][name][0]
        if value.shape != expected:
            raise ValueError(f"{where}: {name} has shape {value.shape}, config.json implies "
                             f"{expected}")
    return params
