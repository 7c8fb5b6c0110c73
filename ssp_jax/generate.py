"""Chat with a model or a trained checkpoint from the command line.

  python -m ssp_jax.generate --model smollm2-135m-instruct --prompt "Name three prime numbers."
  python -m ssp_jax.generate --checkpoint runs/demo/checkpoints/2 --prompt "Name three primes."
  python -m ssp_jax.generate --checkpoint runs/demo/checkpoints/2     (a chat: one line a turn)

Applies the model's chat template, samples with the jitted KV-cache sampler and prints each
answer followed by a tokens/s figure (compilation time reported separately). A checkpoint
(full fine-tuning or LoRA, whose adapters are merged) is loaded over its base model, named by
its saved config. Without --prompt it reads one user message per line from stdin and answers
each in one conversation, until an empty line or end of input.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Iterable, TextIO

import jax

from ssp_jax import cli, preflight
from ssp_jax.checkpoint import load_checkpoint
from ssp_jax.models import Tokenizer, Transformer, load
from ssp_jax.rollout import generate

DEFAULT_MODEL = "smollm2-135m-instruct"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ssp_jax.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", default=None, help="built-in name, local Hugging Face "
                        f"folder or .gguf file (default: {DEFAULT_MODEL})")
    source.add_argument("--checkpoint", default=None,
                        help="a training checkpoint step folder, e.g. runs/demo/checkpoints/2")
    p.add_argument("--prompt", action="append", default=None,
                   help="user message; repeat the flag for a batch of prompts (none: chat on "
                        "stdin)")
    p.add_argument("--system", default=None, help="optional system message")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = no top-k filter")
    p.add_argument("--num-samples", type=int, default=1, help="samples per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="for --model (a checkpoint keeps its own)")
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


def load_model(args: argparse.Namespace) -> tuple[Transformer, Tokenizer]:
    """The model the flags name, checked (ssp_jax/preflight.py) before it is loaded."""
    if args.checkpoint is not None:
        preflight.check_checkpoint(args.checkpoint)
        model, tokenizer, _ = load_checkpoint(args.checkpoint)
        return model, tokenizer
    spec = args.model or DEFAULT_MODEL
    preflight.check_model_spec(spec, "--model")
    return load(spec, dtype=args.dtype)


def sample(model: Transformer, tokenizer: Tokenizer, prompts: list[list[int]],
           args: argparse.Namespace, num_samples: int) -> tuple[list[str], int]:
    """The decoded answers (`num_samples` per prompt, prompt-major) and the token count."""
    out = generate(model, prompts, args.max_new_tokens, temperature=args.temperature,
                   top_p=args.top_p, top_k=args.top_k, num_samples=num_samples, seed=args.seed,
                   stop_ids=tokenizer.stop_ids, pad_id=tokenizer.pad_id)
    return [tokenizer.decode(t).strip() for t in out.tokens], out.num_tokens


def answer_prompts(model: Transformer, tokenizer: Tokenizer, args: argparse.Namespace) -> None:
    """Answers every --prompt in one batch; prints the answers and the speed."""
    prompts = [tokenizer.chat_prompt(p, system=args.system) for p in args.prompt]
    start = time.perf_counter()
    with CompileTimer() as compile_timer:
        answers, num_tokens = sample(model, tokenizer, prompts, args, args.num_samples)
    elapsed = time.perf_counter() - start
    for i, text in enumerate(answers):
        header = f"--- prompt {i // args.num_samples + 1}"
        if args.num_samples > 1:
            header += f", sample {i % args.num_samples + 1}"
        print(f"{header} ---\n{text}")
    run = max(elapsed - compile_timer.seconds, 1e-9)
    print(f"\n{num_tokens} tokens in {elapsed:.2f} s: {num_tokens / run:.1f} tokens/s "
          f"after {compile_timer.seconds:.2f} s of compilation")


def chat(model: Transformer, tokenizer: Tokenizer, args: argparse.Namespace,
         lines: Iterable[str], out: TextIO) -> int:
    """One conversation, a user turn per line of `lines`, until an empty line or the end;
    when the conversation outgrows the model's context it starts again from the last turn.
    Returns the number of turns answered."""
    system = [] if args.system is None else [{"role": "system", "content": args.system}]
    history: list[dict[str, str]] = []
    turns = 0
    print("chat: one message per line; an empty line ends it", file=out, flush=True)
    for line in lines:
        text = line.strip()
        if not text:
            break
        history.append({"role": "user", "content": text})
        try:
            prompt = tokenizer.encode_chat(system + history)
            (answer,), _ = sample(model, tokenizer, [prompt], args, 1)
        except ValueError:  # longer than the cache: keep only this turn
            history = history[-1:]
            prompt = tokenizer.encode_chat(system + history)
            (answer,), _ = sample(model, tokenizer, [prompt], args, 1)
        history.append({"role": "assistant", "content": answer})
        print(f"assistant: {answer}", file=out, flush=True)
        turns += 1
    return turns


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.max_new_tokens < 1 or args.num_samples < 1:
        raise cli.UserError("--max-new-tokens and --num-samples must be ≥ 1")
    model, tokenizer = load_model(args)
    if args.prompt:
        answer_prompts(model, tokenizer, args)
    else:
        chat(model, tokenizer, args, sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    cli.run(main)
