"""The serving engine: a worker thread that drains a queue of completion requests and runs the
compatible ones as one call of the jitted sampler. A request that finds the engine idle waits
`batch_wait_s` (a few ms) for others to join it.

Requests are compatible when they share the prompt length bucket, the bucketed number of new
tokens and the sampling settings (the sampler takes these per call). A seeded request with
temperature > 0 runs alone so that its seed alone decides its sample. Batches are padded to a
power of 4 rows or max_batch (repeating the last prompt) so that a handful of programs serve
all sizes.
One-token requests (the judge's probability path) skip the KV-cache sampler: one forward pass
gives the distribution and the sampler's `sample_token` draws from it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
from typing import Hashable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ssp_jax.models.config import ModelConfig
from ssp_jax.models.tokenizer import Tokenizer
from ssp_jax.models.transformer import Params
from ssp_jax.rollout.sampler import bucket_length, generate_with_params
from ssp_jax.serve.logprobs import PositionLogprobs, completion_logprobs, first_token
from ssp_jax.sharding import to_host

log = logging.getLogger(__name__)

MAX_TOP_LOGPROBS = 20  # alternatives per position a request may ask for (OpenAI's limit)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Per-request generation settings. temperature ≤ 0 is greedy; `logprobs` is the number of
    top alternatives wanted per position (0 for the chosen token's only), None for none."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    n: int = 1
    logprobs: int | None = None


@dataclasses.dataclass
class Sample:
    """One generated continuation.

    tokens: new token ids, ending with the stop token when `finished`.
    chosen_logprobs: `[len]` f32 log p of each token under the model (None unless asked).
    top_ids, top_logprobs: `[len, K]` int32 / f32, the K most likely tokens at each position.
    """

    tokens: list[int]
    finished: bool
    chosen_logprobs: np.ndarray | None = None
    top_ids: np.ndarray | None = None
    top_logprobs: np.ndarray | None = None


@dataclasses.dataclass
class _Request:
    prompt: list[int]
    sampling: Sampling
    new_tokens: int  # the bucketed max_tokens the sampler runs with
    key: Hashable
    future: concurrent.futures.Future


def token_bucket(n: int) -> int:
    """Smallest of 1, 2, 3, 4, 6, 8, 12, 16, ... that is ≥ n: new-token counts share a
    compiled decode loop, paying at most a third more steps for rows that do not stop."""
    bucket = 1
    while bucket < n:
        if bucket & (bucket - 1) == 0:  # a power of two: on to 1.5x (1 -> 2)
            bucket = max(bucket * 3 // 2, bucket + 1)
        else:  # 1.5 * 2^k: on to 2^(k+1)
            bucket = bucket // 3 * 4
    return bucket


def padded_batch(n: int, max_batch: int) -> int:
    """Rows a batch of n runs with: the smallest power of 4 ≥ n, capped at max_batch. Few
    sizes mean few compiled programs (each costs seconds on a CPU); padding rows are cheap
    next to a compilation."""
    size = 1
    while size < n:
        size *= 4
    return min(size, max_batch)


def right_pad(prompts: Sequence[Sequence[int]], length: int, pad_id: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads token lists to `[B, length]` int32 with a bool mask."""
    tokens = np.full((len(prompts), length), pad_id, np.int32)
    mask = np.zeros((len(prompts), length), bool)
    for i, p in enumerate(prompts):
        tokens[i, :len(p)] = p
        mask[i, :len(p)] = True
    return tokens, mask


