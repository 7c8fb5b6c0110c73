"""Jitted KV-cache sampler: one prefill, then a single `lax.while_loop` of decode steps.

Prompts are left-padded to a length bucket (see `bucket_length`), so a new prompt length
inside the same bucket reuses the compiled program. Temperature, top-k,
top-p, the seed, the stop ids and which rows are greedy are traced values: changing them
never recompiles.
With `num_samples = G` each prompt is prefilled once and its cache fanned out to G rows;
with `greedy_samples = k` the first k of those G rows take the argmax token at every step
(the rest sample), while every row reports log-probs at the sampling temperature.

Rows are sharded over the parameters' mesh: prompts, fanned-out rows and the KV cache carry
logical axes (`batch`, `cache_batch`, `kv_heads`, ...) that the rule table maps to mesh axes,
and prefill and decode are jitted with those in/out shardings, so each device generates its
share of rows (prompts are padded to a multiple of the row-sharding size; padded rows start
done). Inputs are placed with `sharding.put_global`, so this also works when the mesh spans
processes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ssp_jax import sharding
from ssp_jax.models.config import ModelConfig
from ssp_jax.models.transformer import (
    CACHE_AXES,
    KVCache,
    Params,
    decode_step,
    init_cache,
    prefill,
)

MIN_BUCKET = 32
MAX_STOP_IDS = 16


@dataclasses.dataclass
class GenerationResult:
    """Sampled continuations, prompt-major: row `i * num_samples + g` is sample g of prompt i.

    tokens: new token ids per row, cut after the first stop token (kept); with
      `greedy_samples = k` rows `i * num_samples + g`, g < k, are greedy decodes.
    logprobs: per-token log-probabilities `[len]` f32 under softmax(logits / temperature),
      before any top-k/top-p filter, greedy rows included (see `sample_token`).
    finished: whether each row ended on a stop token (else it hit max_new_tokens).
    """

    tokens: list[list[int]]
    logprobs: list[np.ndarray]
    finished: np.ndarray
    num_steps: int  # decode steps the loop ran (early exit when every row is done)

    @property
    def num_tokens(self) -> int:
        return sum(len(t) for t in self.tokens)


def bucket_length(n: int, cap: int) -> int:
    """Smallest bucket ≥ n, capped at `cap` (which must be ≥ n). Buckets are the powers of two
    from MIN_BUCKET and the midpoints 1.5·2^k between them (32, 48, 64, 96, 128, ...), so
    padding wastes at most a third and there are two programs per doubling of length."""
    bucket = MIN_BUCKET
    while bucket < n:
        bucket = bucket * 3 // 2 if bucket & (bucket - 1) == 0 else bucket // 3 * 4
    return min(bucket, cap)


def left_pad(prompts: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray,
                                                                                  np.ndarray]:
    """Left-pads token lists to `[B, length]` int32 and returns them with a bool mask."""
    tokens = np.full((len(prompts), length), pad_id, np.int32)
    mask = np.zeros((len(prompts), length), bool)
    for i, p in enumerate(prompts):
        if len(p):
            tokens[i, length - len(p):] = p
            mask[i, length - len(p):] = True
    return tokens, mask


def filter_logits(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """Sets logits outside the top-k (k ≤ 0: no limit) and outside the top-p nucleus to -inf.
    logits `[N, V]` f32; top_k int32 scalar; top_p f32 scalar."""
    v = logits.shape[-1]
    k = jnp.where(top_k > 0, jnp.minimum(top_k, v), v)
    ranked = -jnp.sort(-logits, axis=-1)  # [N, V] descending
    in_top_k = jnp.arange(v) < k
    probs = jax.nn.softmax(jnp.where(in_top_k, ranked, -jnp.inf), axis=-1)
    keep = in_top_k & ((jnp.cumsum(probs, axis=-1) - probs) < top_p)
    threshold = jnp.min(jnp.where(keep, ranked, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits >= threshold, logits, -jnp.inf)


def _inverse_cdf_sample(key: jax.Array, logits: jax.Array) -> jax.Array:
    """One draw per row of softmax(logits `[N, V]`) by inverting the CDF with one uniform per
    row (cheaper on CPU than Gumbel-max, which needs N x V random numbers)."""
    cdf = jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1)
    u = jax.random.uniform(key, (logits.shape[0], 1)) * cdf[:, -1:]
    token = jnp.sum(cdf <= u, axis=-1)
    return jnp.minimum(token, logits.shape[-1] - 1).astype(jnp.int32)


def sample_token(logits: jax.Array, key: jax.Array, temperature: jax.Array, top_k: jax.Array,
                 top_p: jax.Array, greedy_rows: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array]:
    """Samples one token per row of logits `[N, V]`; temperature ≤ 0 is greedy, and so are the
    rows where `greedy_rows [N] bool` is True (None: none), whatever the temperature.
    Returns tokens `[N]` int32 and their log-probabilities `[N]` f32 under the *unfiltered*
    softmax of logits / temperature (temperature 1 if temperature ≤ 0): top-k/top-p and
    `greedy_rows` choose the token but not its reported log-prob, so the sampler's and the
    trainer's log-probs (`rl.losses.token_logprobs`) are of the same distribution and the first
    importance ratio is 1."""
    greedy = temperature <= 0
    scaled = logits / jnp.where(greedy, 1.0, temperature)
    filtered = jax.lax.cond((top_k > 0) | (top_p < 1.0),
                            lambda x: filter_logits(x, top_k, top_p), lambda x: x, scaled)
    token = jax.lax.cond(greedy, lambda x: jnp.argmax(x, axis=-1).astype(jnp.int32),
                         lambda x: _inverse_cdf_sample(key, x), filtered)
    if greedy_rows is not None:
        # argmax of the raw logits: the token a temperature-0 decode takes (dividing by T can
        # round two nearly equal logits to a tie)
        token = jnp.where(greedy_rows, jnp.argmax(logits, axis=-1).astype(jnp.int32), token)
    logp = jax.nn.log_softmax(scaled, axis=-1)
    return token, jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]


def _prefill(params: Params, tokens: jax.Array, mask: jax.Array, *, cfg: ModelConfig,
             cache_len: int, num_samples: int):
    """Prefills `[B, P]` prompts once and fans each out to `num_samples` rows.
    Returns last-position logits `[N, V]`, the cache, kv_mask `[N, S]` and lengths `[N]`."""
    b, p = tokens.shape
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0).astype(jnp.int32)
    logits, cache = prefill(params, cfg, tokens, positions, mask, init_cache(cfg, b, cache_len))
    kv_mask = jnp.zeros((b, cache_len), bool).at[:, :p].set(mask)
    lengths = mask.sum(axis=1).astype(jnp.int32)
    fan = functools.partial(jnp.repeat, repeats=num_samples, axis=0)
    cache = jax.tree.map(lambda c: jnp.repeat(c, num_samples, axis=1), cache)
    return fan(logits), cache, fan(kv_mask), fan(lengths)


class DecodeState(NamedTuple):
    """The decode loop's carry (N rows, M new tokens at most)."""

    step: jax.Array  # scalar int32: tokens sampled so far
    tokens: jax.Array  # [N, M] int32 sampled tokens (0 after a row is done)
    logps: jax.Array  # [N, M] f32 their log-probabilities (0 after a row is done)
    done: jax.Array  # [N] bool: the row sampled a stop token (or is padding)
    cache: Any  # the KV cache
    kv_mask: jax.Array  # [N, S] bool: filled cache slots
    logits: jax.Array  # [N, V] next-token logits


