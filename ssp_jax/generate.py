"""Chat with a model from the command line.

  python -m ssp_jax.generate --model smollm2-135m-instruct --prompt "Name three prime numbers."

Applies the model's chat template, samples with the jitted KV-cache sampler and prints each
answer followed by a tokens/s figure (compilation time reported separately).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import jax

from ssp_jax import cli
from ssp_jax.models import load
from ssp_jax.rollout import generate


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ssp_jax.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="built-in name, local Hugging Face folder or .gguf file")
    p.add_argument("--prompt", action="append", required=True,
                   help="user message; repeat the flag for a batch of prompts")
    p.add_argument("--system", default=None, help="optional system message")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = no top-k filter")
    p.add_argument("--num-samples", type=int, default=1, help="samples per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    return p.parse_args(argv)


class CompileTimer:
    """Sums JAX tracing and compilation seconds reported while it is active."""

    _EVENTS = ("/jax/core/compile/backend_compile_duration",
               "/jax/core/compile/jaxpr_trace_duration",
               "/jax/core/compile/jaxpr_to_mlir_module_duration")

    def __init__(self) -> None:
        self.seconds = 0.0

    def _listen(self, name: str, duration: float, **_) -> None:
        if name in self._EVENTS:
            self.seconds += duration

    def __enter__(self) -> "CompileTimer":
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model, tokenizer = load(args.model, dtype=args.dtype)
    prompts = [tokenizer.chat_prompt(p, system=args.system) for p in args.prompt]
    start = time.perf_counter()
    with CompileTimer() as compile_timer:
        out = generate(model, prompts, args.max_new_tokens, temperature=args.temperature,
                       top_p=args.top_p, top_k=args.top_k, num_samples=args.num_samples,
                       seed=args.seed, stop_ids=tokenizer.stop_ids, pad_id=tokenizer.pad_id)
    elapsed = time.perf_counter() - start
    for i, tokens in enumerate(out.tokens):
        header = f"--- prompt {i // args.num_samples + 1}"
        if args.num_samples > 1:
            header += f", sample {i % args.num_samples + 1}"
        print(f"{header} ---\n{tokenizer.decode(tokens).strip()}")
    run = max(elapsed - compile_timer.seconds, 1e-9)
    print(f"\n{out.num_tokens} tokens in {elapsed:.2f} s: {out.num_tokens / run:.1f} tokens/s "
          f"after {compile_timer.seconds:.2f} s of compilation")
    return 0


if __name__ == "__main__":
    cli.run(main)
