"""Reads a llama.cpp GGUF file into Hugging Face-named float32 weights, an HF config dict and a
tokenizer (built from the GGUF metadata, without torch)."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import tokenizers
import transformers
from tokenizers import decoders, normalizers, pre_tokenizers, processors

from ssp_jax.models.gguf_sentencepiece import sentencepiece_tokenizer
from ssp_jax.models.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

SUPPORTED_GGUF_ARCHITECTURES = ("llama", "qwen2", "qwen3")
_HF_CLASSES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
               "qwen3": "Qwen3ForCausalLM"}
_TOP_LEVEL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_BLOCK_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
_ROPE_FREQS = "rope_freqs.weight"  # llama.cpp's per-frequency divisors for llama3 rope scaling

# Token types in `tokenizer.ggml.token_type` (llama.cpp's llama_token_type).
_CONTROL, _USER_DEFINED = 3, 4
# Pre-tokenizer split patterns of the original Hugging Face tokenizers, by `tokenizer.ggml.pre`.
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SUPPORTED_PRE_TOKENIZERS = ("default", "gpt-2", "smollm", "qwen2", "llama-bpe")


@dataclasses.dataclass
class GGUFModel:
    """A GGUF model in Hugging Face terms."""

    hf_config: dict[str, Any]  # config.json-style dict
    tensors: dict[str, np.ndarray]  # HF parameter name -> float32 array in HF layout ([out, in])
    tokenizer: Tokenizer


def read_gguf(path: str | os.PathLike[str]) -> GGUFModel:
    """Reads and dequantizes a `llama`, `qwen2` or `qwen3` GGUF file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    try:
        reader = gguf.GGUFReader(path)
    except ValueError as e:
        raise ValueError(f"{path}: not a readable GGUF file ({e})") from None
    meta = _read_metadata(reader)
    arch = _require(meta, "general.architecture", path)
    if arch not in SUPPORTED_GGUF_ARCHITECTURES:
        raise ValueError(
            f"{path}: unsupported GGUF architecture {arch!r}; supported: "
            f"{', '.join(SUPPORTED_GGUF_ARCHITECTURES)}"
        )
    raw = {t.name: t for t in reader.tensors}
    hf_config = _hf_config(meta, arch, raw, path)
    tokenizer = _tokenizer_from_metadata(meta, path)
    start = time.perf_counter()
    tensors = _read_tensors(reader, hf_config, path)
    logger.info("read %s: %s, %d tensors dequantized to float32 in %.1f s",
                path, arch, len(tensors), time.perf_counter() - start)
    return GGUFModel(hf_config=hf_config, tensors=tensors, tokenizer=tokenizer)


def _read_metadata(reader: gguf.GGUFReader) -> dict[str, Any]:
    """All key/value fields; float32 scalars as their shortest decimal (9.9999997e-06 -> 1e-05)."""
    meta = {}
    for name, field in reader.fields.items():
        value = field.contents()
        if field.types == [gguf.GGUFValueType.FLOAT32]:
            value = float(str(np.float32(value)))
        meta[name] = value
    return meta


def _require(meta: dict[str, Any], key: str, path: Path) -> Any:
    if key not in meta:
        raise ValueError(f"{path}: GGUF metadata lacks required key {key!r}")
    return meta[key]


def _layer_constant(meta: dict[str, Any], key: str, path: Path, default: Any = None) -> int:
    """An int hyper-parameter, stored once or per layer (then all layers must agree)."""
    value = meta.get(key, default)
    if value is None:
        raise ValueError(f"{path}: GGUF metadata lacks required key {key!r}")
    if isinstance(value, list):
        if len(set(value)) != 1:
            raise ValueError(f"{path}: per-layer values of {key} are not supported, got {value}")
        value = value[0]
    return int(value)


