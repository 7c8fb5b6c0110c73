"""Batched greedy completions on the jitted sampler (evaluation)."""

from __future__ import annotations

from typing import Callable, Sequence

from ssp_jax.models.config import ModelConfig
from ssp_jax.models.tokenizer import Tokenizer
from ssp_jax.models.transformer import Params
from ssp_jax.rollout.sampler import generate_with_params


def greedy_completions(cfg: ModelConfig, params: Params, tokenizer: Tokenizer,
                       prompts: Sequence[list[int]], max_new_tokens: int, *,
                       batch_size: int = 16, max_cache_len: int | None = None,
                       progress: Callable[[int], None] | None = None) -> list[str]:
    """Greedy replies to token-id prompts, `batch_size` rows per sampler call; when there are
    several chunks the last is padded with repeats so that one program serves them all.
    `progress(n)` is called after each chunk of n prompts."""
    replies: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        padded = chunk + [chunk[-1]] * (batch_size - len(chunk)) if len(prompts) > batch_size \
            else chunk
        out = generate_with_params(cfg, params, padded, max_new_tokens, temperature=0.0,
                                   stop_ids=tokenizer.stop_ids, pad_id=tokenizer.pad_id,
                                   max_cache_len=max_cache_len)
        replies.extend(tokenizer.decode(t).strip() for t in out.tokens[:len(chunk)])
        if progress:
            progress(len(chunk))
    return replies

