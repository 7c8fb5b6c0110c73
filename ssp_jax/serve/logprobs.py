"""Exact next-token log-probabilities for served completions, from one causal forward pass.

The sampler returns only the chosen tokens' log-probabilities under its sampling distribution;
an OpenAI `logprobs` answer also needs the top alternatives at every position. Both come from
one causal forward pass over the prompt and the completion (`completion_hidden_states`), under
the model's own distribution (temperature 1, no top-k/top-p: what vLLM calls raw log-probs).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ssp_jax.models.config import ModelConfig
from ssp_jax.models.transformer import Params, completion_hidden_states, lm_logits
from ssp_jax.rollout.sampler import sample_token


class PositionLogprobs(NamedTuple):
    """Log-probabilities at M positions of N rows."""

    chosen: jax.Array  # [N, M] f32: log p of the token that was generated there
    top_values: jax.Array  # [N, M, K] f32: the K largest log-probs, descending
    top_ids: jax.Array  # [N, M, K] int32: their token ids


def _log_softmax(params: Params, cfg: ModelConfig, prompt: jax.Array, prompt_mask: jax.Array,
                 completion: jax.Array) -> jax.Array:
    """Next-token log-softmax `[N, C, V]` f32 at the C positions that predict the completion
    tokens `[N, C]` of right-padded prompts `[N, P]` (entry 0: after the prompt's last token).
    The LM head runs only at those positions, never over the prompt."""
    hidden = completion_hidden_states(params, cfg, prompt, prompt_mask, completion)
    return jax.nn.log_softmax(lm_logits(params, cfg, hidden), axis=-1)


@functools.partial(jax.jit, static_argnames=("cfg", "num_top"))
def completion_logprobs(params: Params, prompt: jax.Array, prompt_mask: jax.Array,
                        completion: jax.Array, *, cfg: ModelConfig,
                        num_top: int) -> PositionLogprobs:
    """Log-probs of each completion token and the top `num_top` at its position.

    prompt `[N, P]` int32 right-padded with `prompt_mask [N, P]` bool; completion `[N, M]`
    int32 (entries past a row's end are ignored by the caller: a token attends only to the
    prompt and the completion tokens before it). Position j is the distribution that produced
    completion token j.
    """
    logp = _log_softmax(params, cfg, prompt, prompt_mask, completion)  # [N, M, V]
    chosen = jnp.take_along_axis(logp, completion[..., None], axis=-1)[..., 0]
    values, ids = jax.lax.top_k(logp, num_top)
    return PositionLogprobs(chosen, values, ids.astype(jnp.int32))


@functools.partial(jax.jit, static_argnames=("cfg", "num_top"))
def first_token(params: Params, prompt: jax.Array, prompt_mask: jax.Array, key: jax.Array,
                temperature: jax.Array, top_k: jax.Array, top_p: jax.Array, *,
                cfg: ModelConfig, num_top: int) -> tuple[jax.Array, PositionLogprobs]:
    """A one-token completion without the KV-cache sampler: one forward pass over right-padded
    prompts `[N, P]`, then the sampler's own `sample_token` (temperature ≤ 0 is greedy).
    Returns the tokens `[N]` int32 and their log-probs with `M = 1`."""
    placeholder = jnp.zeros((prompt.shape[0], 1), jnp.int32)
    logp = _log_softmax(params, cfg, prompt, prompt_mask, placeholder)  # [N, 1, V]
    token, _ = sample_token(logp[:, 0], key, temperature, top_k, top_p)
    chosen = jnp.take_along_axis(logp[:, 0], token[:, None], axis=-1)
    values, ids = jax.lax.top_k(logp, num_top)
    return token, PositionLogprobs(chosen, values, ids.astype(jnp.int32))
