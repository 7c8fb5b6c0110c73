"""Load on `python -m ssp_jax.serve`: many concurrent streaming chat clients for a while.

Starts the server as a subprocess on 127.0.0.1, lets `--clients` clients (64 by default) each
send streaming chat requests back to back for `--seconds` (60), and prints: requests done and
dropped (an error status, a broken stream or a stream without `[DONE]`; 429s counted apart),
the server's resident memory at the start and the end and its peak (VmRSS, VmHWM), tokens
per second, and p50/p95 latency: time to the first content chunk and to the end of the
stream. A warm-up of the same load (`--warmup-seconds`) compiles the batch shapes first;
a shape it never met compiles during the run and shows in p95. No assertion on any figure;
the weights are random, so the figures measure the server only.

  python benchmarks/serve_load.py --model tiny-random
  python benchmarks/serve_load.py --model tiny-random --clients 8 --seconds 10  # a quick try
  python benchmarks/serve_load.py --model smollm2-135m-instruct --max-tokens 64 \
      -- --max-num-seqs 64 --dtype bfloat16   # after --: extra flags for the server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import platform
import random
import time

import httpx2
import numpy as np
from serve_process import start_server

TOPICS = ["a secret plan", "the sea and the stars", "a robot who paints", "a story",
          "how to write code", "an expert teacher"]


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    fields = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


class Tally:
    """What the clients saw."""

    def __init__(self) -> None:
        self.done = self.dropped = self.busy = self.tokens = 0
        self.first: list[float] = []
        self.total: list[float] = []


async def one_request(client: httpx2.AsyncClient, url: str, model: str, max_tokens: int,
                      rng: random.Random, tally: Tally) -> None:
    """One streaming chat request; its latencies go to the tally when it ends with [DONE]."""
    body = {"model": model, "max_tokens": max_tokens, "stream": True,
            "temperature": 1.0, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"Tell me about {rng.choice(TOPICS)}"}]}
    start, first, finished, tokens = time.perf_counter(), None, False, 0
    try:
        async with client.stream("POST", f"{url}/chat/completions", json=body) as answer:
            if answer.status_code == 429:
                tally.busy += 1
                return
            if answer.status_code != 200:
                tally.dropped += 1
                return
            async for line in answer.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    finished = True
                    break
                chunk = json.loads(line[len("data: "):])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get(
                        "content"):
                    first = time.perf_counter() - start
    except httpx2.HTTPError:
        finished = False
    if not finished:
        tally.dropped += 1
        return
    tally.done += 1
    tally.tokens += tokens
    tally.total.append(time.perf_counter() - start)
    if first is not None:
        tally.first.append(first)


async def client_loop(url: str, model: str, max_tokens: int, until: float, seed: int,
                      tally: Tally) -> None:
    rng = random.Random(seed)
    async with httpx2.AsyncClient(timeout=600) as client:
        while True:  # at least one request (the warm-up sends exactly one per client)
            await one_request(client, url, model, max_tokens, rng, tally)
            if time.perf_counter() >= until:
                return


async def load(url: str, model: str, clients: int, seconds: float, max_tokens: int) -> Tally:
    tally = Tally()
    until = time.perf_counter() + seconds
    await asyncio.gather(*(client_loop(url, model, max_tokens, until, i, tally)
                           for i in range(clients)))
    return tally


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    p50, p95 = np.percentile(values, [50, 95])
    return f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-random")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--warmup-seconds", type=float, default=10.0)
    p.add_argument("--log", default="/tmp/serve_load.log", help="the server's output")
    p.add_argument("server_args", nargs="*", help="after --: flags for the server")
    args = p.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.max_tokens < 1 or args.warmup_seconds < 0:
        p.error("--clients and --max-tokens must be ≥ 1, --seconds > 0, --warmup-seconds ≥ 0")
    process, url = start_server(["--model", args.model, *args.server_args],
                                pathlib.Path(args.log))
    try:
        warm = asyncio.run(load(url, args.model, args.clients, args.warmup_seconds,
                                args.max_tokens))
        start = memory_mib(process.pid)
        began = time.perf_counter()
        tally = asyncio.run(load(url, args.model, args.clients, args.seconds, args.max_tokens))
        elapsed = time.perf_counter() - began
        end = memory_mib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)
    print(f"serve load: {args.model}, {args.clients} streaming clients, {args.seconds:.0f} s, "
          f"max_tokens {args.max_tokens}, server flags {args.server_args or 'default'}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"warm-up: {warm.done} done, {warm.dropped} dropped")
    print(f"requests: {tally.done} done, {tally.dropped} dropped, {tally.busy} refused (429) "
          f"in {elapsed:.1f} s; {tally.tokens / elapsed:.1f} generated tokens/s")
    print(f"server memory: {start['VmRSS']:.0f} MiB at start, {end['VmRSS']:.0f} MiB at end, "
          f"peak {end['VmHWM']:.0f} MiB")
    print(f"time to first token: {percentiles(tally.first)}")
    print(f"time to last token: {percentiles(tally.total)}")


if __name__ == "__main__":
    main()
