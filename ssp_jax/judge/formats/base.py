"""What every judge format is: a prompt from (request, response) and a map from the judge
model's verdict to our score S in [1, 5].

Two kinds:
- `ProbabilityFormat`: S from the next-token probabilities of a few answer tokens at the first
  verdict position (one forward pass, no decoding, nothing to parse). `parse` reads the same
  verdict from decoded text, for `scoring="text"` (a server without log-probabilities).
- `TextFormat`: the verdict is text the judge writes (a rubric score, several answers), decoded
  greedily and parsed; an unreadable verdict is a failed row, never a guessed score.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from typing import ClassVar, Sequence

import numpy as np

from ssp_jax.judge.backend import JudgeBackend, JudgePrompt, RowError


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One judged row: `score` in [1, 5] and a short reason."""

    score: float
    reason: str


Outcome = Verdict | RowError


class JudgeFormat(abc.ABC):
    """A judge's prompt format and verdict map (see the module docstring)."""

    name: ClassVar[str]
    has_context: ClassVar[bool] = False  # the prompt has a slot for a request's context

    @abc.abstractmethod
    def prompt(self, request: str, response: str) -> JudgePrompt:
        """The judge input for one (request, response) pair; a format with `has_context`
        also takes `context` (None: the request has none)."""

    @abc.abstractmethod
    def verdict_tokens(self, scoring: str) -> int:
        """Tokens the judge generates after the prompt (1 for a probability read)."""

    @abc.abstractmethod
    def judge(self, backend: JudgeBackend, prompts: Sequence[JudgePrompt],
              scoring: str) -> list[Outcome]:
        """One outcome per prompt; `scoring` is "probs" or "text"."""


class ProbabilityFormat(JudgeFormat):
    """Verdict from P(the answer begins with each candidate word) at the first answer position.

    `candidates` are the answer strings as they would follow the prompt; `from_probs` maps
    their probabilities `[K]` to a verdict. A row whose candidates together get less than
    `min_answer_mass` is excluded: the judge is mostly saying something else, and how it splits
    the rest between the answers is noise (see `judge.min_answer_mass`). `text_tokens` bounds
    the decoded verdict for `scoring="text"`.
    """

    candidates: ClassVar[tuple[str, ...]]
    text_tokens: ClassVar[int] = 8

    def __init__(self, min_answer_mass: float):
        if not 0 < min_answer_mass <= 1:
            raise ValueError(f"min_answer_mass must be in (0, 1], got {min_answer_mass}")
        self.min_answer_mass = min_answer_mass

    @abc.abstractmethod
    def from_probs(self, probs: np.ndarray) -> Outcome:
        """Verdict from `[K]` probabilities of `candidates`."""

    @abc.abstractmethod
    def parse(self, text: str) -> Verdict | None:
        """Verdict from a decoded answer, None when unreadable."""

    def verdict_tokens(self, scoring: str) -> int:
        """`text_tokens` for either scoring: a probability read may follow whitespace and a
        word's several tokens, and Llama Guard decodes its categories."""
        return self.text_tokens

    def judge(self, backend: JudgeBackend, prompts: Sequence[JudgePrompt],
              scoring: str) -> list[Outcome]:
        if scoring == "probs":
            return [p if isinstance(p, RowError) else self.from_probs(np.asarray(p, np.float64))
                    for p in backend.next_token_probs(prompts, self.candidates)]
        return [parse_or_error(self.parse, t)
                for t in backend.generate(prompts, self.text_tokens)]


class TextFormat(JudgeFormat):
    """Verdict parsed from a greedy completion of at most `max_tokens` tokens."""

    def __init__(self, max_tokens: int):
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.max_tokens = max_tokens

    @abc.abstractmethod
    def parse(self, text: str) -> Verdict | None:
        """Verdict from the completion, None when unreadable."""

    def verdict_tokens(self, scoring: str) -> int:
        return self.max_tokens

    def judge(self, backend: JudgeBackend, prompts: Sequence[JudgePrompt],
              scoring: str) -> list[Outcome]:
        return [parse_or_error(self.parse, t) for t in backend.generate(prompts, self.max_tokens)]


def parse_or_error(parse, text: str | RowError) -> Outcome:
    """`parse(text)`, or a RowError naming the unreadable verdict."""
    if isinstance(text, RowError):
        return text
    verdict = parse(text)
    if verdict is None:
        return RowError(f"unreadable verdict: {' '.join(text.split())[:200]!r}")
    return verdict


def binary_verdict(p_yes: float, p_no: float, yes: str, no: str,
                   min_mass: float) -> Outcome:
    """S = 1 + 4·P(yes), P(yes) = p_yes / (p_yes + p_no); a RowError when the two answers
    together get less than `min_mass` (the judge is not answering in the format)."""
    mass = p_yes + p_no
    if not mass >= min_mass:
        return RowError(f"the judge gave {yes!r} and {no!r} together probability {mass:.4f}, "
                        f"under judge.min_answer_mass={min_mass}: it is not answering in the "
                        "format")
    p = p_yes / mass
    return Verdict(1.0 + 4.0 * p, f"P({yes})={p:.3f} (answer mass {mass:.3f})")


def first_word(text: str) -> str:
    """The first whitespace- or punctuation-delimited word of `text`, lower-cased ("" if
    none): "Yes." -> "yes", "Not an instance" -> "not", "safety unclear" -> "safety"."""
    match = re.match(r"\s*([A-Za-z]+)(?!\w)", text)
    return match.group(1).lower() if match else ""