class DecodeStart(NamedTuple):
    """What the prefill hands the decode loop (N rows, S cache slots)."""

    logits: jax.Array  # [N, V] next-token logits after the prompt
    kv_mask: jax.Array  # [N, S] bool: filled cache slots
    lengths: jax.Array  # [N] int32 prompt lengths
    active: jax.Array  # [N] bool: False for row padding (starts done)
    greedy: jax.Array  # [N] bool: the row takes the argmax token at every step


class SamplingInputs(NamedTuple):
    """How to sample: scalars and the stop ids, replicated on every device."""

    key_data: jax.Array  # raw key data of the sampling key
    temperature: jax.Array  # scalar f32 (≤ 0: greedy)
    top_k: jax.Array  # scalar int32 (≤ 0: off)
    top_p: jax.Array  # scalar f32 (1: off)
    stop_ids: jax.Array  # [MAX_STOP_IDS] int32, -1 = unused


def _decode(params: Params, cache, start: DecodeStart, sampling: SamplingInputs, *,
            cfg: ModelConfig, max_new_tokens: int):
    """Decode loop; rows where `start.active` is False start done (row padding), rows where
    `start.greedy` is True decode greedily. Returns tokens `[N, M]` int32, logprobs `[N, M]`
    f32, done `[N]`, steps run and the final cache (donated in, aliased out)."""
    logits, kv_mask, lengths, active, greedy = start
    key_data, temperature, top_k, top_p, stop_ids = sampling
    key = jax.random.wrap_key_data(key_data)
    n = logits.shape[0]
    first_slot = kv_mask.shape[1] - max_new_tokens

    def cond(state: DecodeState):
        return (state.step < max_new_tokens) & ~jnp.all(state.done)

    def body(state: DecodeState) -> DecodeState:
        step, done = state.step, state.done
        token, logp = sample_token(state.logits, jax.random.fold_in(key, step), temperature,
                                   top_k, top_p, greedy)
        token = jnp.where(done, 0, token)
        slot = first_slot + step
        logits, cache = decode_step(params, cfg, token[:, None], (lengths + step)[:, None],
                                    state.cache, slot, state.kv_mask)
        return DecodeState(
            step=step + 1, tokens=state.tokens.at[:, step].set(token),
            logps=state.logps.at[:, step].set(jnp.where(done, 0.0, logp)),
            done=done | jnp.any(token[:, None] == stop_ids[None, :], axis=-1), cache=cache,
            kv_mask=state.kv_mask.at[:, slot].set(True), logits=logits[:, 0])

    state = DecodeState(step=jnp.int32(0), tokens=jnp.zeros((n, max_new_tokens), jnp.int32),
                        logps=jnp.zeros((n, max_new_tokens), jnp.float32), done=~active,
                        cache=cache, kv_mask=kv_mask, logits=logits)
    final = jax.lax.while_loop(cond, body, state)
    return final.tokens, final.logps, final.done, final.step, final.cache


