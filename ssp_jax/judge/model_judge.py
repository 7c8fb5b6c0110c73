"""A model-based judge: a judge format (prompt and verdict map) run on a backend (a model in
this process or an OpenAI-compatible server).

Rewards: the format's S in [1, 5] for each judged row. A row whose judgement failed (backend
error, timeout, prompt longer than the judge cache, unreadable verdict) is excluded, with its
error as the reason: it is never given a score.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import numpy as np

from ssp_jax.judge.backend import JudgeBackend, JudgePrompt, RowError
from ssp_jax.judge.base import Judge, JudgeResult, check_batch
from ssp_jax.judge.formats.base import JudgeFormat, Verdict

log = logging.getLogger(__name__)

SCORINGS = ("probs", "text")


@dataclasses.dataclass(frozen=True)
class ModelJudge(Judge):
    """format: prompt and verdict map; backend: runs the prompts.
    instruction_source: the request the judge sees, "goal" (the harmful intent) or "attack"
      (the attack prompt the defender saw).
    scoring: "probs" (answer-token probabilities where the format has them) or "text" (decode
      and parse, for a server without log-probabilities)."""

    format: JudgeFormat
    backend: JudgeBackend
    instruction_source: str = "goal"
    scoring: str = "probs"

    def __post_init__(self) -> None:
        if self.instruction_source not in ("goal", "attack"):
            raise ValueError(f"instruction_source must be 'goal' or 'attack', got "
                             f"{self.instruction_source!r}")
        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {', '.join(SCORINGS)}, got "
                             f"{self.scoring!r}")

    @property
    def describe(self) -> str:
        return f"{self.format.name} on {self.backend.describe}"

    def close(self) -> None:
        """Closes the backend (a judge server's connections and request threads)."""
        self.backend.close()

    def _prompt(self, request: str, response: str, context: str | None) -> JudgePrompt:
        """The format's prompt; a context goes in its slot, or before the request (as the
        defender saw it) where the format has none."""
        if context is None:
            return self.format.prompt(request, response)
        if self.format.has_context:
            return self.format.prompt(request, response, context=context)
        return self.format.prompt(f"{context}\n\n{request}", response)

    def score(self, goals: Sequence[str], attack_prompts: Sequence[str],
              responses: Sequence[str],
              contexts: Sequence[str | None] | None = None) -> JudgeResult:
        """Scores N responses; failed rows come back excluded (never raises for them)."""
        n = check_batch(goals, attack_prompts, responses, contexts)
        if n == 0:
            return JudgeResult(np.zeros(0, np.float32), [])
        requests = goals if self.instruction_source == "goal" else attack_prompts
        prompts = [self._prompt(q, r, c) for q, r, c in
                   zip(requests, responses, contexts or [None] * n)]
        try:
            outcomes = self.format.judge(self.backend, prompts, self.scoring)
        except Exception as e:  # a failed judge call excludes its rows; the caller decides
            outcomes = [RowError(f"{type(e).__name__}: {e}")] * n
        if len(outcomes) != n:
            raise RuntimeError(f"judge {self.describe} returned {len(outcomes)} verdicts for "
                               f"{n} rows")
        scores = np.full(n, np.nan, np.float32)
        excluded = np.zeros(n, bool)
        reasons = []
        for i, o in enumerate(outcomes):
            if isinstance(o, Verdict):
                scores[i] = o.score
                reasons.append(o.reason)
            else:
                excluded[i] = True
                reasons.append(f"excluded: {o.message}" if isinstance(o, RowError)
                               else f"excluded: {o!r}")
        if excluded.any():
            log.warning("judge %s: %d of %d rows excluded; last: %s", self.describe,
                        excluded.sum(), n, reasons[int(np.flatnonzero(excluded)[-1])])
        return JudgeResult(scores, reasons, excluded)
