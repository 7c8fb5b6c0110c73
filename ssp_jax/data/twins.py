"""Benign twins: for each harmful goal of a step, a benign request that opens the same way.

A harmful goal that opens with one of `HARMFUL_FORMS` ("Write a script that ...") is paired,
in the same update, with a benign request of that form ("Write a script that renames photos
by date"), so the defender cannot earn its harmful-seed reward by declining a form of words:
the same opening is declined on one row and answered on the other (`selfplay.benign_twins`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ssp_jax.data.builtin import HARMFUL_FORMS
from ssp_jax.data.loaders import PromptItem
from ssp_jax.data.mixture import GoalMixture


def harmful_form(text: str) -> str | None:
    """The longest of `HARMFUL_FORMS` that `text` opens with ("Form ..."), or None."""
    return max((f for f in HARMFUL_FORMS if text.startswith(f + " ")), key=len, default=None)


class FormTwins:
    """Benign items grouped by the harmful form they open with; `pair` is pure in (seed, step)."""

    def __init__(self, benign: Sequence[PromptItem], seed: int) -> None:
        self.seed = seed
        self.by_form: dict[str, list[PromptItem]] = {}
        for item in benign:
            form = harmful_form(item.text)
            if form is not None:
                self.by_form.setdefault(form, []).append(item)
        if not self.by_form:
            raise ValueError("selfplay.benign_twins: no benign prompt opens with a harmful form "
                             "(ssp_jax.data.builtin.HARMFUL_FORMS); the benign_data sources "
                             "need imperative requests such as builtin benign_train")

    @classmethod
    def of(cls, mixture: GoalMixture) -> FormTwins:
        """Twins drawn from every training item of the benign `mixture`, under its seed."""
        return cls([item for items in mixture.items for item in items], mixture.seed)

    def pair(self, step: int, goals: Sequence[PromptItem], benign: Sequence[PromptItem]
             ) -> list[PromptItem]:
        """`benign` (the step's benign batch) with its first slots replaced, in goal order, by
        one twin for each goal whose form some benign item opens with; as many items as
        `benign`, so goals beyond its length get none."""
        twins = []
        for slot, goal in enumerate(goals):
            pool = self.by_form.get(harmful_form(goal.text) or "")
            if pool and len(twins) < len(benign):
                rng = np.random.default_rng([self.seed, step, slot])
                twins.append(pool[int(rng.integers(len(pool)))])
        return twins + list(benign[len(twins):])