def _validate(cfg: ModelConfig, prompts: Sequence[Sequence[int]], max_new_tokens: int,
              num_samples: int, greedy_samples: int, max_cache_len: int,
              stop_ids: Sequence[int]) -> int:
    """Checks the request; returns the longest prompt length."""
    if not prompts:
        raise ValueError("generate() needs at least one prompt")
    if max_new_tokens < 1 or num_samples < 1:
        raise ValueError(f"max_new_tokens ({max_new_tokens}) and num_samples ({num_samples}) "
                         "must be ≥ 1")
    if not 0 <= greedy_samples <= num_samples:
        raise ValueError(f"greedy_samples ({greedy_samples}) must be in [0, num_samples = "
                         f"{num_samples}]")
    if len(stop_ids) > MAX_STOP_IDS:
        raise ValueError(f"at most {MAX_STOP_IDS} stop ids are supported, got {len(stop_ids)}")
    longest = 0
    for i, p in enumerate(prompts):
        if not len(p):
            raise ValueError(f"prompt {i} is empty")
        if min(p) < 0 or max(p) >= cfg.vocab_size:
            raise ValueError(f"prompt {i} has token ids outside [0, {cfg.vocab_size})")
        longest = max(longest, len(p))
    if longest + max_new_tokens > max_cache_len:
        raise ValueError(
            f"the longest prompt ({longest} tokens) plus max_new_tokens ({max_new_tokens}) "
            f"exceeds the cache length {max_cache_len}; shorten the prompt or max_new_tokens"
        )
    return longest


