"""A judge model in this process: greedy verdicts on our sampler, answer probabilities from one
prefill forward. The model is any `ssp_jax.models.load` spec placed on the run's mesh, or the
frozen copy of the initial policy.

Prompts: chat `messages` are rendered with the judge tokenizer's chat template and tokenized as
transformers' `apply_chat_template` does (the template writes any BOS itself); raw `text` is
tokenized with its special-token strings parsed, BOS added where the tokenizer adds one.
A row whose prompt does not fit the judge cache is a `RowError`, not an error for the batch.
A candidate answer the vocabulary splits into several tokens is scored as the product of its
tokens' probabilities (one teacher-forced row per later token); where the judge's likeliest next
token is only whitespace (Llama Guard 3 writes "\n\n" before its verdict), the answer may also
start after it: P(word) += P(whitespace) · P(word | prompt + whitespace), up to MAX_LEAD deep.
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


MAX_LEAD = 3  # whitespace tokens a judge may write before its answer that are followed


@functools.partial(jax.jit, static_argnames=("cfg",))
def _candidate_probs(params: Params, tokens: jax.Array, mask: jax.Array, ids: jax.Array, *,
                     cfg: ModelConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Next-token probabilities after left-padded prompts `[B, T]` (mask `[B, T]` bool): of
    the token ids `[B, K]` int32 -> `[B, K]` f32 under the full softmax, and the likeliest
    token `[B]` int32 with its probability `[B]` f32."""
    b, t = tokens.shape
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0).astype(jnp.int32)
    logits, _ = prefill(params, cfg, tokens, positions, mask, init_cache(cfg, b, t))
    probs = jax.nn.softmax(logits, axis=-1)
    top = jnp.argmax(probs, axis=-1).astype(jnp.int32)
    return jnp.take_along_axis(probs, ids, axis=1), top, jnp.max(probs, axis=-1)


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
        text = self.render(prompt)
        if prompt.text is None:  # as transformers tokenizes a rendered chat template
            return self.tokenizer.encode(text)
        return self.tokenizer.encode_prompt(text)

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

    def candidate_pieces(self, text: str, ids: list[int],
                         candidates: Sequence[str]) -> list[list[int]]:
        """The tokens each candidate is written as when it follows `text` (tokenized in
        context, so "Yes" after "[/INST]" becomes the tokens a model writes there)."""
        plain = self.tokenizer.encode(text)  # `ids` may have a BOS added in front
        out = []
        for c in candidates:
            full = self.tokenizer.encode(text + c)
            if len(full) > len(plain) and full[:len(plain)] == plain:
                out.append(full[len(plain):])
            else:  # the candidate merged with the prompt's last token
                out.append(self.tokenizer.encode(c))
        return out

    @staticmethod
    def _queries(ids: list[int], pieces: list[list[int]]) -> list[tuple[list[int], list[int],
                                                                         int]]:
        """(context, targets, candidate) rows whose next-token probabilities multiply to the
        candidates' word probabilities: the prompt with every first piece (candidate -1), then
        one row per later piece of candidate i."""
        rows = [(ids, [p[0] for p in pieces], -1)]
        for i, p in enumerate(pieces):
            rows += [(ids + p[:k], [p[k]], i) for k in range(1, len(p))]
        return rows

    def _query_probs(self, queries: list[tuple[list[int], list[int], int]], k: int
                     ) -> list[tuple[np.ndarray, int, float] | RowError]:
        """Per (context, targets) query (targets padded to k): next-token probabilities `[k]`
        f32 of the targets after the context, the likeliest token and its probability, in
        `batch_size`-row chunks."""
        out: list = [None] * len(queries)
        for chunk in self._chunks(list(range(len(queries)))):
            rows = self._pad([queries[j][0] for j in chunk])
            length = bucket_length(max(map(len, rows)), self.max_cache_len)
            tokens, mask = left_pad(rows, length, self.tokenizer.pad_id)
            targets = [t + [t[0]] * (k - len(t)) for t in (queries[j][1] for j in chunk)]
            ids = np.asarray(self._pad(targets), np.int32)
            try:
                probs, top, pmax = (to_host(x) for x in _candidate_probs(
                    self.params, tokens, mask, ids, cfg=self.cfg))
            except Exception as e:  # this chunk's rows fail, the others go on
                for j in chunk:
                    out[j] = RowError(f"{type(e).__name__}: {e} ({self.describe})")
                continue
            for j, p, t, m in zip(chunk, probs, top, pmax):
                out[j] = (np.asarray(p, np.float32), int(t), float(m))
        return out

    def _prepare(self, text: str, ids: list[int], candidates: Sequence[str]
                 ) -> list[tuple[list[int], list[int], int]] | RowError:
        """The probability queries of one rendered prompt, or why it cannot be judged."""
        pieces = self.candidate_pieces(text, ids, candidates)
        longest = max(map(len, pieces))
        if len(ids) + longest > self.max_cache_len:
            return self._too_long(len(ids), longest)
        if any(not p for p in pieces) or len({tuple(p) for p in pieces}) < len(pieces):
            return RowError(f"the answers {list(candidates)} share a first token and are not "
                            f"distinct token sequences in the judge's tokenizer "
                            f"({self.describe}); this judge model does not fit the format")
        return self._queries(ids, pieces)

    def next_token_probs(self, prompts: Sequence[JudgePrompt],
                         candidates: Sequence[str]) -> list[np.ndarray | RowError]:
        """`[K]` f32 per prompt: P(the answer begins with each candidate word), the product of
        its tokens' probabilities (teacher-forced prefill forwards, no decoding), after any
        whitespace the judge writes first (see the module docstring)."""
        rows = [(self.render(p), self.encode(p)) for p in prompts]
        return self._word_probs(rows, candidates, depth=0)

    def _word_probs(self, rows: list[tuple[str, list[int]]], candidates: Sequence[str],
                    depth: int) -> list[np.ndarray | RowError]:
        """`next_token_probs` of rendered (text, ids) rows; `depth` whitespace tokens deep."""
        plans = [self._prepare(text, ids, candidates) for text, ids in rows]
        queries = [q for plan in plans if not isinstance(plan, RowError) for q in plan]
        answers = iter(self._query_probs(queries, len(candidates)))
        out: list[np.ndarray | RowError] = []
        leads: dict[int, tuple[float, tuple[str, list[int]]]] = {}
        for i, plan in enumerate(plans):
            got = plan if isinstance(plan, RowError) else [next(answers) for _ in plan]
            failed = got if isinstance(got, RowError) else \
                next((g for g in got if isinstance(g, RowError)), None)
            if failed is not None:
                out.append(failed)
                continue
            word = got[0][0].astype(np.float64)
            for (_, _, c), (p, _, _) in zip(plan[1:], got[1:]):
                word[c] *= p[0]
            out.append(word)
            _, top, p_top = got[0]
            lead = self.tokenizer.decode([top], skip_special_tokens=False)
            if depth < MAX_LEAD and lead and not lead.strip():
                text, ids = rows[i]
                leads[i] = (p_top, (text + lead, ids + [top]))
        if leads:
            after = self._word_probs([row for _, row in leads.values()], candidates, depth + 1)
            for (i, (p_lead, _)), sub in zip(leads.items(), after):
                out[i] = sub if isinstance(sub, RowError) else out[i] + p_lead * sub
        return [o if isinstance(o, RowError) else np.asarray(o, np.float32) for o in out]

    def close(self) -> None:
        """Nothing to release: the model's arrays go with the backend."""

    def count_tokens(self, prompt: JudgePrompt) -> int:
        """Prompt length in judge tokens (for the cache check at start-up)."""
        return len(self.encode(prompt))
