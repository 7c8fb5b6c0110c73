"""How varied are the attacks? Mean pairwise cosine distance of embeddings, corpus distinct-n
and self-BLEU, per step and over a sliding window of steps (host side, NumPy).

A collapsing attacker repeats one template: cosine distance and distinct-n fall towards 0,
self-BLEU rises towards 1.
"""

from __future__ import annotations

import collections
import math
from typing import Callable, Sequence

import numpy as np

from ssp_jax.judge.degenerate import words


def mean_pairwise_cosine_distance(embeddings: np.ndarray) -> float:
    """Mean of `1 - cos(e_i, e_j)` over pairs i < j of `embeddings [N, D]` (rows need not be
    normalised; a zero row counts as distance 1 to everything). NaN when N < 2."""
    e = np.asarray(embeddings, np.float64)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {e.shape}")
    n = e.shape[0]
    if n < 2:
        return math.nan
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    u = np.divide(e, norms, out=np.zeros_like(e), where=norms > 0)
    cos = u @ u.T
    return float(1.0 - cos[np.triu_indices(n, k=1)].mean())


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def corpus_distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over every text together (Li et al., 2016); words as in
    `ssp_jax.judge.degenerate.words`. NaN when the texts have no n-gram."""
    grams = [g for t in texts for g in _ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def bleu(hypothesis: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4,
         epsilon: float = 0.1) -> float:
    """Sentence BLEU of a token list against references, uniform weights over n = 1..N with
    N = min(max_n, len(hypothesis)):

        BLEU = BP * exp(mean_n log p_n),  p_n = clipped matches_n / hypothesis n-grams,
        BP = exp(1 - r / c) if c < r else 1  (c: hypothesis length, r: closest reference
        length, the shorter on ties).

    A p_n with no match is `epsilon / n-grams` (NLTK's smoothing method 1). 0 for an empty
    hypothesis or no references."""
    c = len(hypothesis)
    if c == 0 or not references:
        return 0.0
    top = min(max_n, c)
    log_p = 0.0
    for n in range(1, top + 1):
        hyp = collections.Counter(_ngrams(hypothesis, n))
        most = collections.Counter()
        for ref in references:
            for gram, count in collections.Counter(_ngrams(ref, n)).items():
                most[gram] = max(most[gram], count)
        matches = sum(min(count, most[gram]) for gram, count in hyp.items())
        total = c - n + 1
        log_p += math.log((matches or epsilon) / total)
    r = min((len(ref) for ref in references), key=lambda length: (abs(length - c), length))
    bp = 1.0 if c >= r else math.exp(1.0 - r / c)
    return bp * math.exp(log_p / top)


def self_bleu(texts: Sequence[str], max_n: int = 4) -> float:
    """Mean BLEU of each text against all the others (Zhu et al., 2018). NaN when N < 2."""
    if len(texts) < 2:
        return math.nan
    tokens = [words(t) for t in texts]
    return float(np.mean([bleu(tokens[i], tokens[:i] + tokens[i + 1:], max_n)
                          for i in range(len(tokens))]))


def diversity_metrics(texts: Sequence[str], embeddings: np.ndarray | None = None,
                      prefix: str = "diversity/") -> dict[str, float]:
    """The metrics of one set of texts as a flat dict: `pairwise_cosine_distance` (only when
    `embeddings [N, D]` are given), `distinct_1`, `distinct_2`, `self_bleu`."""
    out = {}
    if embeddings is not None:
        if len(embeddings) != len(texts):
            raise ValueError(f"{len(embeddings)} embeddings for {len(texts)} texts")
        out[prefix + "pairwise_cosine_distance"] = mean_pairwise_cosine_distance(embeddings)
    out[prefix + "distinct_1"] = corpus_distinct_n(texts, 1)
    out[prefix + "distinct_2"] = corpus_distinct_n(texts, 2)
    out[prefix + "self_bleu"] = self_bleu(texts)
    return out


class DiversityWindow:
    """The same metrics over the attacks of the last `steps` steps together.

    embed: texts -> `[N, D]` embeddings (e.g. `SentenceEncoder.embed`), or None to skip the
      cosine distance. Embeddings are computed once per text, when it is added.
    """

    def __init__(self, steps: int, embed: Callable[[Sequence[str]], np.ndarray] | None = None):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.embed = embed
        self._steps: collections.deque = collections.deque(maxlen=steps)

    def add(self, texts: Sequence[str]) -> dict[str, float]:
        """Adds one step's texts; returns that step's metrics (`diversity/...`) and the
        window's (`diversity_window/...`)."""
        texts = list(texts)
        emb = np.asarray(self.embed(texts)) if self.embed is not None else None
        self._steps.append((texts, emb))
        window_texts = [t for ts, _ in self._steps for t in ts]
        window_emb = (np.concatenate([e for _, e in self._steps if len(e)]
                                     or [np.zeros((0, emb.shape[1]))])
                      if emb is not None else None)
        return (diversity_metrics(texts, emb)
                | diversity_metrics(window_texts, window_emb, prefix="diversity_window/"))

    def state_dict(self) -> list[dict]:
        """The window as JSON-ready data (texts and their embeddings), for checkpoints."""
        return [{"texts": ts, "embeddings": None if e is None else e.tolist()}
                for ts, e in self._steps]

    def load_state_dict(self, steps: Sequence[dict]) -> None:
        """Restores a window saved by `state_dict` (the newest `steps` of it are kept)."""
        self._steps.clear()
        for saved in steps:
            emb = saved["embeddings"]
            self._steps.append((list(saved["texts"]),
                                None if emb is None else np.asarray(emb, np.float32)))