class _Layout(NamedTuple):
    """Where the sampler's arrays live: the parameters' mesh and shardings (hashable leaves
    and structure, so compiled programs are cached by layout); rows and cache follow the rule
    table."""

    mesh: Mesh
    param_tree: Any  # PyTreeDef of the parameters
    param_shardings: tuple  # their leaves' shardings

    @property
    def params(self) -> Any:
        return jax.tree.unflatten(self.param_tree, self.param_shardings)

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    @property
    def row_multiple(self) -> int:
        return sharding.axis_size("batch", self.mesh, sharding.TRAIN_RULES)

    def rows(self, shape: tuple[int, ...]) -> NamedSharding:
        """An array of rows `[N, ...]`: N sharded by the `batch` rule, the rest replicated."""
        return sharding.logical_sharding(("batch",) + (None,) * (len(shape) - 1), shape,
                                         self.mesh, sharding.TRAIN_RULES)

    def cache(self, cfg: ModelConfig, rows: int, cache_len: int) -> KVCache:
        shape = (cfg.num_layers, rows, cfg.num_kv_heads, cache_len, cfg.head_dim)
        s = sharding.logical_sharding(CACHE_AXES, shape, self.mesh, sharding.TRAIN_RULES)
        return KVCache(s, s)


def _layout(params: Params) -> _Layout:
    mesh = sharding.mesh_of(params)
    leaves = [x.sharding if isinstance(x.sharding, NamedSharding) else NamedSharding(mesh, P())
              for x in jax.tree.leaves(params)]
    return _Layout(mesh, jax.tree.structure(params), tuple(leaves))


@functools.lru_cache(maxsize=64)
def _prefill_program(layout: _Layout, cfg: ModelConfig, prompts: int, prompt_len: int,
                     cache_len: int, num_samples: int):
    """`_prefill` of `[prompts, prompt_len]`, jitted with the layout's in/out shardings."""
    n = prompts * num_samples
    return jax.jit(
        functools.partial(_prefill, cfg=cfg, cache_len=cache_len, num_samples=num_samples),
        in_shardings=(layout.params, layout.rows((prompts, prompt_len)),
                      layout.rows((prompts, prompt_len))),
        out_shardings=(layout.rows((n, cfg.vocab_size)), layout.cache(cfg, n, cache_len),
                       layout.rows((n, cache_len)), layout.rows((n,))))


@functools.lru_cache(maxsize=64)
def _decode_program(layout: _Layout, cfg: ModelConfig, n: int, cache_len: int,
                    max_new_tokens: int):
    """`_decode` of `n` rows, jitted with the layout's in/out shardings; the cache is
    donated."""
    cache, r = layout.cache(cfg, n, cache_len), layout.replicated
    new = layout.rows((n, max_new_tokens))
    return jax.jit(
        functools.partial(_decode, cfg=cfg, max_new_tokens=max_new_tokens),
        in_shardings=(layout.params, cache,
                      DecodeStart(layout.rows((n, cfg.vocab_size)), layout.rows((n, cache_len)),
                                  layout.rows((n,)), layout.rows((n,)), layout.rows((n,))),
                      SamplingInputs(r, r, r, r, r)),
        out_shardings=(new, new, layout.rows((n,)), r, cache), donate_argnums=1)


def sampler_programs(cfg: ModelConfig, params: Params, prompts: int, prompt_len: int,
                     max_new_tokens: int, num_samples: int = 1):
    """The jitted (prefill, decode) programs `generate_with_params` runs for `prompts` rows
    (already padded to a multiple of `row_multiple(params)`) in a `prompt_len` bucket; also
    for inspecting their compiled shardings and memory."""
    layout = _layout(params)
    cache_len = prompt_len + max_new_tokens
    return (_prefill_program(layout, cfg, prompts, prompt_len, cache_len, num_samples),
            _decode_program(layout, cfg, prompts * num_samples, cache_len, max_new_tokens))


def row_multiple(params: Params) -> int:
    """Prompt rows are padded to a multiple of this: the devices rows are split over."""
    return _layout(params).row_multiple


