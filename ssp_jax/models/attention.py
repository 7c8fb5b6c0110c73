"""Self-attention kernels behind one call: plain XLA, cuDNN flash attention
(`jax.nn.dot_product_attention`) and the Pallas TPU splash kernel.

A mask is given in a form the fused kernels take: a static `MaskPattern` over (query, key)
positions (causal, or the grouped update's prompt-then-completion blocks) and segment ids
`[B, T]` int32; a query sees a key where the pattern allows it and their segment ids are
equal. Padding gets its own segment id (`PAD_SEGMENT`), so padded keys are invisible to real
queries; outputs at padded queries are unspecified (finite) and never read.

Shapes: B batch, T positions, H query heads, K kv heads, G = H // K, Dh head dim.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.sharding import PartitionSpec as P

from ssp_jax import sharding
from ssp_jax.models.config import ATTENTION_IMPLEMENTATIONS as IMPLEMENTATIONS

REAL_SEGMENT, PAD_SEGMENT = 0, 1
_KERNEL_PAD_SEGMENT = 2  # positions added to reach the splash kernel's block size
_MASK_VALUE = -1e30


@dataclasses.dataclass(frozen=True)
class MaskPattern:
    """The static part of a self-attention mask: causal, and with `completion` > 0 the
    grouped layout (`models.transformer.completion_hidden_states`): positions [0, prompt) are
    a shared prompt, then blocks of `completion` positions, each seeing the prompt and itself
    causally."""

    prompt: int = 0
    completion: int = 0

    def dense(self, length: int) -> np.ndarray:
        """`[length, length]` bool (query, key)."""
        idx = np.arange(length)
        allowed = idx[:, None] >= idx[None, :]
        if self.completion:
            block = np.where(idx < self.prompt, -1, (idx - self.prompt) // self.completion)
            allowed &= (idx[None, :] < self.prompt) | (block[:, None] == block[None, :])
        return allowed


def resolve(implementation: str, dtype: jnp.dtype) -> str:
    """The kernel `implementation` names on this backend: `auto` is splash on TPU, cuDNN on a
    GPU for 16-bit compute (its flash kernel's dtypes), else XLA."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {implementation!r}; valid: "
                         f"{', '.join(IMPLEMENTATIONS)}")
    backend = jax.default_backend()
    if implementation == "auto":
        if backend == "tpu":
            return "splash"
        half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
        return "cudnn" if backend == "gpu" and half else "xla"
    if implementation == "cudnn" and backend != "gpu":
        raise ValueError(f"attention implementation 'cudnn' needs a GPU; the backend is "
                         f"{backend} (use 'auto' or 'xla')")
    return implementation


def dense_mask(pattern: MaskPattern, segment_ids: jax.Array) -> jax.Array:
    """`[B, T, T]` bool: the pattern and equal segment ids."""
    t = segment_ids.shape[1]
    return jnp.asarray(pattern.dense(t))[None] & (segment_ids[:, :, None]
                                                  == segment_ids[:, None, :])


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Grouped-query attention. q `[B,T,H,Dh]`, k/v `[B,K,S,Dh]`, mask `[B,T,S]` bool ->
    `[B,T,H,Dh]`. Scores and softmax in float32; fully masked rows give finite output."""
    b, t, h, hd = q.shape
    kv = k.shape[1]
    q = q.reshape(b, t, kv, h // kv, hd).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, Dh]
    scores = jnp.einsum("bkgtd,bksd->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(hd)
    scores = jnp.where(mask[:, None, None, :, :], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bksd->bkgtd", probs, v)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, hd)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                          implementation: str = "cudnn") -> jax.Array:
    """`jax.nn.dot_product_attention` (cuDNN flash attention on a GPU; "xla" runs the same
    call anywhere). q `[B,T,H,Dh]`, k/v `[B,K,S,Dh]`, mask `[B,T,S]` -> `[B,T,H,Dh]`."""
    return jax.nn.dot_product_attention(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3),
                                        mask=mask[:, None], implementation=implementation)


@functools.lru_cache(maxsize=32)
def _splash_kernel(pattern: MaskPattern, length: int, group: int, block: int,
                   interpret: bool):
    """A splash kernel for one kv head: q `[G, T, Dh]`, k/v `[T, Dh]`."""
    mask = splash.MultiHeadMask([splash.NumpyMask(pattern.dense(length))] * group)
    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                              block_q_dkv=block, block_kv_dkv=block,
                              block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    return splash.make_splash_mqa(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                  interpret=interpret)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, pattern: MaskPattern,
                     segment_ids: jax.Array) -> jax.Array:
    """The Pallas TPU splash kernel (interpreted off TPU). q `[B,T,H,Dh]`, k/v `[B,K,T,Dh]`,
    segment_ids `[B,T]` -> `[B,T,H,Dh]`. Positions are padded to a multiple of 128 (the
    kernel's block) under their own segment id; under a mesh (`jax.set_mesh`) the kernel runs
    per shard with rows over the `batch` rule's axes and kv heads over `kv_heads`'."""
    b, t, h, hd = q.shape
    kv = k.shape[1]
    length = -(-t // 128) * 128
    block = next(s for s in (512, 256, 128) if length % s == 0)
    kernel = _splash_kernel(pattern, length, h // kv, block, jax.default_backend() != "tpu")
    pad = length - t
    q = q.reshape(b, t, kv, h // kv, hd).transpose(0, 2, 3, 1, 4) / math.sqrt(hd)
    q = jnp.pad(q.astype(k.dtype), ((0, 0), (0, 0), (0, 0), (0, pad), (0, 0)))
    k, v = (jnp.pad(x, ((0, 0), (0, 0), (0, pad), (0, 0))) for x in (k, v))
    segment_ids = jnp.pad(segment_ids, ((0, 0), (0, pad)), constant_values=_KERNEL_PAD_SEGMENT)

    def per_kv_head(q, k, v, seg):  # q [G, T, Dh], k/v [T, Dh], seg [T]
        return kernel(q, k, v, segment_ids=splash.SegmentIds(seg, seg))

    def run(q, k, v, seg):  # q [B, K, G, T, Dh], k/v [B, K, T, Dh], seg [B, T]
        per_row = jax.vmap(per_kv_head, in_axes=(0, 0, 0, None))
        return jax.vmap(per_row)(q, k, v, seg)

    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.size > 1:
        rules = sharding.TRAIN_RULES
        rows, heads, _ = sharding.logical_spec(("batch", "kv_heads", None), (b, kv, 1), mesh,
                                               rules)
        run = jax.shard_map(run, in_specs=(P(rows, heads), P(rows, heads), P(rows, heads),
                                           P(rows)), out_specs=P(rows, heads), check_vma=False)
    out = run(q, k, v, segment_ids)[:, :, :, :t]  # [B, K, G, T, Dh]
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, hd).astype(v.dtype)


def self_attention(q: jax.Array, k: jax.Array, v: jax.Array, pattern: MaskPattern,
                   segment_ids: jax.Array, implementation: str) -> jax.Array:
    """Self-attention over T positions with the chosen kernel (see `resolve`).
    q `[B,T,H,Dh]`, k/v `[B,K,T,Dh]`, segment_ids `[B,T]` int32 -> `[B,T,H,Dh]`."""
    kind = resolve(implementation, q.dtype)
    if kind == "splash":
        return splash_attention(q, k, v, pattern, segment_ids)
    mask = dense_mask(pattern, segment_ids)
    if kind == "cudnn":
        return dot_product_attention(q, k, v, mask)
    return xla_attention(q, k, v, mask)
