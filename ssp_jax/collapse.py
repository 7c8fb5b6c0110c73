"""Collapse monitor: warns, and optionally stops training, when a per-step rate (benign
refusal, attacker refusal or invalid attacks) stays above its limit for `patience` steps.

Host side, fed the step's metrics. A step without a rate (no benign rows that step, a NaN)
neither extends nor breaks a streak. Each streak warns once, when it reaches `patience`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Mapping, Sequence

log = logging.getLogger(__name__)

BENIGN_REFUSAL = "benign/refusal_rate"
ATTACKER_REFUSAL = "attacker/refusal_rate"


@dataclasses.dataclass(frozen=True)
class CollapseLimit:
    """`key` (a metrics name) may not exceed `limit` for `patience` steps; `cause` says what
    most likely went wrong and what to change."""

    key: str
    limit: float
    cause: str


class CollapseError(RuntimeError):
    """Raised by `CollapseMonitor.update` when `stop` is set and a limit was exceeded."""


def default_limits(max_benign_refusal: float, max_attacker_refusal: float) -> list[CollapseLimit]:
    """The two collapses seen in self-play runs, with their usual causes."""
    return [
        CollapseLimit(BENIGN_REFUSAL, max_benign_refusal,
                      "the defender refuses benign prompts (over-refusal): too few benign rows "
                      "or too weak a penalty for refusing them, or a refusal judge the policy "
                      "has learned to satisfy with apologies; raise the benign share, use the "
                      "strict decline check, lower the learning rate or add the KL penalty"),
        CollapseLimit(ATTACKER_REFUSAL, max_attacker_refusal,
                      "the shared policy refuses its attacker brief: a declined attack costs "
                      "no more than a failed one (make invalid_attack_penalty negative), or "
                      "the defender's refusal training spills into the attacker role"),
    ]


class CollapseMonitor:
    """Tracks consecutive steps above each limit.

    limits: the rates to watch; patience: steps in a row above a limit before it fires;
    stop: raise `CollapseError` when one fires (else only warn).
    """

    def __init__(self, limits: Sequence[CollapseLimit], patience: int, *, stop: bool = False):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        for lim in limits:
            if not 0.0 <= lim.limit <= 1.0:
                raise ValueError(f"limit for {lim.key} must be a rate in [0, 1], got {lim.limit}")
        self.limits = list(limits)
        self.patience = patience
        self.stop = stop
        self.streaks = {lim.key: 0 for lim in self.limits}

    def state_dict(self) -> dict[str, int]:
        """Consecutive steps above each limit so far, for checkpoints."""
        return dict(self.streaks)

    def load_state_dict(self, streaks: Mapping[str, int]) -> None:
        """Restores the streaks of limits this monitor watches; others start at 0."""
        self.streaks = {key: int(streaks.get(key, 0)) for key in self.streaks}

    def update(self, step: int, metrics: Mapping[str, float]) -> list[str]:
        """Reads this step's rates from `metrics`; returns the warnings issued this step
        (also logged). Raises `CollapseError` with all of them when `stop` is set."""
        fired = []
        for lim in self.limits:
            value = metrics.get(lim.key)
            if value is None or math.isnan(value):
                continue
            self.streaks[lim.key] = self.streaks[lim.key] + 1 if value > lim.limit else 0
            if self.streaks[lim.key] == self.patience:
                fired.append(f"step {step}: {lim.key} above {lim.limit} for {self.patience} "
                             f"steps (now {value:.3f}); likely cause: {lim.cause}")
        for message in fired:
            log.warning("collapse: %s", message)
        if fired and self.stop:
            raise CollapseError("training stopped by the collapse monitor:\n" + "\n".join(fired))
        return fired
