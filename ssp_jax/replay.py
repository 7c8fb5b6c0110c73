"""Reflective experience replay: a host-side pool of past defender failures, replayed by UCB.

An item is an attack prompt p (with its goal G) on which the defender was once judged a
failure (judge score ≥ `admit_score`). The trainer offers only valid attacks the attacker wrote
and the judge scored (`rl.episode.Episode.replayable`): never a malformed or off-intent one,
the attacker's own refusal, a direct slot's goal or a benign prompt, whose replay would
reward the defender for refusing harmless text. Each step the trainer replays the k items with the
highest upper confidence bound

    ucb_i = (1 - mean_r_i) + c * sqrt(ln(N) / n_i),    N = Σ_j n_j over the pool,

so attacks the defender still handles badly (low mean reward) and attacks tried only a few
times come back first. Plain Python/NumPy (no JAX); `state_dict()` is JSON-serializable.

Rules chosen here:
- Items are keyed by the attack text with whitespace normalised (`attack_key`: runs of
  whitespace become one space, ends stripped); an item keeps its goal and attack text as
  first admitted.
- Every judgement of a pooled attack updates its stats, whether or not it was a failure
  (the defender was judged on p); repeats inside one call each count.
- Eviction runs once at the end of `admit`, over the pool including that call's newcomers:
  highest mean_r goes first, then the oldest (smaller first_step, then earlier insertion).
  A newcomer that is the least worth replaying is evicted at once (counted in both
  `admitted` and `evicted`).
- Ties in UCB are broken by a seeded NumPy generator that is part of the pool's state.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from ssp_jax.sections import ReplaySection, is_int, is_real

STATE_FORMAT = 1  # version of the `state_dict()` layout


@dataclasses.dataclass(frozen=True)
class ReplayItem:
    """One pooled attack and the defender's record on it (an immutable snapshot)."""

    item_id: int  # unique over the pool's lifetime, increasing in insertion order
    goal: str  # G, the harmful goal the attack serves
    attack: str  # p, the attack prompt as first admitted
    n: int  # judgements of the defender on p (admission counts as one)
    mean_r: float  # running mean of the defender reward r_def ∈ [0, 1] over those judgements
    first_step: int  # training step of admission
    last_step: int  # training step of the latest judgement
    last_response: str  # defender response at the latest judgement
    last_score: float  # judge score of that response

    def judged(self, step: int, response: str, score: float, r_def: float) -> ReplayItem:
        """This item after one more judgement: n + 1, running mean, latest fields."""
        n = self.n + 1
        return dataclasses.replace(
            self, n=n, mean_r=self.mean_r + (r_def - self.mean_r) / n, last_step=step,
            last_response=response, last_score=score,
        )


@dataclasses.dataclass(frozen=True)
class AdmitStats:
    """Outcome of one `admit` call."""

    admitted: int  # new items
    updated: int  # rows whose attack was already pooled (its stats were updated)
    evicted: int  # items removed to stay within capacity (newcomers included)


@dataclasses.dataclass(frozen=True)
class UpdateStats:
    """Outcome of one `update` call."""

    updated: int  # judgements applied
    stale: int  # rows whose item was evicted after it was selected (ignored)


@dataclasses.dataclass(frozen=True)
class SelectStats:
    """Outcome of one `select` call; the means are 0.0 when nothing was selected."""

    selected: int  # items returned
    mean_ucb: float  # mean UCB score of the returned items at selection time
    mean_reward: float  # mean of their mean_r


def attack_key(attack: str) -> str:
    """Pool key of an attack text: whitespace runs collapsed to one space, ends stripped."""
    return " ".join(attack.split())


def ucb_scores(n: np.ndarray, mean_r: np.ndarray, c: float) -> np.ndarray:
    """UCB of each item: (1 - mean_r) + c * sqrt(ln(Σ n) / n).

    n: judgement counts `[M]` int (each ≥ 1); mean_r: mean rewards `[M]` float.
    Returns `[M]` float64; higher means replay sooner.
    """
    n = np.asarray(n, np.float64)
    mean_r = np.asarray(mean_r, np.float64)
    return (1.0 - mean_r) + c * np.sqrt(np.log(n.sum()) / n)


def _check_step(where: str, step: Any) -> int:
    if not is_int(step) or step < 0:
        raise ValueError(f"{where}: step={step!r}; valid: an int ≥ 0")
    return int(step)


def _check_lengths(where: str, columns: dict[str, Sequence[Any]]) -> None:
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        counts = ", ".join(f"{name}={length}" for name, length in lengths.items())
        raise ValueError(f"{where}: row counts differ: {counts}")


