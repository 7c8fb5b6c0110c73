"""Device-memory estimate of a self-play run (parameters, optimizer, KV cache, activations),
checked against XLA's memory analysis of the compiled update and sampler.

  python -m ssp_jax.memory --config configs/qwen2_5_7b.py --devices 8

The model shape comes from the spec's config.json (a folder), the built-in models, or
`KNOWN_SHAPES` for the shipped large configs, so no weights are read. Figures are totals
over the mesh and per device (FSDP/tensor sharding divides parameters, optimizer state and
the cache; batch activations divide over data x fsdp). The compiled figures come from
lowering the jitted update and sampler on abstract inputs (`jax.ShapeDtypeStruct` with the
run's shardings: nothing is allocated) for a mesh of `--devices` devices; on a CPU host
these are fake CPU devices (`--xla_force_host_platform_device_count`), whose buffer
assignment approximates a GPU's or TPU's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys

from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from ml_collections.config_flags import config_flags

from ssp_jax import sharding
from ssp_jax.config import TrainConfig, validate
from ssp_jax.models.attention import resolve
from ssp_jax.models import lora
from ssp_jax.models.config import ModelConfig, from_hf_config
from ssp_jax.models.loading import abstract_model
from ssp_jax.models.tiny import tiny_config
from ssp_jax.rl.batch import TrainBatch
from ssp_jax.rl.rank import DECLINE_TOKENS, RankBatch, rank_batch_prompts
from ssp_jax.rl.update import (
    init_train_state,
    make_train_step,
    train_state_shardings,
)
from ssp_jax.sections import StepLayout
from ssp_jax.rollout.sampler import (MAX_STOP_IDS, DecodeStart, SamplingInputs, bucket_length,
                                     sampler_programs)

# published shapes of the models the large configs point at (public config.json values)
KNOWN_SHAPES = {
    "Qwen2.5-7B-Instruct": ModelConfig("qwen2", 152064, 3584, 18944, 28, 28, 4, 128,
                                       attention_bias=True),
    "Meta-Llama-3.1-8B-Instruct": ModelConfig("llama", 128256, 4096, 14336, 32, 32, 8, 128),
    "Llama-Guard-3-8B": ModelConfig("llama", 128256, 4096, 14336, 32, 32, 8, 128),
    "smollm2-135m-instruct": ModelConfig("llama", 49152, 576, 1536, 30, 9, 3, 64,
                                         tie_word_embeddings=True),
}
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def model_shape(spec: str) -> ModelConfig:
    """The ModelConfig of a spec without loading weights."""
    if spec == "tiny-random":
        return tiny_config()
    folder = pathlib.Path(spec).expanduser()
    if (folder / "config.json").exists():
        return from_hf_config(json.loads((folder / "config.json").read_text()))
    for name, shape in KNOWN_SHAPES.items():
        if spec.rstrip("/").endswith(name):
            return shape
    raise ValueError(f"cannot tell the shape of {spec!r}: not a folder with config.json and "
                     f"not one of {', '.join(KNOWN_SHAPES)}")


def estimate(cfg: TrainConfig, shape: ModelConfig, devices: int = 1,
             attention_kernel: str = "xla") -> dict[str, float]:
    """Bytes of each part, summed over all `devices` (the update's groups padded to whole groups
    per device, as the trainer pads them). `attention_kernel` ("xla" or a fused one) decides
    whether the update holds attention scores."""
    data, fsdp, _ = sharding.mesh_shape(dataclasses.asdict(cfg.mesh), devices)
    sp, layout = cfg.selfplay, StepLayout.of(cfg, row_shards=data * fsdp)
    p_bytes = _BYTES[cfg.model.dtype]
    n = shape.num_params
    if cfg.model.lora.enabled:  # frozen base (the reference too) + float32 adapters
        trained = lora.num_params(shape.replace(lora=cfg.model.lora))
        params = n * p_bytes + trained * 4
    else:
        trained = n
        params = n * p_bytes * (2 if cfg.rl.beta > 0 else 1)  # + frozen reference for the KL
    # a frozen reference the judge can share
    if (cfg.judge.model_based and not (cfg.judge.model or cfg.judge.url)
            and not cfg.has_reference_model):
        params += n * p_bytes  # the judge's frozen policy copy
    judge_cache = 0
    if cfg.judge.model_based and cfg.judge.model:  # a separate judge model and its cache
        judge = model_shape(cfg.judge.model)
        params += judge.num_params * p_bytes
        judge_cache = (2 * judge.num_layers * cfg.judge.batch_size * judge.num_kv_heads
                       * cfg.judge.max_cache_len * judge.head_dim * p_bytes)
    optimizer = trained * (4 + 4)  # Adam moments in float32
    grads = trained * 4  # float32 accumulation
    # rolled out (the batch keeps goals_per_step): prompts times samples per prompt
    rows_sampled = max(n * size for n, size in zip(layout.prompts(layout.rollout_goals),
                                                   layout.group_sizes))
    cache = (2 * shape.num_layers * rows_sampled * shape.num_kv_heads * cfg.model.max_cache_len
             * shape.head_dim * p_bytes) + judge_cache
    activations = max(_update_activations(cfg, shape, groups // cfg.rl.micro_batches, size,
                                          max_tokens, attention_kernel)
                      for groups, size, max_tokens in zip(
                          layout.num_groups, layout.group_sizes,
                          (sp.attacker_max_tokens, sp.defender_max_tokens)))
    return {"parameters": params, "optimizer": optimizer, "gradients": grads,
            "kv_cache": cache, "activations": activations}


def _update_activations(cfg: TrainConfig, shape: ModelConfig, groups: int, size: int,
                        completion: int, attention_kernel: str = "xla") -> int:
    """Bytes the backward pass keeps for one micro-batch of `groups` grouped sequences (a
    prompt, then `size` completions of `completion` tokens: L = P + size * completion).

    Per layer: ~(attention + MLP) intermediates per token, (4 h + 3 i) values, plus, with the
    XLA attention kernel, the scores (f32) and probabilities, H·L² per group (a fused kernel
    holds none). Without remat every layer keeps them; with remat each layer keeps its input
    and one layer is recomputed at a time. The LM head runs on completion tokens only: f32
    logits, softmax and their gradient."""
    p_bytes = _BYTES[cfg.model.dtype]
    length = cfg.selfplay.max_prompt_tokens + size * completion
    tokens = groups * length
    scores = groups * shape.num_heads * length ** 2 * (4 + p_bytes)
    layer = (tokens * (4 * shape.hidden_size + 3 * shape.intermediate_size) * p_bytes
             + scores * (attention_kernel == "xla"))
    saved = (shape.num_layers * tokens * shape.hidden_size * p_bytes + layer
             if cfg.model.remat else shape.num_layers * layer)
    return saved + 3 * groups * size * completion * shape.vocab_size * 4


def _prompt_bucket(cfg: TrainConfig, new_tokens: int) -> int:
    """The sampler's prompt bucket for max_prompt_tokens with `new_tokens` to generate."""
    return bucket_length(cfg.selfplay.max_prompt_tokens, cfg.model.max_cache_len - new_tokens)


