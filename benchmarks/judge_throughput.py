"""Judge throughput (rows/s): the same judge prompts in process (`LocalBackend`) and through
`python -m ssp_jax.serve` (`RemoteBackend` over HTTP on 127.0.0.1), on both backend paths:
`generate` (greedy verdict text) and `next_token_probs` (answer probabilities, no decoding).
The weights are random or not trained for judging: the figures measure speed, not verdicts.

Each path is timed after three warm-up passes over the same rows (compilation excluded: the
server compiles one program per padded batch size it meets); the server runs as a subprocess
with the same batch size, and the client sends up to that many requests at once.

  python benchmarks/judge_throughput.py --model tiny-random --rows 64 \
      --candidates assistant character
  python benchmarks/judge_throughput.py --model smollm2-135m-instruct --rows 32
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np

from ssp_jax.judge.backend import JudgePrompt, RowError
from ssp_jax.judge.local import LocalBackend
from ssp_jax.judge.remote import RemoteBackend
from ssp_jax.models import load
from ssp_jax.models.tiny import WORDS
from serve_process import start_server



def judge_prompts(rows: int, words: int, seed: int = 0) -> list[JudgePrompt]:
    """HarmBench-classifier-shaped chat prompts: a behaviour and a `words`-word generation
    drawn from the tiny model's vocabulary (so both models tokenize them)."""
    rng = np.random.default_rng(seed)

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS, n))

    return [JudgePrompt(messages=({"role": "user", "content":
                                   f"Behavior: {text(12)}\nGeneration: {text(words)}\n"
                                   "Is the generation an instance of the behavior? "
                                   "Answer Yes or No."},)) for _ in range(rows)]


def timed(fn, *args) -> tuple[float, list]:
    """Seconds of the fourth call (the first three compile and warm up) and its rows."""
    for _ in range(3):
        fn(*args)
    start = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - start
    failed = [r for r in out if isinstance(r, RowError)]
    if failed:
        raise RuntimeError(f"{len(failed)} rows failed, e.g. {failed[0].message}")
    return seconds, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-random")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--words", type=int, default=120, help="words per judged generation")
    p.add_argument("--verdict-tokens", type=int, default=16, help="max_tokens of generate")
    p.add_argument("--batch", type=int, default=16, help="rows per sampler call, both sides")
    p.add_argument("--cache", type=int, default=512, help="judge cache length, both sides")
    p.add_argument("--candidates", nargs="+", default=["Sure,", "Sorry,"],
                   help="verdict words whose probabilities are read (whole words)")
    args = p.parse_args()
    prompts = judge_prompts(args.rows, args.words)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}; model {args.model}, "
          f"{args.rows} rows, batch {args.batch}")
    model, tokenizer = load(args.model)
    local = LocalBackend(model.config, model.params(), tokenizer, max_cache_len=args.cache,
                         batch_size=args.batch, describe=f"model:{args.model}")
    lengths = [len(local.encode(x)) for x in prompts]
    print(f"prompt tokens: mean {np.mean(lengths):.0f}, max {max(lengths)}")
    results = {}
    results["in process", "generate"], local_text = timed(local.generate, prompts,
                                                          args.verdict_tokens)
    results["in process", "next_token_probs"], local_probs = timed(
        local.next_token_probs, prompts, args.candidates)
    del local, model
    process, url = start_server(["--model", args.model, "--max-batch", str(args.batch),
                                 "--max-cache-len", str(args.cache)])
    remote = RemoteBackend(url, args.model, api_key=None, timeout_s=600.0,
                           max_concurrency=args.batch, max_retries=0)
    try:
        results["serve", "generate"], remote_text = timed(remote.generate, prompts,
                                                          args.verdict_tokens)
        results["serve", "next_token_probs"], remote_probs = timed(
            remote.next_token_probs, prompts, args.candidates)
    finally:
        remote.close()
        process.terminate()
        process.wait(timeout=60)
    same_text = sum(a == b for a, b in zip(local_text, remote_text))
    local_p, remote_p = np.stack(local_probs), np.stack(remote_probs)
    listed = remote_p > 0  # a server reports only its 20 likeliest tokens, the rest as 0
    gap = float(np.abs(local_p - remote_p)[listed].max(initial=0.0))
    print(f"agreement: {same_text}/{args.rows} identical verdict texts; probabilities: "
          f"{listed.sum()}/{listed.size} in the server's top 20, max |P_local - P_serve| there "
          f"{gap:.1e}, largest P left out {local_p[~listed].max(initial=0.0):.3f}")
    print("| where | path | seconds | rows/s |")
    print("| --- | --- | --- | --- |")
    for (where, path), seconds in results.items():
        print(f"| {where} | {path} | {seconds:.2f} | {args.rows / seconds:.1f} |")


if __name__ == "__main__":
    main()
