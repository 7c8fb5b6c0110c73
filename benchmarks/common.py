"""Shared by the benchmark scripts: model shapes (random weights), accelerator peaks, and the
bounds we report against (decode memory-bandwidth roofline, update MFU, measured matmul
throughput)."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp

from ssp_jax.memory import KNOWN_SHAPES
from ssp_jax.models import ModelConfig
from ssp_jax.models.tiny import tiny_config

SHAPES = {
    "tiny": tiny_config(),
    "smollm2-135m": KNOWN_SHAPES["smollm2-135m-instruct"],
    # Qwen2.5-0.5B's shape (the Qwen2-0.5B one): 494M parameters, tied embeddings
    "qwen2-0.5b": ModelConfig("qwen2", 151936, 896, 4864, 24, 14, 2, 64, attention_bias=True,
                              tie_word_embeddings=True),
    "llama-1b": ModelConfig("llama", 128256, 2048, 8192, 16, 32, 8, 64,
                            tie_word_embeddings=True),
}
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclasses.dataclass(frozen=True)
class Chip:
    """Vendor datasheet figures for one chip (dense, no sparsity)."""

    name: str
    bf16_tflops: float  # peak dense bfloat16 matmul TFLOP/s
    hbm_gbps: float  # peak memory bandwidth, GB/s


# matched against jax's `device_kind` in order, first hit wins (SXM figures for the GPUs)
CHIPS = (
    (("H200",), Chip("NVIDIA H200", 989.0, 4800.0)),
    (("H100",), Chip("NVIDIA H100 SXM", 989.0, 3350.0)),
    (("A100",), Chip("NVIDIA A100 80GB SXM", 312.0, 2039.0)),
    (("v5 lite", "v5e"), Chip("TPU v5e", 197.0, 819.0)),
    (("v5p", "TPU v5"), Chip("TPU v5p", 459.0, 2765.0)),
    (("TPU v4",), Chip("TPU v4", 275.0, 1200.0)),
)


def chip_for(device_kind: str) -> Chip | None:
    """The known chip whose name `device_kind` (e.g. "NVIDIA H100 80GB HBM3") contains."""
    for needles, chip in CHIPS:
        if any(n.lower() in device_kind.lower() for n in needles):
            return chip
    return None


def decode_bytes_per_step(cfg: ModelConfig, batch: int, cache_len: float) -> float:
    """HBM bytes one decode step must read at least: every weight matrix once (the input
    embedding table only when it is not also the LM head) and the K and V cache of every
    row up to `cache_len` positions."""
    weight = BYTES[cfg.param_dtype]
    params = cfg.num_params - (0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size)
    kv = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * cache_len * batch
    return params * weight + kv * BYTES[cfg.dtype]


def decode_roofline_tokens_per_s(cfg: ModelConfig, batch: int, cache_len: float,
                                 hbm_gbps: float) -> float:
    """Tokens/s if each decode step (one token per row) ran at full memory bandwidth."""
    return batch * hbm_gbps * 1e9 / decode_bytes_per_step(cfg, batch, cache_len)


def update_flops(cfg: ModelConfig, processed_tokens: int, completion_tokens: int) -> float:
    """Matmul FLOPs of one update: 6 * (parameters - LM head) * tokens through the model +
    6 * LM head * trained completion tokens (the head runs on completions only)."""
    head = cfg.vocab_size * cfg.hidden_size
    return 6.0 * ((cfg.num_params - head) * processed_tokens + head * completion_tokens)


def matmul_tflops(m: int, k: int, n: int, repeats: int = 5) -> float:
    """Measured float32 TFLOP/s of an `[m, k] @ [k, n]` matmul on the default device: with a
    large square it is a rough peak; with a decode step's shape (m = rows) the limit that
    shape can reach."""
    a, b = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = f(a, b)
    out.block_until_ready()
    return repeats * 2 * m * k * n / (time.perf_counter() - start) / 1e12