def format_table(parts: dict[str, float], devices: int) -> str:
    total = sum(parts.values())
    lines = [f"{'part':<12}{'total GiB':>12}{'per device':>12}"]
    for k, v in [*parts.items(), ("total", total)]:
        lines.append(f"{k:<12}{v / 2**30:>12.2f}{v / devices / 2**30:>12.2f}")
    return "\n".join(lines)


class Compiled(NamedTuple):
    """XLA's memory analysis of one compiled program, bytes per device."""

    arguments: int
    outputs: int
    aliased: int  # outputs that reuse (donated) argument buffers
    temp: int

    @property
    def peak(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temp

    @classmethod
    def of(cls, compiled: Any) -> "Compiled":
        m = compiled.memory_analysis()
        return cls(m.argument_size_in_bytes, m.output_size_in_bytes, m.alias_size_in_bytes,
                   m.temp_size_in_bytes)


def _abstract(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def abstract_params(model_cfg: ModelConfig, mesh: Mesh) -> dict:
    """The parameters as `ShapeDtypeStruct`s in their rule-table shardings (no memory)."""
    model = abstract_model(model_cfg)
    axes = sharding.param_logical_axes(model)
    return jax.tree.map(
        lambda x, a: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.logical_sharding(
            a, x.shape, mesh, sharding.TRAIN_RULES)),
        nnx.to_pure_dict(nnx.state(model, nnx.Param)), axes)


def run_model_config(cfg: TrainConfig, shape: ModelConfig) -> ModelConfig:
    """The model config a run of `cfg` uses for `shape` (dtype, remat, attention, LoRA)."""
    return shape.replace(param_dtype=cfg.model.dtype, dtype=cfg.model.dtype,
                         remat=cfg.model.remat, attention=cfg.model.attention,
                         lora=cfg.model.lora)


def compiled_update(cfg: TrainConfig, shape: ModelConfig, mesh: Mesh) -> Compiled:
    """Compiles the update step on abstract inputs shaped and sharded like the trainer's:
    the state (the adapters only, with LoRA), the KL reference (when rl.beta > 0; with LoRA
    the frozen base) and both roles' batches at their longest prompt bucket."""
    model_cfg = run_model_config(cfg, shape)
    params = abstract_params(model_cfg, mesh)
    param_shardings = jax.tree.map(lambda x: x.sharding, params)
    optimizer = cfg.rl.optimizer(cfg.train.num_steps)
    trained = params
    if model_cfg.lora.enabled:
        trained = _abstract(
            jax.eval_shape(lambda key: lora.init_adapters(model_cfg, key), jax.random.key(0)),
            lora.shardings(model_cfg, mesh, sharding.TRAIN_RULES))
    state = _abstract(jax.eval_shape(lambda p: init_train_state(p, optimizer), trained),
                      train_state_shardings(trained, optimizer))
    sp = cfg.selfplay
    layout = StepLayout.of(cfg, sharding.axis_size("batch", mesh, sharding.TRAIN_RULES))
    batches = []
    for groups, size, new in zip(layout.num_groups, layout.group_sizes,
                                 (sp.attacker_max_tokens, sp.defender_max_tokens)):
        rows = groups * size
        shapes = TrainBatch(((groups, sp.max_prompt_tokens), np.int32),
                            ((groups, sp.max_prompt_tokens), bool), ((rows, new), np.int32),
                            ((rows, new), np.float32), ((rows, new), np.float32),
                            ((rows,), np.float32), ((rows,), np.float32))
        batches.append(TrainBatch(*[
            jax.ShapeDtypeStruct(s, d, sharding=sharding.logical_sharding(
                ("batch", "seq")[:len(s)], s, mesh, sharding.TRAIN_RULES))
            for s, d in shapes]))
    ref = params if cfg.has_reference_model else None
    rank = abstract_rank_batch(cfg, mesh) if cfg.rl.rank_weight else None
    step = make_train_step(
        model_cfg, cfg.rl, optimizer, temperature=sp.update_temperature,
        num_steps=cfg.train.num_steps, state_shardings=jax.tree.map(lambda x: x.sharding, state),
        batch_shardings=tuple(jax.tree.map(lambda x: x.sharding, b) for b in batches),
        ref_shardings=param_shardings if ref is not None else None,
        rank_shardings=jax.tree.map(lambda x: x.sharding, rank))
    return Compiled.of(step.lower(state, ref, tuple(batches), rank).compile())


def abstract_rank_batch(cfg: TrainConfig, mesh: Mesh) -> RankBatch:
    """The decline-ranking batch's shapes (`train.Trainer`'s: 2 x `rl.rank_prompts` prompts
    rounded up to the row shards, each with every decline padded to `DECLINE_TOKENS`)."""
    m = rank_batch_prompts(cfg.rl.rank_prompts,
                           sharding.axis_size("batch", mesh, sharding.TRAIN_RULES))
    rows = m * len(cfg.rl.rank_declines)
    p = cfg.selfplay.max_prompt_tokens
    shapes = RankBatch(((m, p), np.int32), ((m, p), bool), ((rows, DECLINE_TOKENS), np.int32),
                       ((rows, DECLINE_TOKENS), np.float32), ((m,), np.float32),
                       ((m,), np.float32))
    return RankBatch(*[jax.ShapeDtypeStruct(s, d, sharding=sharding.logical_sharding(
        ("batch", "seq")[:len(s)], s, mesh, sharding.TRAIN_RULES)) for s, d in shapes])


def compiled_sampler(cfg: TrainConfig, shape: ModelConfig, mesh: Mesh) -> Compiled:
    """Compiles both roles' prefill and decode programs on abstract inputs; the largest
    peak."""
    model_cfg = run_model_config(cfg, shape)
    params = abstract_params(model_cfg, mesh)
    sp = cfg.selfplay
    multiple = sharding.axis_size("batch", mesh, sharding.TRAIN_RULES)
    layout = StepLayout.of(cfg, row_shards=multiple)
    prompts = layout.prompts(layout.rollout_goals)  # rolled out; the batch keeps G goals
    results = []
    for n, samples, new in zip(prompts, layout.group_sizes,
                               (sp.attacker_max_tokens, sp.defender_max_tokens)):
        n = -(-n // multiple) * multiple
        length = _prompt_bucket(cfg, new)
        prefill, decode = sampler_programs(model_cfg, params, n, length, new, samples)
        prompt = jax.ShapeDtypeStruct((n, length), np.int32)
        mask = jax.ShapeDtypeStruct((n, length), bool)
        compiled = prefill.lower(params, prompt, mask).compile()
        results.append(Compiled.of(compiled))
        logits, cache, kv_mask, lengths = _abstract(jax.eval_shape(prefill, params, prompt, mask),
                                                    compiled.output_shardings)
        # [N] bool per row: DecodeStart's active and greedy
        rows = jax.ShapeDtypeStruct((n * samples,), bool, sharding=lengths.sharding)
        scalar = lambda dtype, shape=(): jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731
        results.append(Compiled.of(decode.lower(
            params, cache, DecodeStart(logits, kv_mask, lengths, rows, rows),
            SamplingInputs(scalar(np.uint32, (2,)), scalar(np.float32), scalar(np.int32),
                           scalar(np.float32), scalar(np.int32, (MAX_STOP_IDS,)))).compile()))
    return max(results, key=lambda c: c.peak)


def update_estimate(cfg: TrainConfig, parts: dict[str, float], shape: ModelConfig,
                    devices: int) -> float:
    """The estimate's bytes per device for what the update program holds: the policy and its
    reference, optimizer, gradients, activations (not the judge's copy or the cache)."""
    policy = shape.num_params * _BYTES[cfg.model.dtype] * (2 if cfg.rl.beta > 0 else 1)
    return (policy + parts["optimizer"] + parts["gradients"] + parts["activations"]) / devices


def sampler_estimate(cfg: TrainConfig, parts: dict[str, float], shape: ModelConfig,
                     devices: int) -> float:
    """The estimate's bytes per device for what the sampler holds: its share of the policy
    and the cache, plus the whole policy when FSDP shards it (XLA gathers the weights once
    for all decode steps)."""
    weights = shape.num_params * _BYTES[cfg.model.dtype]
    _, fsdp, _ = sharding.mesh_shape(dataclasses.asdict(cfg.mesh), devices)
    return (weights + parts["kv_cache"]) / devices + (weights if fsdp > 1 else 0)


def compare_table(cfg: TrainConfig, shape: ModelConfig, devices: int,
                  update: Compiled, sampler: Compiled) -> str:
    """Per-device estimate beside XLA's compiled peak (arguments + outputs - aliased + temp)."""
    parts = estimate(cfg, shape, devices, resolve(cfg.model.attention, cfg.model.dtype))
    gib = lambda x: f"{x / 2**30:>12.2f}"  # noqa: E731
    lines = [f"{'per device':<12}{'estimate':>12}{'compiled':>12}{'ratio':>8}   (GiB)"]
    for name, est, c in (("update", update_estimate(cfg, parts, shape, devices), update),
                         ("sampler", sampler_estimate(cfg, parts, shape, devices), sampler)):
        lines.append(f"{name:<12}{gib(est)}{gib(c.peak)}{est / c.peak:>8.2f}"
                     f"   (compiled: arguments {c.arguments / 2**30:.2f}, outputs "
                     f"{c.outputs / 2**30:.2f}, aliased {c.aliased / 2**30:.2f}, temp "
                     f"{c.temp / 2**30:.2f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssp_jax.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--estimate-only", action="store_true",
                   help="skip compiling the update and sampler")
    args = p.parse_args(argv)
    # fake CPU devices for the compile, set before JAX starts its backends
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
    cfg = validate(config_flags.ConfigFileFlagParser(name="config").parse(args.config))
    shape = model_shape(cfg.model.spec)
    print(f"{cfg.model.spec}: {shape.num_params / 1e9:.2f} B parameters, {args.devices} devices")
    kernel = resolve(cfg.model.attention, cfg.model.dtype)
    print(format_table(estimate(cfg, shape, args.devices, kernel), args.devices))
    if args.estimate_only:
        return 0
    devices = jax.devices()
    if len(devices) < args.devices:
        raise SystemExit(f"--devices {args.devices}: only {len(devices)} "
                         f"{jax.default_backend()} devices")
    mesh = sharding.make_mesh(dataclasses.asdict(cfg.mesh), devices[:args.devices])
    print(f"\nXLA memory analysis on {args.devices} {devices[0].platform} devices, mesh "
          f"{dict(mesh.shape)}:")
    with jax.set_mesh(mesh):  # as the trainer does: activation constraints apply
        compiled = compiled_update(cfg, shape, mesh), compiled_sampler(cfg, shape, mesh)
    print(compare_table(cfg, shape, args.devices, *compiled))
    return 0


if __name__ == "__main__":
    sys.exit(main())
