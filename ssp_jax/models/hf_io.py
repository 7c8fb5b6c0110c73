"""Hugging Face weight I/O: safetensors folders <-> our stacked parameter layout.

HF stores per-layer 2-D matrices `[out, in]` (`model.layers.{i}.self_attn.q_proj.weight`);
we store one stacked array per kind with the layer axis first (`layers/q_proj [L, D, H, Dh]`).
The converters here are the only place that knows both layouts.
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any, Callable, NamedTuple

import numpy as np
import safetensors
import safetensors.numpy

from ssp_jax.models.config import ModelConfig, to_hf_config

log = logging.getLogger(__name__)

TensorGetter = Callable[..., np.ndarray]  # (name, index=None) -> tensor or its slice
_PREFIX = "model.layers.{i}."
# our stacked name -> HF per-layer name suffix
HF_LAYER_NAMES = {
    "attn_norm": "input_layernorm.weight",
    "q_proj": "self_attn.q_proj.weight",
    "k_proj": "self_attn.k_proj.weight",
    "v_proj": "self_attn.v_proj.weight",
    "o_proj": "self_attn.o_proj.weight",
    "q_bias": "self_attn.q_proj.bias",
    "k_bias": "self_attn.k_proj.bias",
    "v_bias": "self_attn.v_proj.bias",
    "q_norm": "self_attn.q_norm.weight",
    "k_norm": "self_attn.k_norm.weight",
    "mlp_norm": "post_attention_layernorm.weight",
    "gate_proj": "mlp.gate_proj.weight",
    "up_proj": "mlp.up_proj.weight",
    "down_proj": "mlp.down_proj.weight",
}


def _from_hf_layer(name: str, w: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """One layer's HF tensor -> our per-layer layout."""
    d, h, k, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    if name == "q_proj":
        return w.T.reshape(d, h, hd)
    if name in ("k_proj", "v_proj"):
        return w.T.reshape(d, k, hd)
    if name == "o_proj":
        return w.T.reshape(h, hd, d)
    if name in ("gate_proj", "up_proj", "down_proj"):
        return w.T
    if name == "q_bias":
        return w.reshape(h, hd)
    if name in ("k_bias", "v_bias"):
        return w.reshape(k, hd)
    return w


def _to_hf_layer(name: str, w: np.ndarray) -> np.ndarray:
    """One layer's array in our layout -> the HF tensor."""
    if name in ("q_proj", "k_proj", "v_proj"):
        return w.reshape(w.shape[0], -1).T
    if name == "o_proj":
        return w.reshape(-1, w.shape[-1]).T
    if name in ("gate_proj", "up_proj", "down_proj"):
        return w.T
    if name in ("q_bias", "k_bias", "v_bias"):
        return w.reshape(-1)
    return w


class LazyTensor(NamedTuple):
    """A parameter not read yet: its shape in our layout and `read(index)`, which returns
    `array[index]` (index: a tuple of slices) in our layout and the target dtype, touching
    only what that slice needs (one layer at a time for stacked layer weights)."""

    shape: tuple[int, ...]
    read: Callable[[tuple[slice, ...]], np.ndarray]

    def materialize(self) -> np.ndarray:
        return self.read(tuple(slice(None) for _ in self.shape))


def lazy_params_from_hf(cfg: ModelConfig, get: TensorGetter,
                        layer_shapes: dict[str, tuple[tuple[int, ...], Any]],
                        dtype: np.dtype) -> dict:
    """Our nested parameter dict of LazyTensors over HF-named tensors read through `get`
    (`get(name, index=None)`; index slices the HF tensor). `layer_shapes` is
    `shapes.layer_param_shapes(cfg)` (our per-layer shapes)."""
    def convert(w: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(w.astype(dtype))

    def layer_reader(name: str) -> Callable[[tuple[slice, ...]], np.ndarray]:
        hf_suffix = HF_LAYER_NAMES[name]

        def read(index: tuple[slice, ...]) -> np.ndarray:
            return convert(np.stack([
                _from_hf_layer(name, get(_PREFIX.format(i=i) + hf_suffix), cfg)[index[1:]]
                for i in range(cfg.num_layers)[index[0]]]))

        return read

    d, v = cfg.hidden_size, cfg.vocab_size
    params = {
        "embed": LazyTensor((v, d), lambda ix: convert(get("model.embed_tokens.weight", ix))),
        "layers": {name: LazyTensor((cfg.num_layers, *shape), layer_reader(name))
                   for name, (shape, _) in layer_shapes.items()},
        "final_norm": LazyTensor((d,), lambda ix: convert(get("model.norm.weight", ix))),
    }
    if not cfg.tie_word_embeddings:
        params["lm_head"] = LazyTensor(
            (d, v), lambda ix: convert(get("lm_head.weight", (ix[1], ix[0])).T))
    return params


def params_to_hf(cfg: ModelConfig, params: dict) -> dict[str, np.ndarray]:
    """Our nested parameter dict (NumPy or JAX arrays) -> HF-named NumPy tensors."""
    out = {"model.embed_tokens.weight": np.asarray(params["embed"]),
           "model.norm.weight": np.asarray(params["final_norm"])}
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = np.asarray(params["lm_head"]).T
    for name, stacked in params["layers"].items():
        stacked = np.asarray(stacked)
        for i in range(cfg.num_layers):
            out[_PREFIX.format(i=i) + HF_LAYER_NAMES[name]] = _to_hf_layer(name, stacked[i])
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def safetensors_getter(folder: pathlib.Path) -> TensorGetter:
    """A name -> NumPy tensor reader over a folder's `*.safetensors` files (sharded or not)."""
    index_file = folder / "model.safetensors.index.json"
    if index_file.exists():
        weight_map = json.loads(index_file.read_text())["weight_map"]
        files = {name: folder / fname for name, fname in weight_map.items()}
    else:
        files = {}
        for path in sorted(folder.glob("*.safetensors")):
            with safetensors.safe_open(str(path), framework="numpy") as f:
                files.update({name: path for name in f.keys()})
    if not files:
        raise FileNotFoundError(
            f"no weights in {folder}: expected model.safetensors or "
            "model.safetensors.index.json with its shards (PyTorch .bin files are not read)"
        )
    handles: dict[pathlib.Path, safetensors.safe_open] = {}

    def get(name: str, index: tuple[slice, ...] | None = None) -> np.ndarray:
        """The tensor `name`, or only its `index` slice (read from the memory-mapped file)."""
        if name not in files:
            raise KeyError(f"tensor {name!r} not found in the safetensors files of {folder}")
        path = files[name]
        if path not in handles:
            if not path.exists():
                raise FileNotFoundError(f"weight shard {path} listed in the index is missing")
            handles[path] = safetensors.safe_open(str(path), framework="numpy")
        if index is None:
            return handles[path].get_tensor(name)
        return handles[path].get_slice(name)[index]

    return get


def save_weights(cfg: ModelConfig, params: dict, out_dir: pathlib.Path, *,
                 bos_token_id: int | None, eos_token_id) -> None:
    """Writes `config.json` and `model.safetensors` (our params, in their storage dtype)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = params_to_hf(cfg, params)
    safetensors.numpy.save_file(tensors, str(out_dir / "model.safetensors"),
                                metadata={"format": "pt"})
    hf_config = to_hf_config(cfg, bos_token_id=bos_token_id, eos_token_id=eos_token_id)
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    log.info("wrote %d tensors to %s", len(tensors), out_dir)
