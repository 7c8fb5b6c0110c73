"""Model configuration: one decoder-only family covering HF llama, mistral, qwen2 and qwen3."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

from ssp_jax.sections import ATTENTION_IMPLEMENTATIONS, LORA_TARGETS, LoraConfig  # noqa: F401

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the transformer; frozen and hashable (it is static under `jit`)."""

    architecture: str  # one of SUPPORTED_ARCHITECTURES
    vocab_size: int
    hidden_size: int  # D
    intermediate_size: int  # F, SwiGLU width
    num_layers: int  # L
    num_heads: int  # H, query heads
    num_kv_heads: int  # K, key/value heads (GQA when K < H)
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: tuple[tuple[str, Any], ...] | None = None  # HF rope parameters, sorted items
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v projection biases (qwen2)
    qk_norm: bool = False  # RMSNorm on each query/key head (qwen3)
    sliding_window: int | None = None  # mistral; sequences longer than this are refused
    param_dtype: str = "float32"  # storage dtype of parameters
    dtype: str = "float32"  # compute dtype of activations
    remat: bool = False  # rematerialize each decoder block in the backward pass
    attention: str = "auto"  # auto | xla | cudnn | splash (see models.attention.resolve)
    lora: LoraConfig = LoraConfig()  # adapter hyper-parameters (the arrays live in params)

    def __post_init__(self) -> None:
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"unsupported architecture {self.architecture!r}; supported: "
                f"{', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                     "num_heads", "num_kv_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"model config field {name} must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        for name in ("param_dtype", "dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ValueError(
                    f"model config field {name}={getattr(self, name)!r}; "
                    f"valid: {', '.join(_DTYPES)}"
                )
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"model config field attention={self.attention!r}; valid: "
                             f"{', '.join(ATTENTION_IMPLEMENTATIONS)}")
        rope_type = self.rope_params.get("rope_type", "default")
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"unsupported rope scaling type {rope_type!r}; supported: "
                f"{', '.join(SUPPORTED_ROPE_TYPES)}"
            )

    @property
    def rope_params(self) -> dict[str, Any]:
        return dict(self.rope_scaling or ())

    @property
    def jnp_dtype(self) -> jnp.dtype:
        return _DTYPES[self.dtype]

    @property
    def jnp_param_dtype(self) -> jnp.dtype:
        return _DTYPES[self.param_dtype]

    @property
    def num_params(self) -> int:
        """Number of parameters (embedding counted once when tied)."""
        d, f, h, k, hd = (self.hidden_size, self.intermediate_size, self.num_heads,
                          self.num_kv_heads, self.head_dim)
        per_layer = d * hd * (2 * h + 2 * k) + 3 * d * f + 2 * d
        if self.attention_bias:
            per_layer += hd * (h + 2 * k)
        if self.qk_norm:
            per_layer += 2 * hd
        embed = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + embed + d

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def from_hf_config(hf: Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """Builds a ModelConfig from a Hugging Face `config.json` dict (transformers 4 or 5 keys)."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"unsupported model_type {model_type!r} in config.json; supported: "
            f"{', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"unsupported hidden_act {hf['hidden_act']!r}; only 'silu' (SwiGLU)")
    if hf.get("mlp_bias"):
        raise ValueError("unsupported config: mlp_bias=true")
    try:
        num_heads = int(hf["num_attention_heads"])
        hidden = int(hf["hidden_size"])
        rope = dict(hf.get("rope_parameters") or {})
        rope_theta = float(rope.pop("rope_theta", hf.get("rope_theta", 10000.0)))
        scaling = hf.get("rope_scaling") or rope
        scaling = {k: v for k, v in dict(scaling).items() if k != "rope_theta"}
        if "type" in scaling and "rope_type" not in scaling:
            scaling["rope_type"] = scaling.pop("type")
        if scaling.get("rope_type", "default") == "default":
            scaling = {}
        sliding = None
        if model_type == "mistral":
            sliding = hf.get("sliding_window")
        elif hf.get("use_sliding_window"):
            raise ValueError(f"unsupported config: {model_type} with use_sliding_window=true")
        fields = dict(
            architecture=model_type,
            vocab_size=int(hf["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(hf["intermediate_size"]),
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
            head_dim=int(hf.get("head_dim") or hidden // num_heads),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=tuple(sorted(scaling.items())) or None,
            max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            attention_bias=model_type == "qwen2" or bool(hf.get("attention_bias", False)),
            qk_norm=model_type == "qwen3",
            sliding_window=int(sliding) if sliding else None,
        )
    except KeyError as e:
        raise ValueError(f"config.json lacks required field {e.args[0]!r}") from None
    fields.update(overrides)
    return ModelConfig(**fields)


def to_hf_config(cfg: ModelConfig, *, bos_token_id: int | None,
                 eos_token_id: Any) -> dict[str, Any]:
    """The Hugging Face `config.json` dict for `cfg` (transformers 5 `rope_parameters` form)."""
    arch_class = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                  "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[cfg.architecture]
    rope = {"rope_type": "default", **cfg.rope_params, "rope_theta": cfg.rope_theta}
    hf: dict[str, Any] = {
        "architectures": [arch_class],
        "model_type": cfg.architecture,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "rope_parameters": rope,
        "rope_theta": cfg.rope_theta,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "torch_dtype": cfg.param_dtype,
    }
    if cfg.architecture in ("llama", "qwen3"):
        hf["attention_bias"] = cfg.attention_bias
    if cfg.architecture == "mistral":
        hf["sliding_window"] = cfg.sliding_window
    if cfg.rope_scaling:
        hf["rope_scaling"] = {"rope_type": "default", **cfg.rope_params}
    return hf