def _check_texts(where: str, name: str, values: Sequence[Any]) -> list[str]:
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(f"{where}: {name}[{i}] is {type(value).__name__}; valid: str")
    return [str(value) for value in values]


def _check_numbers(where: str, name: str, values: Sequence[Any],
                   bounds: tuple[float, float] | None = None) -> list[float]:
    """The values as Python floats; each must be finite and, with `bounds`, inside them."""
    out = []
    for i, value in enumerate(values):
        ok = is_real(value) and math.isfinite(value)
        if ok and bounds is not None:
            ok = bounds[0] <= value <= bounds[1]
        if not ok:
            valid = f"a number in [{bounds[0]}, {bounds[1]}]" if bounds else "a finite number"
            raise ValueError(f"{where}: {name}[{i}]={value!r}; valid: {valid}")
        out.append(float(value))
    return out


class ReplayPool:
    """Pool of past defender failures with UCB selection; see the module docstring."""

    def __init__(self, config: ReplaySection) -> None:
        self.config = config
        self._items: dict[int, ReplayItem] = {}  # item_id -> item, in insertion order
        self._ids: dict[str, int] = {}  # attack_key -> item_id
        self._next_id = 0
        self._rng = np.random.default_rng(config.seed)
        self._last_admit = AdmitStats(0, 0, 0)
        self._last_update = UpdateStats(0, 0)
        self._last_select = SelectStats(0, 0.0, 0.0)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[ReplayItem]:
        """The pooled items in insertion order."""
        return list(self._items.values())

    def admit(self, step: int, goals: Sequence[str], attacks: Sequence[str],
              responses: Sequence[str], scores: Sequence[float],
              r_def: Sequence[float]) -> AdmitStats:
        """Adds fresh failures and updates pooled attacks from one batch of judged rows.

        Row i: goal, attack, defender response, judge score (failure when ≥ admit_score)
        and defender reward r_def ∈ [0, 1]. A pooled attack is updated whatever its score;
        an unpooled one enters only on failure. Evicts down to capacity afterwards.
        """
        where = "replay admit"
        step = _check_step(where, step)
        _check_lengths(where, {"goals": goals, "attacks": attacks, "responses": responses,
                               "scores": scores, "r_def": r_def})
        goals = _check_texts(where, "goals", goals)
        attacks = _check_texts(where, "attacks", attacks)
        responses = _check_texts(where, "responses", responses)
        scores = _check_numbers(where, "scores", scores)
        rewards = _check_numbers(where, "r_def", r_def, (0.0, 1.0))
        admitted = updated = 0
        for goal, attack, response, score, r in zip(goals, attacks, responses, scores, rewards):
            key = attack_key(attack)
            item_id = self._ids.get(key)
            if item_id is not None:
                self._items[item_id] = self._items[item_id].judged(step, response, score, r)
                updated += 1
            elif score >= self.config.admit_score:
                item = ReplayItem(self._next_id, goal, attack, 1, r, step, step, response, score)
                self._items[item.item_id] = item
                self._ids[key] = item.item_id
                self._next_id += 1
                admitted += 1
        self._last_admit = AdmitStats(admitted, updated, self._evict_overflow())
        return self._last_admit

    def _evict_overflow(self) -> int:
        """Removes the items beyond capacity: highest mean_r, then oldest; returns the count."""
        excess = len(self._items) - self.config.capacity
        if excess <= 0:
            return 0
        ranked = sorted(self._items.values(),
                        key=lambda it: (-it.mean_r, it.first_step, it.item_id))
        for item in ranked[:excess]:
            del self._items[item.item_id]
            del self._ids[attack_key(item.attack)]
        return excess

    def select(self, k: int | None = None) -> list[ReplayItem]:
        """The k items (default replay_per_step) with the highest UCB, best first.

        Equal scores are ordered by draws from the pool's generator (one draw per item on
        every call with k > 0 and a non-empty pool). Returns immutable snapshots; report
        their judgements back with `update(step, [it.item_id ...], ...)`.
        """
        k = self.config.replay_per_step if k is None else k
        if not is_int(k) or k < 0:
            raise ValueError(f"replay select: k={k!r}; valid: an int ≥ 0")
        if k == 0 or not self._items:
            self._last_select = SelectStats(0, 0.0, 0.0)
            return []
        items = list(self._items.values())
        ucb = ucb_scores(np.array([it.n for it in items]),
                         np.array([it.mean_r for it in items]), self.config.ucb_c)
        tiebreak = self._rng.random(len(items))
        order = np.lexsort((tiebreak, -ucb))[:k]
        chosen = [items[i] for i in order]
        self._last_select = SelectStats(len(chosen), float(np.mean(ucb[order])),
                                        float(np.mean([it.mean_r for it in chosen])))
        return chosen

    def update(self, step: int, item_ids: Sequence[int], responses: Sequence[str],
               scores: Sequence[float], r_def: Sequence[float]) -> UpdateStats:
        """Records the judgements of replayed rows: per row n + 1, running mean, latest fields.

        Row i reports on item `item_ids[i]` (repeats each count). Ids of items evicted since
        selection are skipped and counted as stale; ids the pool never issued are an error.
        """
        where = "replay update"
        step = _check_step(where, step)
        _check_lengths(where, {"item_ids": item_ids, "responses": responses, "scores": scores,
                               "r_def": r_def})
        for i, item_id in enumerate(item_ids):
            if not is_int(item_id) or not 0 <= item_id < self._next_id:
                raise ValueError(
                    f"{where}: item_ids[{i}]={item_id!r} was never issued by this pool; "
                    f"valid: ids from select() (0 ≤ id < {self._next_id})"
                )
        responses = _check_texts(where, "responses", responses)
        scores = _check_numbers(where, "scores", scores)
        rewards = _check_numbers(where, "r_def", r_def, (0.0, 1.0))
        updated = stale = 0
        for item_id, response, score, r in zip(item_ids, responses, scores, rewards):
            item = self._items.get(int(item_id))
            if item is None:
                stale += 1
                continue
            self._items[item.item_id] = item.judged(step, response, score, r)
            updated += 1
        self._last_update = UpdateStats(updated, stale)
        return self._last_update

    def metrics(self) -> dict[str, float]:
        """Numbers for logging: pool size and the latest admit, update and select calls."""
        return {
            "pool_size": float(len(self._items)),
            "admitted": float(self._last_admit.admitted),
            "admit_updates": float(self._last_admit.updated),
            "evicted": float(self._last_admit.evicted),
            "replay_updates": float(self._last_update.updated),
            "replay_stale": float(self._last_update.stale),
            "selected": float(self._last_select.selected),
            "selected_mean_ucb": self._last_select.mean_ucb,
            "selected_mean_reward": self._last_select.mean_reward,
        }

    def state_dict(self) -> dict[str, Any]:
        """The whole pool as JSON-serializable plain data (the latest-call stats excluded).

        Layout: {"format", "config", "next_id", "rng" (NumPy PCG64 state; its integers
        exceed 64 bits, which Python's json keeps exactly), "items" (insertion order)}.
        """
        return {
            "format": STATE_FORMAT,
            "config": self.config.to_json(),
            "next_id": self._next_id,
            "rng": self._rng.bit_generator.state,
            "items": [dataclasses.asdict(item) for item in self._items.values()],
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any],
                        config: ReplaySection | None = None) -> ReplayPool:
        """Rebuilds a pool from `state_dict()` output (also after a JSON round trip).

        With `config` (a resumed run's settings) the pool uses it instead of the saved one;
        items beyond its capacity are then evicted as `admit` would."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"replay pool state: format={found!r}; valid: a dict from "
                f"ReplayPool.state_dict() with format {STATE_FORMAT}"
            )
        missing = [key for key in ("config", "next_id", "rng", "items") if key not in state]
        if missing:
            raise ValueError(f"replay pool state lacks {', '.join(missing)}")
        pool = cls(config or ReplaySection(**state["config"]))
        field_names = [f.name for f in dataclasses.fields(ReplayItem)]
        for i, row in enumerate(state["items"]):
            if not isinstance(row, dict) or sorted(row) != sorted(field_names):
                raise ValueError(
                    f"replay pool state: items[{i}] has fields "
                    f"{sorted(row) if isinstance(row, dict) else row!r}; valid: {field_names}"
                )
            item = ReplayItem(**row)
            key = attack_key(item.attack)
            if key in pool._ids or item.item_id in pool._items:
                raise ValueError(
                    f"replay pool state: items[{i}] repeats attack or item_id {item.item_id}"
                )
            pool._items[item.item_id] = item
            pool._ids[key] = item.item_id
        if config is not None:
            pool._evict_overflow()
        if len(pool._items) > pool.config.capacity:
            raise ValueError(
                f"replay pool state holds {len(pool._items)} items, over capacity "
                f"{pool.config.capacity}"
            )
        pool._next_id = int(state["next_id"])
        if pool._items and pool._next_id <= max(pool._items):
            raise ValueError(
                f"replay pool state: next_id={pool._next_id} must exceed every item_id"
            )
        pool._rng.bit_generator.state = state["rng"]
        return pool
