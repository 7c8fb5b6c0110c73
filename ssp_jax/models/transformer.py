"""Decoder-only transformer (Flax NNX) with scanned layers and a KV-cache decode path.

Layer weights are stacked on a leading `layers` axis and the blocks run under `jax.lax.scan`,
so compile time does not grow with depth. Every parameter carries `logical_axes` metadata
(names from `LOGICAL_AXES`) that a mesh rule table maps to device axes.

Shapes: B batch, T new tokens, S cache slots, D hidden, H query heads, K kv heads,
G = H // K, Dh head dim, F MLP width, V vocab, L layers.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ssp_jax import sharding
from ssp_jax.models.attention import PAD_SEGMENT, REAL_SEGMENT, MaskPattern, self_attention
from ssp_jax.models import lora
from ssp_jax.models.config import ModelConfig
from ssp_jax.models.shapes import layer_param_shapes

LOGICAL_AXES = ("vocab", "embed", "heads", "kv_heads", "head_dim", "mlp", "layers")
_MASK_VALUE = -1e30

Params = dict[str, Any]


class KVCache(NamedTuple):
    """Per-layer keys and values: k, v `[L, B, K, S, Dh]` in the compute dtype (heads before
    slots, so attention reads each head's keys contiguously)."""

    k: jax.Array
    v: jax.Array


# logical axes of a KVCache array, mapped to the mesh by the rule table like parameters
CACHE_AXES = ("layers", "cache_batch", "kv_heads", "cache_seq", "head_dim")


def init_cache(cfg: ModelConfig, batch: int, length: int) -> KVCache:
    """An all-zero cache with `length` slots per row."""
    shape = (cfg.num_layers, batch, cfg.num_kv_heads, length, cfg.head_dim)
    return KVCache(jnp.zeros(shape, cfg.jnp_dtype), jnp.zeros(shape, cfg.jnp_dtype))


def _init_value(name: str, shape: tuple[int, ...], key: jax.Array, dtype: jnp.dtype) -> jax.Array:
    if name.endswith("norm"):
        return jnp.ones(shape, dtype)
    if name.endswith("bias"):
        return jnp.zeros(shape, dtype)
    return (0.02 * jax.random.normal(key, shape, jnp.float32)).astype(dtype)


class DecoderLayers(nnx.Module):
    """All decoder blocks' weights, stacked on a leading `layers` axis."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.param_names = tuple(layer_param_shapes(cfg))
        for name, (shape, axes) in layer_param_shapes(cfg).items():
            value = _init_value(name, (cfg.num_layers, *shape), rngs.params(), cfg.jnp_param_dtype)
            setattr(self, name, nnx.Param(value, logical_axes=("layers", *axes)))

    def arrays(self) -> Params:
        return {name: getattr(self, name)[...] for name in self.param_names}


class Transformer(nnx.Module):
    """Causal LM: token ids `[B, T]` int32 -> logits `[B, T, V]` float32."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        pd = cfg.jnp_param_dtype
        self.embed = nnx.Param(_init_value("embed", (cfg.vocab_size, cfg.hidden_size),
                                           rngs.params(), pd), logical_axes=("vocab", "embed"))
        self.layers = DecoderLayers(cfg, rngs=rngs)
        self.final_norm = nnx.Param(jnp.ones((cfg.hidden_size,), pd), logical_axes=("embed",))
        if not cfg.tie_word_embeddings:
            self.lm_head = nnx.Param(_init_value("lm_head", (cfg.hidden_size, cfg.vocab_size),
                                                 rngs.params(), pd),
                                     logical_axes=("embed", "vocab"))

    def params(self) -> Params:
        """Parameter arrays as a nested dict (the layout `forward` and the weight I/O use)."""
        params = {"embed": self.embed[...], "layers": self.layers.arrays(),
                  "final_norm": self.final_norm[...]}
        if not self.config.tie_word_embeddings:
            params["lm_head"] = self.lm_head[...]
        return params

    def __call__(self, tokens: jax.Array, positions: jax.Array | None = None,
                 attention_mask: jax.Array | None = None) -> jax.Array:
        """Full causal forward. tokens/positions `[B, T]` int32, attention_mask `[B, T]` bool
        (False = padding key); positions default to `arange(T)`. Returns logits `[B, T, V]` f32."""
        return forward(self.params(), self.config, tokens, positions, attention_mask)

    def prefill(self, tokens: jax.Array, positions: jax.Array, attention_mask: jax.Array,
                cache: KVCache) -> tuple[jax.Array, KVCache]:
        """Causal forward over a left-padded prompt that writes cache slots `[0, T)`; see
        `prefill`."""
        return prefill(self.params(), self.config, tokens, positions, attention_mask, cache)

    def decode_step(self, tokens: jax.Array, positions: jax.Array, cache: KVCache,
                    slot: jax.Array, kv_mask: jax.Array) -> tuple[jax.Array, KVCache]:
        """One token per row at cache `slot`; see `decode_step`."""
        return decode_step(self.params(), self.config, tokens, positions, cache, slot, kv_mask)


# ----------------------------------------------------------------------------- pure functions


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """`x / sqrt(mean(x²) + eps) * weight`, normalized in float32, returned in x.dtype."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype) * y.astype(x.dtype)


def rope_frequencies(cfg: ModelConfig) -> jax.Array:
    """Inverse rotary frequencies `[Dh/2]` f32, with HF `linear` / `llama3` scaling applied."""
    hd = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
    rope = cfg.rope_params
    kind = rope.get("rope_type", "default")
    if kind == "linear":
        inv = inv / rope["factor"]
    elif kind == "llama3":
        factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
        old_len = rope["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = jnp.where(wavelen > old_len / low, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        inv = jnp.where(medium, smoothed, scaled)
    return inv


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotates `x [B, T, N, Dh]` by `positions [B, T]` (HF rotate-half convention)."""
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, Dh/2]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def qkv_projections(lp: Params, cfg: ModelConfig, x: jax.Array, positions: jax.Array,
                    inv_freq: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Projected, normed and rotated q `[B,T,H,Dh]`; k, v head-major `[B,K,T,Dh]`."""
    dt = x.dtype
    q = lora.project(lp, cfg, "q_proj", "btd,dhk->bthk", x)
    k = lora.project(lp, cfg, "k_proj", "btd,dhk->bthk", x)
    v = lora.project(lp, cfg, "v_proj", "btd,dhk->bthk", x)
    if cfg.attention_bias:
        q = q + lp["q_bias"].astype(dt)
        k = k + lp["k_bias"].astype(dt)
        v = v + lp["v_bias"].astype(dt)
    if cfg.qk_norm:
        q = rms_norm(q, lp["q_norm"], cfg.rms_norm_eps)
        k = rms_norm(k, lp["k_norm"], cfg.rms_norm_eps)
    k = apply_rope(k, positions, inv_freq)
    return apply_rope(q, positions, inv_freq), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)


def mlp_and_out(lp: Params, cfg: ModelConfig, x: jax.Array, attn: jax.Array) -> jax.Array:
    """Residual adds of the attention output projection and the SwiGLU MLP."""
    x = x + lora.project(lp, cfg, "o_proj", "bthk,hkd->btd", attn)
    h = rms_norm(x, lp["mlp_norm"], cfg.rms_norm_eps)
    gate = lora.project(lp, cfg, "gate_proj", "btd,df->btf", h)
    up = lora.project(lp, cfg, "up_proj", "btd,df->btf", h)
    return x + lora.project(lp, cfg, "down_proj", "btf,fd->btd", jax.nn.silu(gate) * up)


def embed_tokens(params: Params, cfg: ModelConfig, tokens: jax.Array) -> jax.Array:
    """Token ids `[B, T]` int32 -> embeddings `[B, T, D]` in the compute dtype."""
    return jnp.take(params["embed"], tokens, axis=0).astype(cfg.jnp_dtype)


def lm_logits(params: Params, cfg: ModelConfig, x: jax.Array) -> jax.Array:
    """Final norm and LM head: hidden states `[B, T, D]` -> logits `[B, T, V]` f32."""
    x = rms_norm(x, params["final_norm"], cfg.rms_norm_eps)
    if cfg.tie_word_embeddings:
        return jnp.einsum("btd,vd->btv", x, params["embed"].astype(x.dtype),
                          preferred_element_type=jnp.float32)
    return jnp.einsum("btd,dv->btv", x, params["lm_head"].astype(x.dtype),
                      preferred_element_type=jnp.float32)


def _check_window(cfg: ModelConfig, length: int) -> None:
    if cfg.sliding_window is not None and length > cfg.sliding_window:
        raise ValueError(
            f"sequence of {length} tokens exceeds the model's sliding window "
            f"({cfg.sliding_window}); sliding-window attention is not implemented"
        )


def _maybe_remat(fn, cfg: ModelConfig):
    return jax.checkpoint(fn) if cfg.remat else fn


def _segments(real: jax.Array) -> jax.Array:
    """Segment ids `[B, T]` int32 of a real-token mask: padding is its own segment."""
    return jnp.where(real, REAL_SEGMENT, PAD_SEGMENT).astype(jnp.int32)


def _decoder(params: Params, cfg: ModelConfig, tokens: jax.Array, positions: jax.Array,
             pattern: MaskPattern, segment_ids: jax.Array,
             dropout_key: jax.Array | None = None) -> jax.Array:
    """The scanned decoder blocks: tokens `[B, T]`, positions `[B, T]`; a query sees keys the
    static `pattern` allows with its segment id (`segment_ids [B, T]`). Returns the last
    block's output `[B, T, D]` (before the final norm). A `dropout_key` turns on LoRA
    dropout (training only)."""
    inv_freq = rope_frequencies(cfg)
    layers = lora.layer_inputs(params)
    if dropout_key is not None:
        layers = {**layers, "lora_key": jax.random.split(dropout_key, cfg.num_layers)}

    def block(x, lp):
        x = sharding.constrain(x, ("batch", "seq", None))  # rows stay on their devices
        h = rms_norm(x, lp["attn_norm"], cfg.rms_norm_eps)
        q, k, v = qkv_projections(lp, cfg, h, positions, inv_freq)
        out = self_attention(q, k, v, pattern, segment_ids, cfg.attention)
        return mlp_and_out(lp, cfg, x, out), None

    x, _ = jax.lax.scan(_maybe_remat(block, cfg), embed_tokens(params, cfg, tokens), layers)
    return x


def forward(params: Params, cfg: ModelConfig, tokens: jax.Array,
            positions: jax.Array | None = None,
            attention_mask: jax.Array | None = None) -> jax.Array:
    """Pure causal forward: tokens `[B, T]` int32 -> logits `[B, T, V]` f32."""
    b, t = tokens.shape
    _check_window(cfg, t)
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    if attention_mask is None:
        attention_mask = jnp.ones((b, t), bool)
    x = _decoder(params, cfg, tokens, positions, MaskPattern(), _segments(attention_mask))
    return lm_logits(params, cfg, x)


def completion_hidden_states(params: Params, cfg: ModelConfig, prompt_tokens: jax.Array,
                             prompt_mask: jax.Array, tokens: jax.Array,
                             dropout_key: jax.Array | None = None) -> jax.Array:
    """Hidden states that predict the completion tokens of N prompts with S completions each,
    every prompt computed once per group; the same values as running each
    `prompt + completion` row on its own.

    prompt_tokens `[N, P]` int32, right-padded, with `prompt_mask [N, P]` bool; tokens
    `[N * S, C]` int32, row r completing prompt r // S. Returns `[N * S, C, D]` (before the
    final norm): entry k is the state at the position before completion token k (the prompt's
    last token for k = 0).

    Each group runs as one sequence, its prompt followed by its S completions, under a block
    mask: prompt tokens attend causally to the prompt, completion tokens to the prompt and
    causally to their own completion; positions restart after the prompt for every
    completion. Matmul work is one prompt plus S completions per group. The XLA kernel
    computes scores over the whole group sequence, (P + S * C)² per group and head; the fused
    kernels (`model.attention`) never hold them, and splash skips fully masked blocks.
    """
    n, p = prompt_tokens.shape
    rows, c = tokens.shape
    s = rows // n
    _check_window(cfg, p + c)  # the longest row a completion sees
    length = p + s * c
    seq = jnp.concatenate([prompt_tokens, tokens.reshape(n, s * c)], axis=1)  # [N, L]
    prompt_len = jnp.sum(prompt_mask, axis=1, dtype=jnp.int32)  # [N]
    idx = jnp.arange(length, dtype=jnp.int32)
    in_prompt = idx < p
    offset = jnp.where(in_prompt, idx, (idx - p) % c)  # position within the prompt / completion
    positions = jnp.where(in_prompt[None], idx[None], prompt_len[:, None] + offset[None])
    # completion blocks see the prompt and themselves; prompt padding is its own segment
    real = jnp.concatenate([prompt_mask, jnp.ones((n, s * c), bool)], axis=1)  # [N, L]
    x = _decoder(params, cfg, seq, positions, MaskPattern(p, c), _segments(real),
                 dropout_key)  # [N, L, D]
    # predictor of completion token k: the prompt's last token (k = 0), else token k - 1
    last = jnp.maximum(prompt_len - 1, 0)[:, None]  # 0 for padding groups
    k = jnp.arange(c, dtype=jnp.int32)
    pred = jnp.where(k[None, None] == 0, last[:, :, None],
                     p + jnp.arange(s)[None, :, None] * c + k[None, None] - 1)  # [N, S, C]
    return jnp.take_along_axis(x, pred.reshape(n, s * c, 1), axis=1).reshape(rows, c, -1)


def prefill(params: Params, cfg: ModelConfig, tokens: jax.Array, positions: jax.Array,
            attention_mask: jax.Array, cache: KVCache) -> tuple[jax.Array, KVCache]:
    """Causal forward over left-padded prompts `[B, T]` that writes their keys/values to cache
    slots `[0, T)`. Returns the last position's logits `[B, V]` f32 (the only ones sampling
    needs) and the updated cache."""
    _check_window(cfg, cache.k.shape[3])
    segment_ids = _segments(attention_mask)
    inv_freq = rope_frequencies(cfg)

    def block(x, layer):
        lp, k_cache, v_cache = layer
        h = rms_norm(x, lp["attn_norm"], cfg.rms_norm_eps)
        q, k, v = qkv_projections(lp, cfg, h, positions, inv_freq)
        k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), 0, axis=2)
        v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), 0, axis=2)
        out = self_attention(q, k, v, MaskPattern(), segment_ids, cfg.attention)
        return mlp_and_out(lp, cfg, x, out), (k_cache, v_cache)

    x, (k, v) = jax.lax.scan(block, embed_tokens(params, cfg, tokens),
                             (lora.layer_inputs(params), cache.k, cache.v))
    return lm_logits(params, cfg, x[:, -1:])[:, 0], KVCache(k, v)


def decode_attention(q: jax.Array, k_cache: jax.Array, v_cache: jax.Array, mask: jax.Array,
                     k: jax.Array, v: jax.Array) -> jax.Array:
    """Attention of one new token per row over its cached slots plus itself.
    q `[B,1,H,Dh]`; k_cache/v_cache `[B,K,S,Dh]` (read only); mask `[B,S]` bool (cached slots
    it may see); k/v `[B,K,1,Dh]` the token's own key and value. Returns `[B,1,H,Dh]`.
    One softmax over both parts, computed without concatenating (which would copy the cache)."""
    b, _, h, hd = q.shape
    kv = k.shape[1]
    q = q.reshape(b, kv, h // kv, hd).astype(jnp.float32) / math.sqrt(hd)  # [B, K, G, Dh]
    cached = jnp.einsum("bkgd,bksd->bkgs", q, k_cache, preferred_element_type=jnp.float32)
    cached = jnp.where(mask[:, None, None, :], cached, _MASK_VALUE)
    own = jnp.einsum("bkgd,bkd->bkg", q, k[:, :, 0].astype(jnp.float32))[..., None]
    top = jnp.maximum(jnp.max(cached, axis=-1, keepdims=True), own)
    p_cached, p_own = jnp.exp(cached - top), jnp.exp(own - top)
    total = jnp.sum(p_cached, axis=-1, keepdims=True) + p_own
    out = jnp.einsum("bkgs,bksd->bkgd", p_cached.astype(v_cache.dtype), v_cache,
                     preferred_element_type=jnp.float32)
    out = (out + p_own * v[:, :, 0, None].astype(jnp.float32)) / total
    return out.reshape(b, 1, h, hd).astype(v.dtype)


def layers_over_cache(params: Params, cfg: ModelConfig, tokens: jax.Array,
                      positions: jax.Array, cache: KVCache, slot: jax.Array,
                      attend: Callable[..., jax.Array]) -> tuple[jax.Array, KVCache]:
    """Runs the decoder layers on `tokens [B, C]` at `positions [B, C]` against a KV cache:
    each layer's attention is `attend(q, k_cache, v_cache, k, v)` (q `[B, C, H, Dh]`, the
    layer's cache `[B, K, S, Dh]`, the chunk's own k, v `[B, K, C, Dh]`) -> `[B, C, H, Dh]`.
    Returns the final hidden states `[B, C, D]` and the cache with the chunk's keys and values
    written at slots `[slot, slot + C)` (`slot` a scalar int32).

    Layers read their cache slices as read-only scan inputs and return only the new entries,
    written for all layers by one in-place update after the scan; carrying the cache through
    the scan instead makes XLA copy it on CPU."""
    inv_freq = rope_frequencies(cfg)

    def block(x, layer):
        lp, k_cache, v_cache = layer
        h = rms_norm(x, lp["attn_norm"], cfg.rms_norm_eps)
        q, k, v = qkv_projections(lp, cfg, h, positions, inv_freq)
        out = attend(q, k_cache, v_cache, k, v)
        return mlp_and_out(lp, cfg, x, out), (k.astype(k_cache.dtype), v.astype(v_cache.dtype))

    x, (k, v) = jax.lax.scan(block, embed_tokens(params, cfg, tokens),
                             (lora.layer_inputs(params), cache.k, cache.v))
    at = (0, 0, 0, slot, 0)
    return x, KVCache(jax.lax.dynamic_update_slice(cache.k, k, at),
                      jax.lax.dynamic_update_slice(cache.v, v, at))


def decode_step(params: Params, cfg: ModelConfig, tokens: jax.Array, positions: jax.Array,
                cache: KVCache, slot: jax.Array, kv_mask: jax.Array) -> tuple[jax.Array, KVCache]:
    """Decodes `tokens [B, 1]` at `positions [B, 1]`: each token attends to the cached slots
    where `kv_mask [B, S]` is True and to itself, and its key/value is written to cache slot
    `slot` (scalar int32). Returns logits `[B, 1, V]` f32 and the updated cache."""
    x, cache = layers_over_cache(
        params, cfg, tokens, positions, cache, slot,
        lambda q, k_cache, v_cache, k, v: decode_attention(q, k_cache, v_cache, kv_mask, k, v))
    return lm_logits(params, cfg, x), cache
