"""The jitted steps the serving engine runs: chunked prefill and decoding in short segments.

Unlike the training sampler (`rollout.sampler`, one prefill and one decode loop per call), a
served batch returns to the host every few tokens, so answers stream while they are generated
and cancelled rows stop early; and a long prompt is prefilled `C` tokens at a time, so the
attention scores of a prefill are `[B, H, C, S]` (chunk x cache), never `[B, H, P, P]` for a
whole prompt. Rows are left-padded prompts `[B, P]` in cache slots `[0, P)`, new tokens in
slots `[P, S)`, as in the sampler; greedy decoding gives the sampler's tokens.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ssp_jax.models.config import ModelConfig
from ssp_jax.models.transformer import (KVCache, Params, decode_step, layers_over_cache,
                                        lm_logits)
from ssp_jax.rollout.sampler import sample_token

MASK_VALUE = -1e30  # a finite -inf: a fully masked (padding) query row stays NaN-free


class Rows(NamedTuple):
    """Decode state of N rows, kept on the device between segments."""

    cache: KVCache  # [L, N, K, S, Dh] each
    kv_mask: jax.Array  # [N, S] bool: slots a new token may attend to
    lengths: jax.Array  # [N] int32: the next token's position
    logits: jax.Array  # [N, V] f32: logits of the next token
    done: jax.Array  # [N] bool
    limit: jax.Array  # [N] int32: most new tokens of each row
    step: jax.Array  # int32: tokens generated so far


class Segment(NamedTuple):
    """The tokens one `decode_segment` call produced (T steps)."""

    tokens: jax.Array  # [N, T] int32
    produced: jax.Array  # [N, T] bool: whether the row generated the token at that step
    chosen: jax.Array  # [N, T] f32: raw log p of each token (zeros unless num_top > 0)
    top_values: jax.Array  # [N, T, K] f32: the K largest raw log-probs, descending
    top_ids: jax.Array  # [N, T, K] int32


def chunk_attention(q: jax.Array, k_cache: jax.Array, v_cache: jax.Array, seen: jax.Array,
                    k: jax.Array, v: jax.Array, own: jax.Array) -> jax.Array:
    """Attention of a chunk of C queries over cached slots and over the chunk itself.

    q `[B,C,H,Dh]`; k_cache/v_cache `[B,K,S,Dh]` (read only); seen `[B,S]` bool: cached slots
    every query of the chunk may see; k/v `[B,K,C,Dh]` the chunk's own keys and values; own
    `[B,C,C]` bool: which chunk keys each query sees (causal and not padding). One softmax over
    both parts without concatenating keys. Returns `[B,C,H,Dh]`."""
    b, c, h, hd = q.shape
    kv = k.shape[1]
    q = q.reshape(b, c, kv, h // kv, hd).astype(jnp.float32) / math.sqrt(hd)
    cached = jnp.einsum("bckgd,bksd->bkgcs", q, k_cache, preferred_element_type=jnp.float32)
    cached = jnp.where(seen[:, None, None, None, :], cached, MASK_VALUE)
    mine = jnp.einsum("bckgd,bked->bkgce", q, k.astype(jnp.float32))
    mine = jnp.where(own[:, None, None], mine, MASK_VALUE)
    top = jnp.maximum(jnp.max(cached, axis=-1, keepdims=True),
                      jnp.max(mine, axis=-1, keepdims=True))
    p_cached, p_mine = jnp.exp(cached - top), jnp.exp(mine - top)
    total = jnp.sum(p_cached, axis=-1, keepdims=True) + jnp.sum(p_mine, axis=-1, keepdims=True)
    out = jnp.einsum("bkgcs,bksd->bkgcd", p_cached.astype(v_cache.dtype), v_cache,
                     preferred_element_type=jnp.float32)
    out = out + jnp.einsum("bkgce,bked->bkgcd", p_mine, v.astype(jnp.float32))
    out = (out / total).transpose(0, 3, 1, 2, 4)  # [B, C, K, G, Dh]
    return out.reshape(b, c, h, hd).astype(v.dtype)


@functools.partial(jax.jit, static_argnames=("cfg",), donate_argnums=(1,))
def prefill_chunk(params: Params, cache: KVCache, tokens: jax.Array, positions: jax.Array,
                  kv_mask: jax.Array, start: jax.Array, *,
                  cfg: ModelConfig) -> tuple[jax.Array, KVCache]:
    """Prefills prompt tokens `[B, C]` int32 at `positions [B, C]` into cache slots
    `[start, start + C)` (`start` an int32 scalar); `kv_mask [B, S]` bool marks the real prompt
    slots. A query sees the real slots before it. Returns the logits `[B, V]` f32 of the
    chunk's last position and the cache (donated in, updated)."""
    c = tokens.shape[1]
    slots = jnp.arange(kv_mask.shape[1])
    seen = kv_mask & (slots[None, :] < start)  # [B, S]: earlier chunks
    real = jax.lax.dynamic_slice_in_dim(kv_mask, start, c, axis=1)  # [B, C]
    causal = jnp.arange(c)[:, None] >= jnp.arange(c)[None, :]
    own = real[:, None, :] & causal[None]  # [B, C, C]
    x, cache = layers_over_cache(
        params, cfg, tokens, positions, cache, start,
        lambda q, k_cache, v_cache, k, v: chunk_attention(q, k_cache, v_cache, seen, k, v, own))
    return lm_logits(params, cfg, x[:, -1:])[:, 0], cache


