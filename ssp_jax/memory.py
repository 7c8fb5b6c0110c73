"""Device-memory estimate of a self-play run (parameters, optimizer, KV cache, activations).

  python -m ssp_jax.memory --config configs/qwen2_5_7b.py --devices 8

The model shape comes from the spec's config.json (a folder), the built-in models, or
`KNOWN_SHAPES` for the shipped large configs, so no weights are read. Figures are totals
over the mesh and per device (FSDP/tensor sharding divides parameters, optimizer state and
the cache; batch activations divide over data x fsdp).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from ml_collections.config_flags import config_flags

from ssp_jax.config import TrainConfig, validate
from ssp_jax.models.config import ModelConfig, from_hf_config
from ssp_jax.models.tiny import tiny_config

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


def estimate(cfg: TrainConfig, shape: ModelConfig) -> dict[str, float]:
    """Bytes of each part, summed over all devices."""
    sp = cfg.selfplay
    p_bytes = _BYTES[cfg.model.dtype]
    n = shape.num_params
    params = n * p_bytes * (2 if cfg.rl.beta > 0 else 1)  # + frozen reference for the KL
    if cfg.judge.model_based and not (cfg.judge.model or cfg.judge.url) and not cfg.rl.beta > 0:
        params += n * p_bytes  # the judge's frozen policy copy (else shared with the KL reference)
    judge_cache = 0
    if cfg.judge.model_based and cfg.judge.model:  # a separate judge model and its cache
        judge = model_shape(cfg.judge.model)
        params += judge.num_params * p_bytes
        judge_cache = (2 * judge.num_layers * cfg.judge.batch_size * judge.num_kv_heads
                       * cfg.judge.max_cache_len * judge.head_dim * p_bytes)
    optimizer = n * (4 + 4)  # Adam moments in float32
    grads = n * 4  # float32 accumulation
    rows_sampled = max(sp.goals_per_step * sp.attacks_per_goal,
                       (sp.goals_per_step * sp.attacks_per_goal + sp.replay_per_step
                        + sp.benign_per_step) * sp.responses_per_attack)
    cache = (2 * shape.num_layers * rows_sampled * shape.num_kv_heads * cfg.model.max_cache_len
             * shape.head_dim * p_bytes) + judge_cache
    activations = max(_update_activations(cfg, shape, groups // cfg.rl.micro_batches, size,
                                          max_tokens)
                      for groups, size, max_tokens in zip(
                          sp.num_groups, sp.group_sizes,
                          (sp.attacker_max_tokens, sp.defender_max_tokens)))
    return {"parameters": params, "optimizer": optimizer, "gradients": grads,
            "kv_cache": cache, "activations": activations}


def _update_activations(cfg: TrainConfig, shape: ModelConfig, groups: int, size: int,
                        completion: int) -> int:
    """Bytes the backward pass keeps for one micro-batch of `groups` grouped sequences (a
    prompt, then `size` completions of `completion` tokens: L = P + size * completion).

    Per layer: ~(attention + MLP) intermediates per token, (4 h + 3 i) values, plus the
    attention scores (f32) and probabilities, H·L² per group. Without remat every layer keeps
    them; with remat each layer keeps its input and one layer is recomputed at a time. The
    LM head runs on completion tokens only: f32 logits, softmax and their gradient."""
    p_bytes = _BYTES[cfg.model.dtype]
    length = cfg.selfplay.max_prompt_tokens + size * completion
    tokens = groups * length
    layer = (tokens * (4 * shape.hidden_size + 3 * shape.intermediate_size) * p_bytes
             + groups * shape.num_heads * length ** 2 * (4 + p_bytes))
    saved = (shape.num_layers * tokens * shape.hidden_size * p_bytes + layer
             if cfg.model.remat else shape.num_layers * layer)
    return saved + 3 * groups * size * completion * shape.vocab_size * 4


def format_table(parts: dict[str, float], devices: int) -> str:
    total = sum(parts.values())
    lines = [f"{'part':<12}{'total GiB':>12}{'per device':>12}"]
    for k, v in [*parts.items(), ("total", total)]:
        lines.append(f"{k:<12}{v / 2**30:>12.2f}{v / devices / 2**30:>12.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssp_jax.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--devices", type=int, default=1)
    args = p.parse_args(argv)
    cfg = validate(config_flags.ConfigFileFlagParser(name="config").parse(args.config))
    shape = model_shape(cfg.model.spec)
    print(f"{cfg.model.spec}: {shape.num_params / 1e9:.2f} B parameters, {args.devices} devices")
    print(format_table(estimate(cfg, shape), args.devices))
    return 0


if __name__ == "__main__":
    sys.exit(main())
