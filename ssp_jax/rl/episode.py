"""What one self-play step played, before any reward: the record `selfplay.play` writes and
`rl.assemble.build_batches` and the step's metrics read.

Row layout (goal-major; G goals rolled out, A attacks per goal, R responses per attack, k
replayed attacks, B benign prompts):
  attacker rows  i = g * A + a                                  (G * A rows)
  defender rows  ((g * A) + a) * R + r for fresh attacks, then R rows per replayed item,
                 then R rows per benign prompt                  (D = (G * A + k + B) * R rows)
Judged rows are the fresh and replayed ones (J = (G * A + k) * R): the harmful-seed rows, whose
seed was a harmful goal; the rest are benign-seed rows. The attacker's rewrite never changes a
row's label (`harmful_seed`), and the rewards follow it (`rl.assemble`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ssp_jax.rollout.sampler import GenerationResult


@dataclasses.dataclass
class Episode:
    """Both roles' prompts and samples, the judge's verdicts and the text checks of a step."""

    goals: list[str]  # [G] goal texts rolled out
    group_sizes: tuple[int, int]  # (A, R)
    attacker_prompts: list[list[int]]  # [G] token ids
    attacker: GenerationResult  # [G * A] samples
    attacker_samples: list[str]  # [G * A] the attacker's cleaned samples (direct slots too)
    direct: np.ndarray  # [G * A] bool, slots whose defender input is the goal itself
    defender_prompts: list[list[int]]  # [G * A + k + B] token ids
    defender: GenerationResult  # [D] samples
    responses: list[str]  # [D]
    num_replayed: int  # k
    num_benign: int  # B
    scores: np.ndarray  # [J] f32 judge scores (NaN where excluded)
    excluded: np.ndarray  # [J] bool, rows the judge failed on
    num_excluded: int
    judge_error: str | None  # the judge's last error this step (None when no row failed)
    reasons: list[str]  # [J] the judge's reasons
    refused: np.ndarray  # [D] bool, a decline by the strict or the lenient check
    declined: np.ndarray  # [J] bool, the decline check of harmful seeds (PlayChecks.declines)
    soft_declined: np.ndarray  # [J] bool, the soft decline check (PlayChecks.soft_declines)
    degenerate: np.ndarray  # [D] bool, degenerate responses
    on_topic: np.ndarray  # [B * R] bool, benign answers on the prompt's topic (all True unchecked)
    on_topic_checked: bool  # on_topic holds the on-topic check's verdicts
    validity: dict[str, np.ndarray]  # [G * A] attack checks (see selfplay.attack_validity)
    attacker_degenerate: np.ndarray  # [G * A] bool, degenerate attacker samples
    intent_checked: bool  # validity["similarity"] holds the intent check's cosines
    prompts_truncated: int  # role prompts cut to fit selfplay.max_prompt_tokens
    timings: dict[str, float]

    @property
    def num_fresh(self) -> int:
        """Fresh defender rows, G * A * R."""
        return len(self.goals) * self.group_sizes[0] * self.group_sizes[1]

    @property
    def num_judged(self) -> int:
        """Judged defender rows J (fresh, then replayed)."""
        return len(self.scores)

    @property
    def harmful_seed(self) -> np.ndarray:
        """`[D]` bool: the row's seed was a harmful goal (a fresh attack, a direct slot, a
        replayed attack); False: a benign prompt."""
        return np.arange(len(self.responses)) < self.num_judged

    @property
    def invalid(self) -> np.ndarray:
        """`[G * A]` bool: played attacks that are invalid (a direct slot's sample is not
        played)."""
        return self.validity["invalid"] & ~self.direct

    @property
    def replayable(self) -> np.ndarray:
        """`[G * A * R]` bool: fresh rows that may enter the replay pool: the judge scored the
        answer, and the attack is valid (well formed, not the attacker declining, on intent)
        and the attacker's own (not a direct slot's goal). Benign rows never may."""
        R = self.group_sizes[1]
        attack_ok = np.repeat(~self.validity["invalid"] & ~self.direct, R)
        return attack_ok & ~self.excluded[:self.num_fresh]

    @property
    def attacks(self) -> list[str]:
        """`[G * A]` the defender's input of each attack slot."""
        return [g if d else a for g, a, d in zip(self.slot_goals, self.attacker_samples,
                                                  self.direct)]

    @property
    def slot_goals(self) -> list[str]:
        """`[G * A]` the goal of each attack slot."""
        return [g for g in self.goals for _ in range(self.group_sizes[0])]

    @property
    def fresh_goals(self) -> list[str]:
        """`[G * A * R]` the goal of each fresh defender row."""
        return [g for g in self.slot_goals for _ in range(self.group_sizes[1])]

    @property
    def fresh_attacks(self) -> list[str]:
        """`[G * A * R]` the attack of each fresh defender row."""
        return [a for a in self.attacks for _ in range(self.group_sizes[1])]

    @property
    def num_tokens(self) -> int:
        """Tokens sampled (both roles)."""
        return self.attacker.num_tokens + self.defender.num_tokens