class Engine:
    """Runs completion requests on one model, batching concurrent ones (see module doc).

    max_batch: most rows (requests × n) in one sampler call.
    max_cache_len: longest prompt + new tokens a request may have.
    batch_wait_s: how long a request arriving at an idle engine waits for others to join its
      batch (a burst of concurrent requests then runs as one full batch, not as 1 + the rest).
    `batch_sizes` lists the number of requests of every batch run so far (for logs and tests).
    """

    def __init__(self, cfg: ModelConfig, params: Params, tokenizer: Tokenizer, *,
                 max_batch: int = 16, max_cache_len: int | None = None,
                 batch_wait_s: float = 0.005) -> None:
        self.cfg, self.params, self.tokenizer = cfg, params, tokenizer
        self.max_batch, self.batch_wait_s = max_batch, batch_wait_s
        self.max_cache_len = max_cache_len or cfg.max_position_embeddings
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._backlog: list[_Request] = []
        self._stopping = False
        self._rng = np.random.default_rng()
        self.batch_sizes: list[int] = []
        self._worker = threading.Thread(target=self._loop, name="ssp-serve-engine", daemon=True)
        self._worker.start()

    def validate(self, prompt: Sequence[int], sampling: Sampling) -> None:
        """Raises ValueError naming the problem if the request cannot run."""
        if not prompt:
            raise ValueError("the prompt is empty")
        if min(prompt) < 0 or max(prompt) >= self.cfg.vocab_size:
            raise ValueError(f"the prompt has token ids outside [0, {self.cfg.vocab_size})")
        if sampling.max_tokens < 1:
            raise ValueError(f"max_tokens must be ≥ 1, got {sampling.max_tokens}")
        if not 1 <= sampling.n <= self.max_batch:
            raise ValueError(f"n must be in [1, {self.max_batch}], got {sampling.n}")
        if not 0.0 < sampling.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {sampling.top_p}")
        if sampling.logprobs is not None and not 0 <= sampling.logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"top logprobs must be in [0, {MAX_TOP_LOGPROBS}], got "
                             f"{sampling.logprobs}")
        if len(prompt) + sampling.max_tokens > self.max_cache_len:
            raise ValueError(
                f"the prompt ({len(prompt)} tokens) plus max_tokens ({sampling.max_tokens}) "
                f"exceeds the server's cache length {self.max_cache_len}; shorten the prompt or "
                "max_tokens")

    def submit(self, prompt: Sequence[int], sampling: Sampling
               ) -> concurrent.futures.Future[list[Sample]]:
        """Queues a request; the future gives its `n` samples (or the error that ended it)."""
        self.validate(prompt, sampling)
        prompt = [int(t) for t in prompt]
        m = min(token_bucket(sampling.max_tokens), self.max_cache_len - len(prompt))
        request = _Request(prompt, sampling, m, self._batch_key(prompt, sampling, m),
                           concurrent.futures.Future())
        self._queue.put(request)
        return request.future

    def close(self) -> None:
        """Stops the worker after the requests already queued."""
        self._queue.put(None)
        self._worker.join()

    def _batch_key(self, prompt: Sequence[int], s: Sampling, m: int) -> Hashable:
        sampling = ("greedy",) if s.temperature <= 0 else (s.temperature, s.top_p)
        alone = object() if s.temperature > 0 and s.seed is not None else None
        return (bucket_length(len(prompt), self.max_cache_len - m), m, sampling, s.n,
                s.logprobs is not None, alone)

    def _loop(self) -> None:
        while True:
            if not self._backlog:
                if self._stopping:
                    return
                item = self._queue.get()
                if item is None:
                    return
                self._backlog.append(item)
                self._collect(time.monotonic() + self.batch_wait_s)
            else:
                self._collect(None)
            batch = self._take_batch()
            self.batch_sizes.append(len(batch))
            try:
                results = self._run(batch)
            except Exception as e:  # noqa: BLE001 - the error goes to every waiting request
                log.exception("batch of %d requests failed", len(batch))
                for r in batch:
                    r.future.set_exception(e)
                continue
            for r, samples in zip(batch, results):
                r.future.set_result(samples)

    def _collect(self, deadline: float | None) -> None:
        """Moves queued requests to the backlog: until `deadline` (monotonic seconds) or until
        max_batch rows wait, or only those already queued when `deadline` is None."""
        while not self._stopping:
            rows = sum(r.sampling.n for r in self._backlog)
            wait = 0.0 if deadline is None or rows >= self.max_batch else \
                deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                return
            if item is None:  # close(): finish the backlog, then stop
                self._stopping = True
                return
            self._backlog.append(item)

    def _take_batch(self) -> list[_Request]:
        """The oldest request and the queued ones compatible with it, up to max_batch rows."""
        head = self._backlog[0]
        batch, rest, rows = [], [], 0
        for r in self._backlog:
            if r.key == head.key and rows + r.sampling.n <= self.max_batch:
                batch.append(r)
                rows += r.sampling.n
            else:
                rest.append(r)
        self._backlog = rest
        return batch

    def _run(self, batch: list[_Request]) -> list[list[Sample]]:
        """One sampler call (or one forward pass for one-token requests) for the batch."""
        s = batch[0].sampling
        n = s.n
        prompts = [r.prompt for r in batch]
        size = padded_batch(len(prompts), self.max_batch // n)
        prompts += [prompts[-1]] * (size - len(prompts))
        m = batch[0].new_tokens
        seed = s.seed if s.seed is not None else int(self._rng.integers(2**31))
        stop_ids = self.tokenizer.stop_ids
        top = MAX_TOP_LOGPROBS if s.logprobs is not None else 0
        prompt_len = bucket_length(max(map(len, prompts)), self.max_cache_len - m)
        prompt_arr, prompt_mask = right_pad([p for p in prompts for _ in range(n)], prompt_len,
                                            self.tokenizer.pad_id)
        logprobs: PositionLogprobs | None = None
        if m == 1:
            token, logprobs = first_token(
                self.params, jnp.asarray(prompt_arr), jnp.asarray(prompt_mask),
                jax.random.key(seed), jnp.float32(s.temperature), jnp.int32(0),
                jnp.float32(s.top_p), cfg=self.cfg, num_top=max(top, 1))
            rows = [[int(t)] for t in to_host(token)]
        else:
            out = generate_with_params(
                self.cfg, self.params, prompts, m, temperature=s.temperature, top_p=s.top_p,
                num_samples=n, seed=seed, stop_ids=stop_ids, pad_id=self.tokenizer.pad_id,
                max_cache_len=self.max_cache_len)
            rows = out.tokens
            if s.logprobs is not None:
                completion, _ = right_pad(rows, m, self.tokenizer.pad_id)
                logprobs = completion_logprobs(
                    self.params, jnp.asarray(prompt_arr), jnp.asarray(prompt_mask),
                    jnp.asarray(completion), cfg=self.cfg, num_top=top)
        host = None if s.logprobs is None else PositionLogprobs(*map(to_host, logprobs))
        results = []
        for i, r in enumerate(batch):
            samples = []
            for g in range(n):
                row = i * n + g
                tokens = rows[row][:r.sampling.max_tokens]
                sample = Sample(tokens, bool(tokens) and tokens[-1] in stop_ids)
                if host is not None:
                    k, length = r.sampling.logprobs, len(tokens)
                    sample.chosen_logprobs = host.chosen[row, :length]
                    sample.top_ids = host.top_ids[row, :length, :k]
                    sample.top_logprobs = host.top_values[row, :length, :k]
                samples.append(sample)
            results.append(samples)
        return results
