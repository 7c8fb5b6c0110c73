"""The serving engine: a worker thread that batches concurrent requests under a memory budget.

Requests (a token-id prompt and its `Sampling`) queue up; the worker takes the oldest and the
queued ones that can share its compiled programs (same prompt-length and new-token buckets,
sampling settings, n and log-probs flag), as many as fit `max_batch` rows and the budget of
tokens in flight, prefills them in chunks and decodes them in segments of a few tokens
(`programs`). After every segment each request's listener gets its new tokens (streaming) and
requests aborted since (a client that went away, or whose stop strings all matched) leave
the batch; aborted queued requests leave the queue. The batch ends when every row is done.

Admission: at most `max_num_seqs` sequences (requests x n) are queued or running (`submit`
raises `QueueFull` past it: HTTP 429), and a batch's KV cache holds at most
`max_tokens_in_flight` tokens (rows x cache slots, padding rows included); a request that
alone needs more is refused (`ValueError`). The default budget is the larger of one
full-length row and a KV cache as large as the model's parameters (`default_token_budget`).
Queued requests hold only their token ids.
A prefill's transient memory is bounded by its chunk: scores `[rows, heads, chunk, slots]`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
from typing import Callable, Hashable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ssp_jax.models.config import ModelConfig
from ssp_jax.models.tokenizer import Tokenizer
from ssp_jax.models.transformer import Params, init_cache
from ssp_jax.rollout.sampler import MAX_STOP_IDS, bucket_length, left_pad
from ssp_jax.serve.programs import Knobs, Rows, decode_segment, fan_out, prefill_chunk
from ssp_jax.sharding import to_host

log = logging.getLogger(__name__)

MAX_TOP_LOGPROBS = 20  # alternatives per position a request may ask for (OpenAI's limit)
DEFAULT_MAX_NUM_SEQS = 256  # sequences (requests x n) queued or running
DEFAULT_PREFILL_CHUNK = 256  # prompt tokens per prefill step
DEFAULT_SEGMENT = 8  # decode steps between two returns to the host


class QueueFull(Exception):
    """The engine already holds `max_num_seqs` sequences; try again later."""


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
    """One generated continuation (or, given to a listener, the newest piece of one).

    tokens: new token ids, ending with the stop token when `finished`.
    chosen_logprobs: `[len]` f32 log p of each token under the model (None unless asked).
    top_ids, top_logprobs: `[len, K]` int32 / f32, the K most likely tokens at each position.
    """

    tokens: list[int]
    finished: bool
    chosen_logprobs: np.ndarray | None = None
    top_ids: np.ndarray | None = None
    top_logprobs: np.ndarray | None = None


Listener = Callable[[int, Sample], None]  # (sample index, newest piece), on the worker thread


class Job(concurrent.futures.Future):
    """A submitted request: its result is the list of `n` samples. `abort()` takes it out of
    the queue, or its rows out of the running batch (the result is then what was generated)."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = threading.Event()

    def abort(self) -> None:
        self.aborted.set()


@dataclasses.dataclass
class _Request:
    prompt: list[int]
    sampling: Sampling
    new_tokens: int  # the bucketed max_tokens the batch runs with
    key: Hashable
    job: Job
    listener: Listener | None
    samples: list[Sample] = dataclasses.field(default_factory=list)


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


def kv_bytes_per_token(cfg: ModelConfig) -> int:
    """Bytes one token takes in the KV cache (keys and values of every layer)."""
    itemsize = jnp.dtype(cfg.jnp_dtype).itemsize
    return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * itemsize


