"""The two roles' prompts: the attacker's red-teaming brief and the defender's user turn."""

from __future__ import annotations

import re
from typing import Callable

from ssp_jax.default_config import ATTACKER_BRIEF, BRIEF_PHRASES  # noqa: F401 (the roles' API)
from ssp_jax.models.tokenizer import Tokenizer

_PREAMBLE = re.compile(
    r"^\s*(?:sure[,!.]?\s*)?(?:here(?:'s| is)\s+(?:the|a|my)\s+(?:jailbreak\s+)?prompt\s*[:.]?|"
    r"(?:jailbreak\s+)?prompt\s*:)\s*",
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’`"
TRUNCATION_MARK = " [...] "  # stands in for the middle of a text cut to fit a prompt


def attacker_prompt(tokenizer: Tokenizer, goal: str, brief: str = ATTACKER_BRIEF) -> list[int]:
    """Token ids of the attacker turn: the brief with `goal` filled in, as a user message."""
    return tokenizer.chat_prompt(brief.format(goal=goal))


def defender_prompt(tokenizer: Tokenizer, attack: str, system: str = "") -> list[int]:
    """Token ids of the defender turn: the attack as a plain user message (the goal unseen)."""
    return tokenizer.chat_prompt(attack, system=system or None)


def fit_prompt(render: Callable[[str], list[int]], tokenizer: Tokenizer, text: str,
               limit: int) -> tuple[list[int], bool]:
    """`render(text)` (a role prompt's token ids) in at most `limit` tokens, and whether `text`
    had to be cut to get there.

    Only `text` is cut, never the template around it (BOS, chat header, attacker brief,
    generation prompt): its middle tokens give way to TRUNCATION_MARK, so both ends survive
    (a contextual HarmBench goal keeps the start of its context and the request at its end).
    Tokens can merge across the cut, so the length is re-measured until it fits. A template
    that alone exceeds `limit` is a ValueError (`check_prompt_budget` catches it at start-up).
    """
    ids = render(text)
    if len(ids) <= limit:
        return ids, False
    pieces = tokenizer.encode(text)
    keep = max(len(pieces) - (len(ids) - limit), 0)  # tokens of `text` to keep
    while True:
        head, tail = (keep + 1) // 2, keep // 2
        short = (tokenizer.decode(pieces[:head], skip_special_tokens=False) + TRUNCATION_MARK
                 + tokenizer.decode(pieces[len(pieces) - tail:] if tail else [],
                                    skip_special_tokens=False)).strip()
        ids = render(short)
        if len(ids) <= limit:
            return ids, True
        if keep == 0:
            break
        keep = max(keep - (len(ids) - limit), 0)
    raise ValueError(f"the role prompt's template alone has more than {limit} tokens "
                     "(selfplay.max_prompt_tokens)")


def template_lengths(tokenizer: Tokenizer, brief: str = ATTACKER_BRIEF,
                     system: str = "") -> dict[str, int]:
    """Tokens each role prompt spends on its template with a cut text in it:
    {"attacker": ..., "defender": ...}."""
    return {"attacker": len(attacker_prompt(tokenizer, TRUNCATION_MARK.strip(), brief)),
            "defender": len(defender_prompt(tokenizer, TRUNCATION_MARK.strip(), system))}


def check_prompt_budget(tokenizer: Tokenizer, limit: int, brief: str = ATTACKER_BRIEF,
                        system: str = "") -> None:
    """Raises a ValueError naming selfplay.max_prompt_tokens when a role template leaves no room
    for its text under `limit`."""
    for role, n in template_lengths(tokenizer, brief, system).items():
        if n >= limit:
            raise ValueError(
                f"config field selfplay.max_prompt_tokens={limit} leaves no room for the text "
                f"of the {role} prompt: its template alone takes {n} tokens; valid: > {n}")


def clean_attack(text: str) -> str:
    """The attack prompt from the attacker's raw reply: drops a "Here is the prompt:" style
    preamble and quotes wrapped around the whole prompt."""
    text = _PREAMBLE.sub("", text.strip(), count=1).strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text