def _hf_config(meta: dict[str, Any], arch: str, raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """The Hugging Face config.json dict described by the metadata and tensor shapes."""
    p = f"{arch}."
    hidden = _layer_constant(meta, p + "embedding_length", path)
    heads = _layer_constant(meta, p + "attention.head_count", path)
    kv_heads = _layer_constant(meta, p + "attention.head_count_kv", path, heads)
    head_dim = _layer_constant(meta, p + "attention.key_length", path, hidden // heads)
    value_dim = _layer_constant(meta, p + "attention.value_length", path, head_dim)
    rope_dim = _layer_constant(meta, p + "rope.dimension_count", path, head_dim)
    if value_dim != head_dim:
        raise ValueError(f"{path}: attention.value_length {value_dim} != key_length {head_dim} "
                         "is not supported")
    if rope_dim != head_dim:
        raise ValueError(f"{path}: partial rotary embeddings (rope.dimension_count {rope_dim}, "
                         f"head_dim {head_dim}) are not supported")
    if "token_embd.weight" not in raw:
        raise ValueError(f"{path}: tensor token_embd.weight is missing")
    rope_theta = float(meta.get(p + "rope.freq_base", 10000.0))
    rope_freqs = raw.get(_ROPE_FREQS)
    rope_scaling = _rope_scaling(
        meta, arch, None if rope_freqs is None else np.asarray(
            gguf.quants.dequantize(rope_freqs.data, rope_freqs.tensor_type), np.float64),
        rope_theta, head_dim, path)
    config: dict[str, Any] = {
        "architectures": [_HF_CLASSES[arch]],
        "model_type": arch,
        "vocab_size": int(raw["token_embd.weight"].shape[1]),  # ggml shape is [D, V]
        "hidden_size": hidden,
        "intermediate_size": _layer_constant(meta, p + "feed_forward_length", path),
        "num_hidden_layers": _layer_constant(meta, p + "block_count", path),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": float(_require(meta, p + "attention.layer_norm_rms_epsilon", path)),
        "rope_theta": rope_theta,
        "max_position_embeddings": _layer_constant(meta, p + "context_length", path),
        "tie_word_embeddings": "output.weight" not in raw,
        "attention_bias": arch == "qwen2" or "blk.0.attn_q.bias" in raw,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
    }
    if rope_scaling is not None:
        config["rope_scaling"] = rope_scaling
    return config


def _rope_scaling(meta: dict[str, Any], arch: str, rope_freqs: np.ndarray | None,
                  theta: float, head_dim: int, path: Path) -> dict[str, Any] | None:
    """HF `rope_scaling` from `{arch}.rope.scaling.*` keys or a `rope_freqs` tensor, or None."""
    prefix = f"{arch}.rope.scaling."
    keys = {k[len(prefix):]: v for k, v in meta.items() if k.startswith(prefix)}
    kind = keys.pop("type", "none")
    if rope_freqs is not None:
        if arch != "llama" or kind != "none":
            raise ValueError(f"{path}: tensor {_ROPE_FREQS} with architecture {arch!r} and rope "
                             f"scaling type {kind!r} is not supported (only llama3-style on llama)")
        return _llama3_rope_scaling(rope_freqs, theta, head_dim, path)
    if kind == "none":
        return None
    if kind == "linear" and "factor" in keys:
        keys.pop("original_context_length", None)
        factor = float(keys.pop("factor"))
        if keys:
            raise ValueError(f"{path}: linear rope scaling with unsupported keys {sorted(keys)}")
        return {"rope_type": "linear", "factor": factor}
    raise ValueError(f"{path}: rope scaling type {kind!r} (keys {sorted(keys)}) is not supported; "
                     "supported: none, linear (with factor), llama3 (rope_freqs tensor)")


def _llama3_rope_divisors(params: dict[str, Any], theta: float, head_dim: int) -> np.ndarray:
    """Per-frequency divisors of the inverse rotary frequencies for HF `rope_type: llama3`.

    inv_freq_i = theta^(-2i/head_dim), wavelength w_i = 2π / inv_freq_i, L = original context:
    divisor 1 for w < L/high_freq_factor, `factor` for w > L/low_freq_factor, and in between
    1 / ((1 - s)/factor + s) with s = (L/w - low) / (high - low). Returns [head_dim // 2] f64.
    """
    factor, low, high = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
    context = params["original_max_position_embeddings"]
    wavelen = 2 * math.pi * theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    smooth = (context / wavelen - low) / (high - low)
    middle = 1.0 / ((1.0 - smooth) / factor + smooth)
    return np.where(wavelen < context / high, 1.0,
                    np.where(wavelen > context / low, factor, middle))


def _llama3_rope_scaling(divisors: np.ndarray, theta: float, head_dim: int,
                         path: Path) -> dict[str, Any]:
    """Recovers llama3 rope parameters from llama.cpp's `rope_freqs` divisors [head_dim // 2].

    The formula depends on (L, low, high) only through their ratios, so low = 1. `factor` is the
    largest divisor; s_i = (1/d_i - 1/factor) / (1 - 1/factor) is linear in 1/w_i for the divisors
    strictly between 1 and `factor`: s = L/(high - 1) * (1/w) - 1/(high - 1). The simplest decimals
    reproducing every divisor to float32 precision are kept; anything else is refused.
    """
    if divisors.shape != (head_dim // 2,):
        raise ValueError(f"{path}: {_ROPE_FREQS} has shape {divisors.shape}, "
                         f"expected ({head_dim // 2},)")
    factor = float(divisors.max())
    exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
    inverse_wavelen = theta ** -exponents / (2 * math.pi)
    if factor > 1.0:
        smooth = (1.0 / divisors - 1.0 / factor) / (1.0 - 1.0 / factor)
        middle = (smooth > 1e-4) & (smooth < 1.0 - 1e-4)
        if middle.sum() >= 2:
            slope, intercept = np.polyfit(inverse_wavelen[middle], smooth[middle], 1)
            high, context = 1.0 - 1.0 / intercept, -slope / intercept
            for digits in range(7):
                params = {"rope_type": "llama3", "factor": round(factor, digits),
                          "low_freq_factor": 1.0, "high_freq_factor": round(high, digits),
                          "original_max_position_embeddings": int(round(context))}
                if np.allclose(_llama3_rope_divisors(params, theta, head_dim), divisors,
                               rtol=1e-6, atol=0.0):
                    return params
    raise ValueError(f"{path}: {_ROPE_FREQS} does not match llama3 rope scaling "
                     f"(divisors {np.round(divisors, 4).tolist()}); cannot map it to a HF config")


def _hf_name(gguf_name: str, path: Path) -> str:
    if gguf_name in _TOP_LEVEL_NAMES:
        return _TOP_LEVEL_NAMES[gguf_name]
    match = _BLOCK_TENSOR.fullmatch(gguf_name)
    if match is None or match.group(2) not in _BLOCK_NAMES:
        raise ValueError(f"{path}: unsupported tensor {gguf_name!r}")
    layer, part, kind = match.groups()
    return f"model.layers.{layer}.{_BLOCK_NAMES[part]}.{kind}"


def _expected_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """HF parameter name -> shape for a config built by `_hf_config`."""
    v, d, f = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]
    hd = cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,)}
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (v, d)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (q, d), p + "self_attn.k_proj.weight": (kv, d),
            p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, q),
            p + "mlp.gate_proj.weight": (f, d), p + "mlp.up_proj.weight": (f, d),
            p + "mlp.down_proj.weight": (d, f), p + "input_layernorm.weight": (d,),
            p + "post_attention_layernorm.weight": (d,),
        })
        if cfg["attention_bias"]:
            shapes.update({p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                           p + "self_attn.v_proj.bias": (kv,)})
        if cfg["model_type"] == "qwen3":
            shapes.update({p + "self_attn.q_norm.weight": (hd,),
                           p + "self_attn.k_norm.weight": (hd,)})
    return shapes