@functools.partial(jax.jit, static_argnames=("num_samples",))
def fan_out(rows: Rows, *, num_samples: int) -> Rows:
    """Repeats every prefilled prompt row `num_samples` times (rows prompt-major)."""
    rep = functools.partial(jnp.repeat, repeats=num_samples, axis=0)
    cache = jax.tree.map(lambda c: jnp.repeat(c, num_samples, axis=1), rows.cache)
    return Rows(cache, rep(rows.kv_mask), rep(rows.lengths), rep(rows.logits), rep(rows.done),
                rep(rows.limit), rows.step)


class Knobs(NamedTuple):
    """Traced sampling settings of a batch (changing them never recompiles)."""

    key_data: jax.Array  # the batch's PRNG key data
    temperature: jax.Array  # f32; ≤ 0 is greedy
    top_p: jax.Array  # f32
    stop_ids: jax.Array  # [MAX_STOP_IDS] int32, -1 padded
    first_slot: jax.Array  # int32: the cache slot of new token 0 (the prompt bucket)


def _raw_logprobs(logits: jax.Array, token: jax.Array, num_top: int, n: int):
    """Raw (temperature 1, unfiltered) log p of `token [N]` and the top `num_top`."""
    if not num_top:
        return jnp.zeros((n,)), jnp.zeros((n, 0)), jnp.zeros((n, 0), jnp.int32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    values, ids = jax.lax.top_k(logp, num_top)
    return jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0], values, ids


@functools.partial(jax.jit, static_argnames=("cfg", "steps", "num_top"), donate_argnums=(1,))
def decode_segment(params: Params, rows: Rows, cancel: jax.Array, knobs: Knobs, *,
                   cfg: ModelConfig, steps: int, num_top: int) -> tuple[Rows, Segment]:
    """Up to `steps` decode steps (fewer when every row is done). Rows where `cancel [N]` is
    True stop first. A row is done after a stop id or `limit` tokens. Returns the new state
    (cache donated) and the segment's tokens, with raw log-probs when `num_top > 0`."""
    key = jax.random.wrap_key_data(knobs.key_data)
    n = rows.logits.shape[0]
    out = Segment(jnp.zeros((n, steps), jnp.int32), jnp.zeros((n, steps), bool),
                  jnp.zeros((n, steps)), jnp.zeros((n, steps, num_top)),
                  jnp.zeros((n, steps, num_top), jnp.int32))

    def cond(carry):
        i, r, _ = carry
        return (i < steps) & ~jnp.all(r.done)

    def body(carry):
        i, r, seg = carry
        token, _ = sample_token(r.logits, jax.random.fold_in(key, r.step), knobs.temperature,
                                jnp.int32(0), knobs.top_p)
        token = jnp.where(r.done, 0, token)
        chosen, values, ids = _raw_logprobs(r.logits, token, num_top, n)
        seg = Segment(seg.tokens.at[:, i].set(token), seg.produced.at[:, i].set(~r.done),
                      seg.chosen.at[:, i].set(chosen), seg.top_values.at[:, i].set(values),
                      seg.top_ids.at[:, i].set(ids))
        stopped = jnp.any(token[:, None] == knobs.stop_ids[None, :], axis=-1)
        done = r.done | stopped | (r.step + 1 >= r.limit)
        slot = knobs.first_slot + r.step
        logits, cache = decode_step(params, cfg, token[:, None], r.lengths[:, None], r.cache,
                                    slot, r.kv_mask)
        r = Rows(cache, r.kv_mask.at[:, slot].set(True), r.lengths + 1, logits[:, 0], done,
                 r.limit, r.step + 1)
        return i + 1, r, seg

    rows = rows._replace(done=rows.done | cancel)
    _, rows, out = jax.lax.while_loop(cond, body, (jnp.int32(0), rows, out))
    return rows, out
