"""Update throughput: tokens/s and model FLOPs utilisation of the jitted train step.

  python benchmarks/train_step.py --model-shape smollm2-135m --groups 4 --group-size 4
  python benchmarks/train_step.py --model-shape qwen2-0.5b --groups 8 --group-size 8 \\
      --prompt-length 512 --completion-length 512 --dtype bfloat16 --peak-tflops 989  # H100

Random weights and a random grouped batch (`ssp_jax.rl.batch`): --groups prompts of
--prompt-length tokens, each with --group-size completions of --completion-length tokens.
Each prompt goes through the model once per group and only completions are trained, as in
self-play. "tokens/s" counts the tokens the model processes (prompts once, completions);
MFU counts the matmul FLOPs that needs: 6 * (parameters - LM head) * processed tokens +
6 * LM head * completion tokens, over seconds and the peak. The peak is --peak-tflops, else
the datasheet bfloat16 peak of a known chip (benchmarks/common.py), else a float32 matmul
measured on the default device (the output says which).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from flax import nnx

from common import SHAPES, chip_for, matmul_tflops, update_flops
from ssp_jax.models import Transformer
from ssp_jax.rl.batch import TrainBatch
from ssp_jax.rl.update import init_train_state, make_train_step
from ssp_jax.sections import rl_section


def random_batch(groups: int, size: int, prompt_length: int, completion_length: int,
                 vocab: int) -> TrainBatch:
    """`groups` prompts of `prompt_length` tokens, each with `size` completions of
    `completion_length` tokens (all trained)."""
    rng = np.random.default_rng(0)
    rows = groups * size
    return TrainBatch(rng.integers(0, vocab, (groups, prompt_length)).astype(np.int32),
                      np.ones((groups, prompt_length), bool),
                      rng.integers(0, vocab, (rows, completion_length)).astype(np.int32),
                      np.ones((rows, completion_length), np.float32),
                      (-rng.uniform(0, 5, (rows, completion_length))).astype(np.float32),
                      rng.normal(size=rows).astype(np.float32), np.ones(rows, np.float32))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-shape", choices=sorted(SHAPES), default="smollm2-135m")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--groups", type=int, default=4, help="prompts per batch")
    p.add_argument("--group-size", type=int, default=4, help="completions per prompt")
    p.add_argument("--prompt-length", type=int, default=192)
    p.add_argument("--completion-length", type=int, default=64)
    p.add_argument("--micro-batches", type=int, default=1)
    p.add_argument("--remat", action="store_true")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, default=None)
    args = p.parse_args()
    cfg = SHAPES[args.model_shape].replace(param_dtype=args.dtype, dtype=args.dtype,
                                           remat=args.remat)
    update = rl_section(learning_rate=1e-6, micro_batches=args.micro_batches)
    opt = update.optimizer(num_steps=args.steps + 1)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    state = init_train_state(model.params(), opt)
    del model
    step = make_train_step(cfg, update, opt, temperature=1.0, num_steps=args.steps + 1)
    batch = (jax.device_put(random_batch(args.groups, args.group_size, args.prompt_length,
                                         args.completion_length, cfg.vocab_size)),)
    start = time.perf_counter()
    state, metrics = step(state, None, batch, None)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = step(state, None, batch, None)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / args.steps
    completions = args.groups * args.group_size * args.completion_length
    tokens = args.groups * args.prompt_length + completions
    kind = jax.devices()[0].device_kind
    chip = chip_for(kind)
    if args.peak_tflops:
        peak, source = args.peak_tflops, "--peak-tflops"
    elif chip:
        peak, source = chip.bf16_tflops, f"{chip.name} bf16 datasheet peak"
    else:
        peak, source = matmul_tflops(2048, 2048, 2048), "measured f32 matmul peak"
    flops = update_flops(cfg, tokens, completions) / seconds
    print(f"device: {kind} x{jax.device_count()}, jax {jax.__version__}")
    print(f"model {args.model_shape} ({cfg.num_params / 1e6:.1f}M params, {args.dtype}), "
          f"{args.groups} prompts x {args.prompt_length} tokens, each with {args.group_size} "
          f"completions x {args.completion_length}; micro-batches {args.micro_batches}")
    print(f"first step (with compilation) {compile_s:.1f} s; step {seconds:.3f} s; "
          f"{tokens / seconds:,.0f} tokens/s; {flops / 1e12:.3f} TFLOP/s; "
          f"MFU {flops / 1e12 / peak:.1%} of {peak:.2f} TFLOP/s ({source})")


if __name__ == "__main__":
    main()
