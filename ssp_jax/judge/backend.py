"""Where a model-based judge gets its text and probabilities: a model in this process
(`ssp_jax.judge.local`) or an OpenAI-compatible server (`ssp_jax.judge.remote`).

Judge formats (rubric, llama_guard, harmbench, wildguard, strongreject) build `JudgePrompt`s
and read verdicts; a backend only runs them. A row that fails (timeout, HTTP error, prompt too
long) comes back as a `RowError`, never as a made-up answer: the format then excludes the row.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import numpy as np

Message = dict[str, str]


@dataclasses.dataclass(frozen=True)
class JudgePrompt:
    """One judge input: chat `messages` (rendered with the judge model's chat template, or sent
    to a server's chat endpoint) or a raw `text` prompt (a guard model's own format with its
    special tokens written out, sent to a completions endpoint). Exactly one is set."""

    messages: tuple[Message, ...] | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.text is None):
            raise ValueError("JudgePrompt needs exactly one of messages or text")


@dataclasses.dataclass(frozen=True)
class RowError:
    """A judge row that failed; `message` names the cause (and the url or model)."""

    message: str


class JudgeBackend(Protocol):
    """Runs judge prompts. `describe` names it in results ("model:PATH" or "url:URL MODEL")."""

    describe: str

    def generate(self, prompts: Sequence[JudgePrompt], max_tokens: int) -> list[str | RowError]:
        """Greedy completion of each prompt, at most `max_tokens` tokens."""
        ...

    def next_token_probs(self, prompts: Sequence[JudgePrompt],
                         candidates: Sequence[str]) -> list[np.ndarray | RowError]:
        """For each prompt, `[K]` f32: the probability that the judge's answer begins with each
        of the K candidate words, all of its tokens (as the word is tokenized right after the
        prompt: " Yes" after "[/INST]", "unsafe" as "un" + "safe" where the vocabulary splits
        it). A token that only begins a candidate ("un") never stands for the whole word.
        Where the judge's likeliest next token is only whitespace (Llama Guard 3 writes "\n\n"
        before its verdict), the word may also begin after it: P(whitespace) · P(word | prompt
        + whitespace) is added. 0 where the word's tokens are not among a server's top
        log-probs."""
        ...

    def close(self) -> None:
        """Releases connections and threads (nothing for a model in this process)."""
        ...