def generate_with_params(cfg: ModelConfig, params: Params, prompts: Sequence[Sequence[int]],
                         max_new_tokens: int, *, temperature: float = 1.0, top_p: float = 1.0,
                         top_k: int = 0, num_samples: int = 1, greedy_samples: int = 0,
                         seed: int | jax.Array = 0, stop_ids: Sequence[int] = (),
                         pad_id: int = 0, max_cache_len: int | None = None
                         ) -> GenerationResult:
    """`generate` on a parameter dict (the trainer's hot path; no NNX graph traversal), rows
    sharded over the parameters' mesh."""
    max_cache_len = max_cache_len or cfg.max_position_embeddings
    longest = _validate(cfg, prompts, max_new_tokens, num_samples, greedy_samples,
                        max_cache_len, stop_ids)
    length = bucket_length(longest, max_cache_len - max_new_tokens)
    layout = _layout(params)
    padded = list(prompts) + [prompts[-1]] * (-len(prompts) % layout.row_multiple)
    tokens, mask = left_pad(padded, length, pad_id)
    prefill_fn, decode_fn = sampler_programs(cfg, params, len(padded), length, max_new_tokens,
                                             num_samples)
    rows = lambda x: sharding.put_global(x, layout.rows(x.shape))  # noqa: E731
    full = lambda x: sharding.put_global(np.asarray(x), layout.replicated)  # noqa: E731
    logits, cache, kv_mask, lengths = prefill_fn(params, rows(tokens), rows(mask))
    stops = np.full((MAX_STOP_IDS,), -1, np.int32)
    stops[:len(stop_ids)] = list(stop_ids)
    key = seed if isinstance(seed, jax.Array) else jax.random.key(seed)
    n = len(prompts) * num_samples
    row = np.arange(len(padded) * num_samples)  # [N] prompt-major: rows of a prompt adjacent
    active = row < n
    greedy = row % num_samples < greedy_samples  # the first greedy_samples rows of each prompt
    out, logps, done, steps, _ = decode_fn(
        params, cache, DecodeStart(logits, kv_mask, lengths, rows(active), rows(greedy)),
        SamplingInputs(full(jax.random.key_data(key)), full(np.float32(temperature)),
                       full(np.int32(top_k)), full(np.float32(top_p)), full(stops)))
    out, logps, done, steps = (sharding.to_host(x) for x in (out, logps, done, steps))
    row_tokens, row_logps = [], []
    for toks, lps in zip(out[:n], logps[:n]):
        hits = np.flatnonzero(np.isin(toks, stop_ids)) if len(stop_ids) else []
        end = int(hits[0]) + 1 if len(hits) else max_new_tokens
        row_tokens.append(toks[:end].tolist())
        row_logps.append(lps[:end])
    return GenerationResult(row_tokens, row_logps, np.asarray(done[:n]), int(steps))


def generate(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
             temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
             num_samples: int = 1, greedy_samples: int = 0, seed: int | jax.Array = 0,
             stop_ids: Sequence[int] = (), pad_id: int = 0,
             max_cache_len: int | None = None) -> GenerationResult:
    """Samples continuations of token-id prompts from a `Transformer`.

    temperature ≤ 0 is greedy; top_k ≤ 0 and top_p = 1 disable those filters. Of each
    prompt's `num_samples` rows the first `greedy_samples` (0 ≤ k ≤ num_samples) take the
    argmax token at every step whatever the temperature, and still report log-probs under
    softmax(logits / temperature), the distribution the update scores. `stop_ids`
    end a row (the stop token is kept). The cache holds the prompt bucket plus
    `max_new_tokens` slots and may not exceed `max_cache_len` (default: the model's
    max_position_embeddings).
    """
    return generate_with_params(
        model.config, model.params(), prompts, max_new_tokens, temperature=temperature,
        top_p=top_p, top_k=top_k, num_samples=num_samples, greedy_samples=greedy_samples,
        seed=seed, stop_ids=stop_ids, pad_id=pad_id, max_cache_len=max_cache_len)
