"""A judge model in this process: greedy verdicts on our sampler, answer probabilities from one
prefill forward. The model is any `ssp_jax.models.load` spec placed on the run's mesh, or the
frozen copy of the initial policy.

Prompts: chat `messages` are rendered with the judge tokenizer's chat template; raw `text` is
tokenized with its special-token strings parsed. BOS is added where the tokenizer adds one.
A row whose prompt does not fit the judge cache is a `RowError`, not an error for the batch.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ssp_jax.judge.backend import JudgePrompt, RowError
from ssp_jax.models.config import ModelConfig
from ssp_jax.models.tokenizer import Tokenizer
from ssp_jax.models.transformer import Params, init_cache, prefill
from ssp_jax.rollout.sampler import bucket_length, generate_with_params, left_pad
from ssp_jax.sharding import to_host


@functools.partial(jax.jit, static_argnames=("cfg",))
def _candidate_probs(params: Params, tokens: jax.Array, mask: jax.Array, ids: jax.Array, *,
                     cfg: ModelConfig) -> jax.Array:
    """Next-token probabilities after left-padded prompts `[B, T]` (mask `[B, T]` bool) of the
    token ids `[B, K]` int32 -> `[B, K]` f32, under the full softmax."""
    b, t = tokens.shape
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0).astype(jnp.int32)
    logits, _ = prefill(params, cfg, tokens, positions, mask, init_cache(cfg, b, t))
    return jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), ids, axis=1)


class LocalBackend:
    """Runs judge prompts on (cfg, params, tokenizer) in `batch_size`-row chunks (the last
    padded, so one program serves every chunk) with at most `max_cache_len` cache slots."""

    def __init__(self, cfg: ModelConfig, params: Params, tokenizer: Tokenizer, *,
                 max_cache_len: int, batch_size: int, describe: str):
        if max_cache_len < 1 or batch_size < 1:
            raise ValueError(f"max_cache_len ({max_cache_len}) and batch_size ({batch_size}) "
                             "must be >= 1")
        self.cfg, self.params, self.tokenizer = cfg, params, tokenizer
        self.max_cache_len, self.batch_size = max_cache_len, batch_size
        self.describe = describe

    def render(self, prompt: JudgePrompt) -> str:
        """The prompt as text (chat template applied to messages)."""
        if prompt.text is not None:
            return prompt.text
        return self.tokenizer.apply_chat_template(list(prompt.messages))

    def encode(self, prompt: JudgePrompt) -> list[int]:
        return self.tokenizer.encode_prompt(self.render(prompt))

    def _too_long(self, n: int, extra: int) -> RowError:
        return RowError(f"judge prompt of {n} tokens + {extra} verdict token(s) does not fit "
                        f"the judge cache of {self.max_cache_len} tokens ({self.describe}); "
                        "raise judge.max_cache_len")

    def _chunks(self, rows: list[int]):
        for start in range(0, len(rows), self.batch_size):
            yield rows[start:start + self.batch_size]

    def _pad(self, chunk: list[list[int]]) -> list[list[int]]:
        return chunk + [chunk[-1]] * (self.batch_size - len(chunk))

    def generate(self, prompts: Sequence[JudgePrompt], max_tokens: int) -> list[str | RowError]:
        """Greedy completions of at most `max_tokens` tokens."""
        ids = [self.encode(p) for p in prompts]
        out: list[str | RowError] = [self._too_long(len(x), max_tokens)
                                     if len(x) + max_tokens > self.max_cache_len else ""
                                     for x in ids]
        fit = [i for i, o in enumerate(out) if not isinstance(o, RowError)]
        for chunk in self._chunks(fit):
            try:
                gen = generate_with_params(
                    self.cfg, self.params, self._pad([ids[i] for i in chunk]), max_tokens,
                    temperature=0.0, stop_ids=self.tokenizer.stop_ids,
                    pad_id=self.tokenizer.pad_id, max_cache_len=self.max_cache_len)
            except Exception as e:  # this chunk's rows fail, the others go on
                for i in chunk:
                    out[i] = RowError(f"{type(e).__name__}: {e} ({self.describe})")
                continue
            for i, tokens in zip(chunk, gen.tokens):
                out[i] = self.tokenizer.decode(tokens).strip()
        return out

    def candidate_ids(self, text: str, ids: list[int], candidates: Sequence[str]) -> list[int]:
        """The token each candidate starts with when it follows `text` (tokenized in context,
        so "Yes" after "[/INST]" becomes the token a model writes there)."""
        out = []
        for c in candidates:
            full = self.tokenizer.encode_prompt(text + c)
            if len(full) > len(ids) and full[:len(ids)] == ids:
                out.append(full[len(ids)])
            else:  # the candidate merged with the prompt's last token
                out.append(self.tokenizer.encode(c)[0])
        return out

    def next_token_probs(self, prompts: Sequence[JudgePrompt],
                         candidates: Sequence[str]) -> list[np.ndarray | RowError]:
        """`[K]` f32 per prompt: P(first token of each candidate) at the first answer position,
        from one prefill forward (no decoding)."""
        out: list[np.ndarray | RowError] = []
        rows, cand = [], []
        for p in prompts:
            text = self.render(p)
            ids = self.tokenizer.encode_prompt(text)
            if len(ids) + 1 > self.max_cache_len:
                out.append(self._too_long(len(ids), 1))
                continue
            tokens = self.candidate_ids(text, ids, candidates)
            if len(set(tokens)) < len(tokens):
                out.append(RowError(f"the answers {list(candidates)} share a first token in "
                                    f"the judge's tokenizer ({self.describe}); this judge "
                                    "model does not fit the format"))
            else:
                out.append(np.zeros(len(candidates), np.float32))
                rows.append(ids)
                cand.append(tokens)
        fit = [i for i, o in enumerate(out) if not isinstance(o, RowError)]
        for chunk_rows in self._chunks(list(range(len(rows)))):
            chunk = self._pad([rows[j] for j in chunk_rows])
            length = bucket_length(max(map(len, chunk)), self.max_cache_len)
            tokens, mask = left_pad(chunk, length, self.tokenizer.pad_id)
            ids = np.asarray(self._pad([cand[j] for j in chunk_rows]), np.int32)
            try:
                probs = to_host(_candidate_probs(self.params, tokens, mask, ids, cfg=self.cfg))
            except Exception as e:  # this chunk's rows fail, the others go on
                for j in chunk_rows:
                    out[fit[j]] = RowError(f"{type(e).__name__}: {e} ({self.describe})")
                continue
            for j, p in zip(chunk_rows, probs):
                out[fit[j]] = np.asarray(p, np.float32)
        return out

    def count_tokens(self, prompt: JudgePrompt) -> int:
        """Prompt length in judge tokens (for the cache check at start-up)."""
        return len(self.encode(prompt))
