"""Generated tokens per second: our jitted sampler vs transformers `generate` (PyTorch).

Same weights (SmolLM2-135M-Instruct dequantized from its GGUF), same chat prompts, same
batch, same number of new tokens (stop tokens disabled on both sides so every row decodes
exactly --new-tokens tokens), greedy. Ours is timed after a warm-up call (compilation is
reported separately). Under each row: our decode step alone ((time of N new tokens - time of
1) / (N - 1)) in GFLOP/s against this machine's float32 matmul limit at the same rows.

  python benchmarks/rollout.py --batch-sizes 1 16 --new-tokens 64

With --samples-per-prompt S each batch is B / S prompts with S samples each, the shape of a
GRPO rollout (self-play samples every attacker and defender prompt S times), at temperature
0.7 without top-k/top-p: ours prefills each prompt once and fans its cache out
(`num_samples`), transformers expands the inputs first (`num_return_sequences`).

  python benchmarks/rollout.py --batch-sizes 16 --new-tokens 48 --samples-per-prompt 4

With --model-shape (benchmarks/common.py) it instead times random weights of that shape in
--dtype on random prompts of --prompt-length tokens, without the PyTorch side, and reports
decode tokens/s, (time of N new tokens - time of 1) per token, against the memory-bandwidth
roofline: every decode step reads all weights and the batch's KV cache once, at --hbm-gbps
or the datasheet bandwidth of a known chip.

  python benchmarks/rollout.py --model-shape qwen2-0.5b --dtype bfloat16 --batch-sizes 1 64
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np
from flax import nnx

from common import SHAPES, chip_for, decode_roofline_tokens_per_s, matmul_tflops
from ssp_jax.models import Transformer, load
from ssp_jax.models.loading import builtin_path
from ssp_jax.rollout import generate

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how photosynthesis works.",
    "Give me three tips for learning a new language.",
    "What are the main causes of inflation?",
]
SAMPLED_TEMPERATURE = 0.7


def time_ours(model, prompts, new_tokens, repeats, samples=1):
    temperature = SAMPLED_TEMPERATURE if samples > 1 else 0.0
    run = lambda: generate(model, prompts, new_tokens, temperature=temperature,  # noqa: E731
                           num_samples=samples)
    run()  # compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    assert out.num_tokens == len(prompts) * samples * new_tokens
    return best


def time_torch(path, prompts, new_tokens, repeats, pad_id, samples=1):
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=pad_id,
                  do_sample=samples > 1, num_return_sequences=samples)
    if samples > 1:
        kwargs.update(temperature=SAMPLED_TEMPERATURE, top_k=0, top_p=1.0)
    with torch.no_grad():
        model.generate(ids, attention_mask=mask, **kwargs)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            out = model.generate(ids, attention_mask=mask, **kwargs)
            best = min(best, time.perf_counter() - start)
    assert out.shape[1] - width == new_tokens
    return best, torch.get_num_threads()


def random_shape(args: argparse.Namespace) -> None:
    """Decode tokens/s of random weights against the memory-bandwidth roofline."""
    cfg = SHAPES[args.model_shape].replace(param_dtype=args.dtype, dtype=args.dtype)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    kind = jax.devices()[0].device_kind
    chip = chip_for(kind)
    hbm = args.hbm_gbps or (chip.hbm_gbps if chip else None)
    print(f"device: {kind}, jax {jax.__version__}; model {args.model_shape} "
          f"({cfg.num_params / 1e6:.1f}M params, {args.dtype}), prompts of "
          f"{args.prompt_length} tokens, {args.new_tokens} new tokens")
    print(f"{'batch':>5} {'decode tok/s':>13} {'roofline tok/s':>15} {'of roofline':>12}  "
          f"(bandwidth: {f'{hbm:.0f} GB/s' if hbm else 'unknown, give --hbm-gbps'})")
    rng = np.random.default_rng(0)
    for b in args.batch_sizes:
        prompts = rng.integers(0, cfg.vocab_size, (b, args.prompt_length)).tolist()
        full = time_ours(model, prompts, args.new_tokens, args.repeats)
        prefill = time_ours(model, prompts, 1, args.repeats)
        decode = b * (args.new_tokens - 1) / max(full - prefill, 1e-9)
        line = f"{b:>5} {decode:>13.1f}"
        if hbm:
            mean_cache = args.prompt_length + args.new_tokens / 2
            roof = decode_roofline_tokens_per_s(cfg, b, mean_cache, hbm)
            line += f" {roof:>15.1f} {decode / roof:>12.1%}"
        print(line, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--samples-per-prompt", type=int, default=1,
                   help="batch = B / S prompts x S samples at temperature 0.7 (GRPO rollouts)")
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument("--model-shape", choices=sorted(SHAPES), default=None,
                   help="random weights of this shape instead of SmolLM2 (no torch side)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="with --model-shape")
    p.add_argument("--prompt-length", type=int, default=128, help="with --model-shape")
    p.add_argument("--hbm-gbps", type=float, default=None,
                   help="memory bandwidth for the roofline (default: the known chip's)")
    args = p.parse_args()
    s = args.samples_per_prompt
    if s < 1 or any(b % s for b in args.batch_sizes):
        p.error(f"--samples-per-prompt {s} must be >= 1 and divide every batch size")
    if args.model_shape:
        random_shape(args)
        return
    model, tokenizer = load("smollm2-135m-instruct")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}")
    print(f"{args.new_tokens} new tokens, {s} sample(s) per prompt "
          f"({'temperature 0.7' if s > 1 else 'greedy'})")
    print(f"{'batch':>5} {'ours tok/s':>11} {'torch tok/s':>12} {'ratio':>6}")
    for b in args.batch_sizes:
        prompts = [tokenizer.chat_prompt(PROMPTS[i % len(PROMPTS)]) for i in range(b // s)]
        full = time_ours(model, prompts, args.new_tokens, args.repeats, s)
        ours = b * args.new_tokens / full
        line = f"{b:>5} {ours:>11.1f}"
        if not args.skip_torch:
            t, threads = time_torch(builtin_path("smollm2-135m-instruct"), prompts,
                                    args.new_tokens, args.repeats, tokenizer.pad_id, s)
            theirs = b * args.new_tokens / t
            line += f" {theirs:>12.1f} {ours / theirs:>6.2f}  (torch threads: {threads})"
        print(line, flush=True)
        decode_limit(model, prompts, args, s, full)


def decode_limit(model, prompts, args, samples, full: float) -> None:
    """How far our decode step is from this machine's matmul limit: its FLOP/s (2 x params x
    rows per step; attention left out), against a float32 matmul of the LM head's shape at
    the same rows (the skinny shapes decode runs) and a 2048^3 one (a rough peak). full:
    seconds of the row's timed call (--new-tokens tokens)."""
    cfg, rows = model.config, len(prompts) * samples
    first = time_ours(model, prompts, 1, args.repeats, samples)
    step = (full - first) / (args.new_tokens - 1)
    achieved = 2 * cfg.num_params * rows / step / 1e12
    skinny = matmul_tflops(rows, cfg.hidden_size, cfg.vocab_size)
    square = matmul_tflops(2048, 2048, 2048)
    print(f"      decode step {step * 1e3:.1f} ms at {rows} rows = {achieved * 1e3:.0f} GFLOP/s; "
          f"f32 matmul limit [{rows} x {cfg.hidden_size}] @ [{cfg.hidden_size} x "
          f"{cfg.vocab_size}]: {skinny * 1e3:.0f} GFLOP/s ({achieved / skinny:.0%} of it), "
          f"2048^3: {square * 1e3:.0f} GFLOP/s ({achieved / square:.0%})", flush=True)


if __name__ == "__main__":
    main()