def _unpermute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undoes llama.cpp's q/k row interleave: per head, rows [r0, r_half, r1, r_half+1, ...]
    go back to [r0, r1, ..., r_half, ...]. `w`: [n_heads * head_dim, ...] (weight or bias)."""
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, head_dim // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _read_tensors(reader: gguf.GGUFReader, cfg: dict[str, Any],
                  path: Path) -> dict[str, np.ndarray]:
    """Dequantized float32 tensors in HF names and layouts, checked against the config."""
    expected = _expected_shapes(cfg)
    tensors: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        if t.name == _ROPE_FREQS:
            continue
        name = _hf_name(t.name, path)
        shape = tuple(int(n) for n in reversed(t.shape))  # ggml lists the fastest axis first
        if name not in expected:
            raise ValueError(f"{path}: unexpected tensor {t.name!r} for this {cfg['model_type']} "
                             "config")
        if shape != expected[name]:
            raise ValueError(f"{path}: tensor {t.name!r} has shape {shape}, expected "
                             f"{expected[name]}")
        w = np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        w = w.reshape(shape)
        if cfg["model_type"] == "llama" and ".self_attn.q_proj." in name:
            w = _unpermute_rows(w, cfg["num_attention_heads"])
        elif cfg["model_type"] == "llama" and ".self_attn.k_proj." in name:
            w = _unpermute_rows(w, cfg["num_key_value_heads"])
        tensors[name] = w
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ValueError(f"{path}: {len(missing)} tensors missing, e.g. {missing[:3]}")
    return tensors


def _pre_tokenizer(pre: str, path: Path) -> pre_tokenizers.PreTokenizer:
    """The pre-tokenizer of the original HF tokenizer for llama.cpp's `tokenizer.ggml.pre`."""
    if pre in ("default", "gpt-2"):
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    if pre in ("qwen2", "llama-bpe"):
        split = _QWEN2_SPLIT if pre == "qwen2" else _LLAMA3_SPLIT
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(tokenizers.Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    raise ValueError(f"{path}: unsupported tokenizer.ggml.pre {pre!r}; supported: "
                     f"{', '.join(SUPPORTED_PRE_TOKENIZERS)}")


def _tokenizer_from_metadata(meta: dict[str, Any], path: Path) -> Tokenizer:
    """The tokenizer from GGUF metadata: byte-level BPE (`tokenizer.ggml.model == "gpt2"`) or
    SentencePiece (`"llama"`, see `gguf_sentencepiece`)."""
    kind = meta.get("tokenizer.ggml.model")
    if kind not in ("gpt2", "llama"):
        raise ValueError(
            f"{path}: tokenizer type {kind!r} (tokenizer.ggml.model) cannot be built from GGUF "
            "metadata; supported: 'gpt2' (byte-level BPE), 'llama' (SentencePiece). Load this "
            "model from a Hugging Face folder with its tokenizer files instead."
        )
    tokens: list[str] = _require(meta, "tokenizer.ggml.tokens", path)
    if kind == "llama":
        return sentencepiece_tokenizer(meta, path)
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        seen: set[str] = set()
        duplicate = next(t for t in tokens if t in seen or seen.add(t))
        raise ValueError(f"{path}: token {duplicate!r} appears twice in tokenizer.ggml.tokens")
    merges = []
    for i, merge in enumerate(meta.get("tokenizer.ggml.merges", [])):
        pair = tuple(merge.split(" "))
        if len(pair) != 2:
            raise ValueError(f"{path}: tokenizer.ggml.merges[{i}] = {merge!r} is not 'left right'")
        merges.append(pair)
    pre = meta.get("tokenizer.ggml.pre", "default")
    backend = tokenizers.Tokenizer(tokenizers.models.BPE(
        vocab=vocab, merges=merges, ignore_merges=pre == "llama-bpe"))
    backend.pre_tokenizer = _pre_tokenizer(pre, path)
    if pre == "qwen2":
        backend.normalizer = normalizers.NFC()
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([
        tokenizers.AddedToken(t, special=True, normalized=False)
        for t, kind in zip(tokens, types) if kind == _CONTROL])
    backend.add_tokens([
        tokenizers.AddedToken(t, special=False, normalized=False)
        for t, kind in zip(tokens, types) if kind == _USER_DEFINED])

    def token(key: str) -> str | None:
        index = meta.get(f"tokenizer.ggml.{key}")
        if index is None:
            return None
        if not 0 <= index < len(tokens):
            raise ValueError(f"{path}: tokenizer.ggml.{key} = {index} is outside the vocabulary "
                             f"(0..{len(tokens) - 1})")
        return tokens[index]

    bos, eos = token("bos_token_id"), token("eos_token_id")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False)) and bos is not None
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False)) and eos is not None
    if add_bos or add_eos:
        head, tail = (f"{bos} " if add_bos else ""), (f" {eos}" if add_eos else "")
        backend.post_processor = processors.TemplateProcessing(
            single=f"{head}$A{tail}", pair=f"{head}$A{tail} {head}$B:1{tail}",
            special_tokens=[(t, vocab[t]) for t in dict.fromkeys(
                ([bos] if add_bos else []) + ([eos] if add_eos else []))])
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, unk_token=token("unknown_token_id"),
        pad_token=token("padding_token_id"), chat_template=meta.get("tokenizer.chat_template"),
        clean_up_tokenization_spaces=False)
    extra_eos = [meta[f"tokenizer.ggml.{k}"] for k in ("eot_token_id", "eom_token_id")
                 if f"tokenizer.ggml.{k}" in meta]
    return Tokenizer(hf, extra_eos)