def default_token_budget(cfg: ModelConfig, params: Params, max_cache_len: int,
                         prefill_chunk: int) -> int:
    """Tokens of KV cache in flight by default: a cache as large as the parameters, and at
    least one full-length row (`max_cache_len` plus a chunk of prompt padding). SmolLM2-135M
    in float32: about 11,700 tokens (540 MB of cache)."""
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    return max(max_cache_len + prefill_chunk, param_bytes // kv_bytes_per_token(cfg))


def prompt_slots(prompt_len: int, new_tokens: int, max_cache_len: int, chunk: int) -> int:
    """Cache slots a prompt of `prompt_len` tokens takes: its length bucket, rounded up to a
    whole number of prefill chunks when longer than one chunk."""
    bucket = bucket_length(prompt_len, max_cache_len - new_tokens)
    return bucket if bucket <= chunk else -(-bucket // chunk) * chunk


class Engine:
    """Runs completion requests on one model, batching concurrent ones (see module doc).

    max_batch: most rows (requests × n) in one batch.
    max_cache_len: longest prompt + new tokens a request may have.
    batch_wait_s: how long a request arriving at an idle engine waits for others to join its
      batch (a burst of concurrent requests then runs as one full batch, not as 1 + the rest).
    max_num_seqs: most sequences queued or running; max_tokens_in_flight: most KV-cache
      tokens of a batch (None: `default_token_budget`); prefill_chunk: prompt tokens per
      prefill step; segment: decode steps between returns to the host.
    `batch_sizes` lists the requests of every batch run so far; `counters` counts requests,
    rejected (queue full), cancelled_queued, cancelled_rows (rows stopped while running),
    decode_steps; `peak_tokens_in_flight` is the largest batch cache, in tokens.
    """

    def __init__(self, cfg: ModelConfig, params: Params, tokenizer: Tokenizer, *,
                 max_batch: int = 16, max_cache_len: int | None = None,
                 batch_wait_s: float = 0.005, max_num_seqs: int = DEFAULT_MAX_NUM_SEQS,
                 max_tokens_in_flight: int | None = None,
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
                 segment: int = DEFAULT_SEGMENT) -> None:
        self.cfg, self.params, self.tokenizer = cfg, params, tokenizer
        self.max_batch, self.batch_wait_s = max_batch, batch_wait_s
        self.max_cache_len = max_cache_len or cfg.max_position_embeddings
        self.max_num_seqs, self.prefill_chunk, self.segment = max_num_seqs, prefill_chunk, segment
        self.max_tokens_in_flight = max_tokens_in_flight or default_token_budget(
            cfg, params, self.max_cache_len, prefill_chunk)
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._backlog: list[_Request] = []
        self._stopping = False
        self._lock = threading.Lock()
        self._sequences = 0  # queued or running
        self._rng = np.random.default_rng()
        self.batch_sizes: list[int] = []
        self.counters: collections.Counter[str] = collections.Counter()
        self.peak_tokens_in_flight = 0
        self._worker = threading.Thread(target=self._loop, name="ssp-serve-engine", daemon=True)
        self._worker.start()

    @property
    def sequences(self) -> int:
        """Sequences (requests x n) queued or running now."""
        with self._lock:
            return self._sequences

    def cache_tokens(self, prompt_len: int, sampling: Sampling) -> int:
        """KV-cache tokens a request takes in a batch (its n rows)."""
        m = min(token_bucket(sampling.max_tokens), self.max_cache_len - prompt_len)
        slots = prompt_slots(prompt_len, m, self.max_cache_len, self.prefill_chunk)
        return sampling.n * (slots + m)

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
        need = self.cache_tokens(len(prompt), sampling)
        if need > self.max_tokens_in_flight:
            raise ValueError(
                f"the request needs {need} tokens of KV cache (prompt {len(prompt)}, max_tokens "
                f"{sampling.max_tokens}, n {sampling.n}), more than the server's budget of "
                f"{self.max_tokens_in_flight} tokens in flight; lower n, max_tokens or the prompt")

    def submit(self, prompt: Sequence[int], sampling: Sampling,
               listener: Listener | None = None) -> Job:
        """Queues a request; the job's result is its `n` samples (or the error that ended it).
        `listener(i, piece)` gets sample i's new tokens after every decode segment. Raises
        ValueError for a bad request and QueueFull when `max_num_seqs` sequences wait."""
        self.validate(prompt, sampling)
        prompt = [int(t) for t in prompt]
        with self._lock:
            if self._sequences + sampling.n > self.max_num_seqs:
                self.counters["rejected"] += 1
                raise QueueFull(f"the server is full ({self._sequences} sequences queued or "
                                f"running, at most {self.max_num_seqs}); retry later")
            self._sequences += sampling.n
            self.counters["requests"] += 1
        m = min(token_bucket(sampling.max_tokens), self.max_cache_len - len(prompt))
        request = _Request(prompt, sampling, m, self._batch_key(prompt, sampling, m), Job(),
                           listener)
        self._queue.put(request)
        return request.job

    def close(self) -> None:
        """Stops the worker after the requests already queued."""
        self._queue.put(None)
        self._worker.join()

    def _batch_key(self, prompt: Sequence[int], s: Sampling, m: int) -> Hashable:
        sampling = ("greedy",) if s.temperature <= 0 else (s.temperature, s.top_p)
        alone = object() if s.temperature > 0 and s.seed is not None else None
        slots = prompt_slots(len(prompt), m, self.max_cache_len, self.prefill_chunk)
        return (slots, m, sampling, s.n, s.logprobs is not None, alone)

    def _finish(self, request: _Request, samples: list[Sample] | None = None,
                error: BaseException | None = None) -> None:
        """Frees the request's sequences, then ends its job with `samples` or `error`."""
        with self._lock:
            self._sequences -= request.sampling.n
        if error is None:
            request.job.set_result(samples)
        else:
            request.job.set_exception(error)

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
            self._drop_aborted()
            if not self._backlog:
                continue
            batch = self._take_batch()
            self.batch_sizes.append(len(batch))
            try:
                self._run(batch)
            except Exception as e:  # noqa: BLE001 - the error goes to every waiting request
                log.exception("batch of %d requests failed", len(batch))
                for r in batch:
                    if not r.job.done():
                        self._finish(r, error=e)

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

    def _drop_aborted(self) -> None:
        """Takes aborted requests out of the backlog; their jobs end with empty samples."""
        kept = []
        for r in self._backlog:
            if r.job.aborted.is_set():
                self.counters["cancelled_queued"] += 1
                self._finish(r, [Sample([], False) for _ in range(r.sampling.n)])
            else:
                kept.append(r)
        self._backlog = kept

    def _take_batch(self) -> list[_Request]:
        """The oldest request and the queued ones compatible with it, up to max_batch rows and
        the budget of tokens in flight (padding rows included)."""
        head = self._backlog[0]
        n = head.sampling.n
        per_row = self.cache_tokens(len(head.prompt), head.sampling) // n
        batch, rest = [], []
        for r in self._backlog:
            rows = padded_batch(len(batch) + 1, self.max_batch // n) * n
            fits = (len(batch) + 1) * n <= self.max_batch and \
                rows * per_row <= self.max_tokens_in_flight
            if r.key == head.key and (fits or not batch):
                batch.append(r)
            else:
                rest.append(r)
        self._backlog = rest
        return batch

    def _prefill(self, batch: list[_Request], size: int, slots: int, m: int) -> Rows:
        """Left-pads the batch's prompts to `[size, slots]` and prefills them chunk by chunk;
        padding rows start done. Returns the decode state of the prompt rows."""
        prompts = [r.prompt for r in batch] + [batch[-1].prompt] * (size - len(batch))
        tokens, mask = left_pad(prompts, slots, self.tokenizer.pad_id)
        positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
        kv_mask = np.zeros((size, slots + m), bool)
        kv_mask[:, :slots] = mask
        chunk = min(slots, self.prefill_chunk)
        cache, kv = init_cache(self.cfg, size, slots + m), jnp.asarray(kv_mask)
        for start in range(0, slots, chunk):
            logits, cache = prefill_chunk(
                self.params, cache, jnp.asarray(tokens[:, start:start + chunk]),
                jnp.asarray(positions[:, start:start + chunk]), kv, jnp.int32(start),
                cfg=self.cfg)
        limit = np.zeros(size, np.int32)
        limit[:len(batch)] = [r.sampling.max_tokens for r in batch]
        return Rows(cache, kv, jnp.asarray(mask.sum(axis=1), jnp.int32), logits,
                    jnp.asarray(limit == 0), jnp.asarray(limit), jnp.int32(0))

    def _run(self, batch: list[_Request]) -> None:
        """Prefills the batch, decodes it segment by segment until every row is done, and
        ends each request's job with its samples."""
        s, n, m = batch[0].sampling, batch[0].sampling.n, batch[0].new_tokens
        size = padded_batch(len(batch), self.max_batch // n)
        slots = prompt_slots(max(len(r.prompt) for r in batch), m, self.max_cache_len,
                             self.prefill_chunk)
        self.peak_tokens_in_flight = max(self.peak_tokens_in_flight, size * n * (slots + m))
        rows = self._prefill(batch, size, slots, m)
        if n > 1:
            rows = fan_out(rows, num_samples=n)
        seed = s.seed if s.seed is not None else int(self._rng.integers(2**31))
        stops = np.full((MAX_STOP_IDS,), -1, np.int32)
        stop_ids = self.tokenizer.stop_ids[:MAX_STOP_IDS]
        stops[:len(stop_ids)] = stop_ids
        knobs = Knobs(jax.random.key_data(jax.random.key(seed)), jnp.float32(s.temperature),
                      jnp.float32(s.top_p), jnp.asarray(stops), jnp.int32(slots))
        for r in batch:
            r.samples = [Sample([], False, *self._empty_logprobs(r)) for _ in range(n)]
        num_top = MAX_TOP_LOGPROBS if s.logprobs is not None else 0
        cancelled = np.zeros(size * n, bool)
        while True:
            cancel = self._cancellations(batch, n, cancelled)
            rows, seg = decode_segment(self.params, rows, jnp.asarray(cancel), knobs,
                                       cfg=self.cfg, steps=self.segment, num_top=num_top)
            seg, done = jax.tree.map(to_host, seg), to_host(rows.done)
            self.counters["decode_steps"] += int(seg.produced.any(axis=0).sum())
            self._deliver(batch, n, seg)
            if done.all():
                break
        for r in batch:
            self._finish(r, r.samples)

    def _cancellations(self, batch: list[_Request], n: int, cancelled: np.ndarray
                       ) -> np.ndarray:
        """Marks the rows of newly aborted requests in `cancelled [rows]` (and counts them)."""
        for i, r in enumerate(batch):
            if r.job.aborted.is_set() and not cancelled[i * n]:
                live = sum(not smp.finished for smp in r.samples)
                self.counters["cancelled_rows"] += live
                cancelled[i * n:(i + 1) * n] = True
        return cancelled.copy()

    @staticmethod
    def _empty_logprobs(r: _Request) -> tuple:
        if r.sampling.logprobs is None:
            return None, None, None
        k = r.sampling.logprobs
        return np.zeros(0, np.float32), np.zeros((0, k), np.int32), np.zeros((0, k), np.float32)

    def _deliver(self, batch: list[_Request], n: int, seg) -> None:
        """Appends each row's new tokens (and log-probs) to its sample; calls listeners."""
        stop_ids = set(self.tokenizer.stop_ids)
        for i, r in enumerate(batch):
            k = r.sampling.logprobs
            for g in range(n):
                row = i * n + g
                made = np.flatnonzero(seg.produced[row])
                if not len(made):
                    continue
                tokens = [int(t) for t in seg.tokens[row, made]]
                piece = Sample(tokens, tokens[-1] in stop_ids)
                if k is not None:
                    piece.chosen_logprobs = seg.chosen[row, made]
                    piece.top_ids = seg.top_ids[row, made, :k]
                    piece.top_logprobs = seg.top_values[row, made, :k]
                _extend(r.samples[g], piece)
                if r.listener is not None:
                    try:
                        r.listener(g, piece)
                    except Exception:  # noqa: BLE001 - a gone listener aborts only its job
                        log.exception("listener failed; aborting its request")
                        r.job.abort()


def _extend(sample: Sample, piece: Sample) -> None:
    """Appends a piece's tokens and log-probs to a sample."""
    sample.tokens.extend(piece.tokens)
    sample.finished = piece.finished
    if piece.chosen_logprobs is not None:
        sample.chosen_logprobs = np.concatenate([sample.chosen_logprobs, piece.chosen_logprobs])
        sample.top_ids = np.concatenate([sample.top_ids, piece.top_ids])
        sample.top_logprobs = np.concatenate([sample.top_logprobs, piece.top_logprobs])
