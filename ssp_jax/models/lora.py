"""LoRA adapters on the decoder's projections: the arrays `params["lora"]`.

The adapter of a projection W (per layer, input axes I, output axes O) is A `[*I, r]` and
B `[r, *O]`, stacked on the leading `layers` axis like W; the projection becomes
`x·W + (alpha / r)·(dropout(x)·A)·B`. B starts at zero, so a fresh adapter leaves the model
unchanged. A carries W's input logical axes and B its output axes (the rank axis is
`lora_rank`), so the rule table shards adapters like the matrices they wrap.

A parameter dict with a `lora` entry runs with adapters; without it, it is the base model
(the KL reference, the frozen judge). `merge` folds adapters into the weights for export;
`peft_tensors` / `peft_config` write them in PEFT's adapter format.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ssp_jax.models.config import ModelConfig
from ssp_jax.models.hf_io import HF_LAYER_NAMES
from ssp_jax.models.shapes import Spec, layer_param_shapes
from ssp_jax.sharding import Rules, logical_sharding

Params = dict[str, Any]
_INPUT_DIMS = {"o_proj": 2}  # o_proj reads [H, Dh]; every other target reads one axis


def adapter_specs(cfg: ModelConfig) -> dict[str, dict[str, Spec]]:
    """Target name -> {"a": spec, "b": spec} for `cfg.lora.targets`."""
    base = layer_param_shapes(cfg)
    r, n = cfg.lora.rank, cfg.num_layers
    specs = {}
    for name in cfg.lora.targets:
        shape, axes = base[name]
        k = _INPUT_DIMS.get(name, 1)
        specs[name] = {"a": ((n, *shape[:k], r), ("layers", *axes[:k], "lora_rank")),
                       "b": ((n, r, *shape[k:]), ("layers", "lora_rank", *axes[k:]))}
    return specs


def logical_axes(cfg: ModelConfig) -> dict[str, dict[str, tuple[str, ...]]]:
    """The adapters' logical axes, in the layout `init_adapters` returns."""
    return {name: {ab: spec[1] for ab, spec in ab_specs.items()}
            for name, ab_specs in adapter_specs(cfg).items()}


def num_params(cfg: ModelConfig) -> int:
    """Adapter parameters (A and B of every target, all layers)."""
    return sum(math.prod(spec[0]) for ab in adapter_specs(cfg).values() for spec in ab.values())


def init_adapters(cfg: ModelConfig, key: jax.Array) -> Params:
    """Fresh float32 adapters: A uniform in ±1/sqrt(fan_in) (PEFT's default A init), B zero."""
    out = {}
    for i, (name, specs) in enumerate(adapter_specs(cfg).items()):
        a_shape, b_shape = specs["a"][0], specs["b"][0]
        bound = 1.0 / math.sqrt(math.prod(a_shape[1:-1]))
        out[name] = {"a": jax.random.uniform(jax.random.fold_in(key, i), a_shape, jnp.float32,
                                             -bound, bound),
                     "b": jnp.zeros(b_shape, jnp.float32)}
    return out


def project(lp: Params, cfg: ModelConfig, name: str, equation: str, x: jax.Array) -> jax.Array:
    """One layer's projection `name` of x (`equation` contracts x with the base weight), plus
    its adapter when the layer inputs `lp` hold one (`lp["lora"][name]`: a `[*I, r]`,
    b `[r, *O]`). Dropout on the adapter input applies when `lp` holds a `lora_key`."""
    dt = x.dtype
    y = jnp.einsum(equation, x, lp[name].astype(dt))
    adapter = lp.get("lora", {}).get(name)
    if adapter is None:
        return y
    a, b = adapter["a"].astype(dt), adapter["b"].astype(dt)
    rate = cfg.lora.dropout
    if "lora_key" in lp and rate > 0:
        key = jax.random.fold_in(lp["lora_key"], cfg.lora.targets.index(name))
        x = jnp.where(jax.random.bernoulli(key, 1 - rate, x.shape), x / (1 - rate), 0).astype(dt)
    low = jnp.tensordot(x, a, axes=a.ndim - 1)  # [..., r]
    return y + (cfg.lora.scale * jnp.tensordot(low, b, axes=1)).astype(dt)


def layer_inputs(params: Params) -> Params:
    """What the decoder's layer scan slices: the stacked weights, and the adapters if any."""
    if "lora" not in params:
        return params["layers"]
    return {**params["layers"], "lora": params["lora"]}


def with_adapters(base: Params, adapters: Params) -> Params:
    """The adapted model's parameter dict (no copy of the base arrays)."""
    return {**base, "lora": adapters}


def merge(cfg: ModelConfig, params: Params) -> Params:
    """Base weights with each adapter folded in, `W + scale * A @ B` (computed in float32,
    stored in W's dtype); the result has no `lora` entry."""
    layers = dict(params["layers"])
    for name, ad in params["lora"].items():
        w = layers[name]
        a = jnp.asarray(ad["a"], jnp.float32)
        b = jnp.asarray(ad["b"], jnp.float32)
        n, r = a.shape[0], a.shape[-1]
        delta = jnp.matmul(a.reshape(n, -1, r), b.reshape(n, r, -1)).reshape(w.shape)
        layers[name] = (jnp.asarray(w, jnp.float32) + cfg.lora.scale * delta).astype(w.dtype)
    return {k: v for k, v in params.items() if k != "lora"} | {"layers": layers}


def peft_tensors(cfg: ModelConfig, adapters: Params) -> dict[str, np.ndarray]:
    """Adapters under PEFT's saved key names, per layer: `lora_A.weight [r, in]` and
    `lora_B.weight [out, r]` (the Hugging Face `[out, in]` convention, float32)."""
    out = {}
    for name, ad in adapters.items():
        a, b = np.asarray(ad["a"], np.float32), np.asarray(ad["b"], np.float32)
        r = a.shape[-1]
        module = HF_LAYER_NAMES[name].removesuffix(".weight")
        for i in range(cfg.num_layers):
            prefix = f"base_model.model.model.layers.{i}.{module}"
            out[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(a[i].reshape(-1, r).T)
            out[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(b[i].reshape(r, -1).T)
    return out


def peft_config(cfg: ModelConfig, base_model: str) -> dict[str, Any]:
    """PEFT's `adapter_config.json` for these adapters on `base_model`."""
    lc = cfg.lora
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
            "r": lc.rank, "lora_alpha": lc.alpha, "lora_dropout": lc.dropout,
            "target_modules": sorted(lc.targets), "bias": "none", "fan_in_fan_out": False,
            "inference_mode": True, "init_lora_weights": True, "modules_to_save": None,
            "use_rslora": False, "use_dora": False, "layers_to_transform": None,
            "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {}, "revision": None}


def shardings(cfg: ModelConfig, mesh: Mesh, rules: Rules) -> dict:
    """NamedShardings of the adapters under the rule table (like their base matrices)."""
    return {name: {ab: logical_sharding(spec[1], spec[0], mesh, rules)
                   for ab, spec in ab_specs.items()}
            for name, ab_specs in adapter_specs(cfg).items()}
