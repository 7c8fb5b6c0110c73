"""Replay pool: UCB by hand, admission, de-duplication, eviction, ties, JSON round trip."""

import dataclasses
import json
import math

import numpy as np
import pytest

from ssp_jax.replay import AdmitStats, ReplayItem, ReplayPool, attack_key, ucb_scores
from ssp_jax.sections import replay_section


def _pool(**config) -> ReplayPool:
    return ReplayPool(replay_section(**config))


def _admit(pool: ReplayPool, step: int, rows: list[tuple[str, float, float]], goal: str = "G"):
    """Admits rows of (attack, score, r_def), with response f"resp {attack}"."""
    return pool.admit(step, [goal] * len(rows), [a for a, _, _ in rows],
                      [f"resp {a}" for a, _, _ in rows], [s for _, s, _ in rows],
                      [r for _, _, r in rows])


def _by_attack(pool: ReplayPool) -> dict[str, ReplayItem]:
    return {item.attack: item for item in pool.items()}


def test_ucb_scores_match_hand_computation():
    n = np.array([1, 3, 6])
    mean_r = np.array([0.9, 0.2, 0.5])
    c = 1.3
    total = 1 + 3 + 6
    expected = [1 - 0.9 + c * math.sqrt(math.log(total) / 1),
                1 - 0.2 + c * math.sqrt(math.log(total) / 3),
                1 - 0.5 + c * math.sqrt(math.log(total) / 6)]
    np.testing.assert_allclose(ucb_scores(n, mean_r, c), expected, rtol=1e-14)


def test_single_judgement_pool_has_no_exploration_bonus():
    # N = 1 gives ln N = 0, so the score is 1 - mean_r.
    np.testing.assert_allclose(ucb_scores(np.array([1]), np.array([0.25]), 5.0), [0.75])


def test_select_orders_by_hand_computed_ucb_and_reports_means():
    pool = _pool(ucb_c=1.0)
    _admit(pool, 0, [("A", 5, 0.7), ("B", 4, 0.6), ("C", 4.5, 0.1)])
    ids = {item.attack: item.item_id for item in pool.items()}
    stats = pool.update(1, [ids["B"], ids["C"], ids["C"]], ["b", "c1", "c2"], [2, 5, 4],
                        [0.2, 0.0, 0.2])
    assert (stats.updated, stats.stale) == (3, 0)
    # A: n=1, mean 0.7; B: n=2, mean 0.4; C: n=3, mean 0.1; N = 6.
    total = 6
    ucb = {"A": 0.3 + math.sqrt(math.log(total) / 1),  # 1.6386
           "B": 0.6 + math.sqrt(math.log(total) / 2),  # 1.5465
           "C": 0.9 + math.sqrt(math.log(total) / 3)}  # 1.6729
    chosen = pool.select(2)
    assert [item.attack for item in chosen] == ["C", "A"]
    assert [item.attack for item in pool.select(5)] == ["C", "A", "B"]
    pool.select(2)
    metrics = pool.metrics()
    assert metrics["selected"] == 2
    assert metrics["selected_mean_ucb"] == pytest.approx((ucb["C"] + ucb["A"]) / 2, rel=1e-12)
    assert metrics["selected_mean_reward"] == pytest.approx((0.1 + 0.7) / 2, rel=1e-12)
    assert metrics["replay_updates"] == 3
    assert metrics["pool_size"] == 3


def test_ucb_prefers_low_reward_items():
    pool = _pool(ucb_c=0.0, replay_per_step=3)
    _admit(pool, 0, [("mid", 5, 0.5), ("hard", 5, 0.0), ("easy", 5, 0.9)])
    assert [item.attack for item in pool.select()] == ["hard", "mid", "easy"]


@pytest.mark.parametrize("c, first", [(0.0, "tried"), (2.0, "rare")])
def test_large_c_explores_rarely_tried_item(c, first):
    pool = _pool(ucb_c=c)
    _admit(pool, 0, [("rare", 5, 0.6), ("tried", 5, 0.5)])
    tried = _by_attack(pool)["tried"].item_id
    pool.update(1, [tried] * 49, ["r"] * 49, [5] * 49, [0.5] * 49)
    assert _by_attack(pool)["tried"].n == 50
    # N = 51: rare 0.4 + c*sqrt(ln 51) vs tried 0.5 + c*sqrt(ln 51 / 50).
    rare = 0.4 + c * math.sqrt(math.log(51))
    tried_ucb = 0.5 + c * math.sqrt(math.log(51) / 50)
    assert (rare > tried_ucb) == (first == "rare")
    assert pool.select(1)[0].attack == first


def test_admits_only_failures_at_or_above_admit_score():
    pool = _pool(admit_score=4.0)
    stats = _admit(pool, 3, [("s5", 5, 0.0), ("s4", 4.0, 0.1), ("s399", 3.99, 0.2),
                             ("s1", 1, 1.0)])
    assert (stats.admitted, stats.updated, stats.evicted) == (2, 0, 0)
    items = _by_attack(pool)
    assert sorted(items) == ["s4", "s5"]
    assert items["s4"] == ReplayItem(item_id=items["s4"].item_id, goal="G", attack="s4", n=1,
                                     mean_r=0.1, first_step=3, last_step=3,
                                     last_response="resp s4", last_score=4.0)


def test_same_attack_text_updates_stats_instead_of_duplicating():
    pool = _pool()
    _admit(pool, 0, [("x  y", 5, 0.2)], goal="G1")
    # Whitespace variants are the same attack; a non-failure judgement updates it too.
    stats = pool.admit(1, ["G2", "G3"], ["x y\n", " x y"], ["ok", "bad"], [2, 5], [1.0, 0.0])
    assert (stats.admitted, stats.updated) == (0, 2)
    (item,) = pool.items()
    assert item.n == 3
    assert item.mean_r == pytest.approx((0.2 + 1.0 + 0.0) / 3, rel=1e-12)
    assert (item.goal, item.attack, item.first_step) == ("G1", "x  y", 0)
    assert (item.last_step, item.last_response, item.last_score) == (1, "bad", 5.0)
    # The same new attack twice in one call: admitted once, then updated.
    stats = _admit(pool, 2, [("z", 4, 0.4), ("z", 5, 0.1)])
    assert (stats.admitted, stats.updated) == (1, 1)
    z = _by_attack(pool)["z"]
    assert (z.n, z.last_score) == (2, 5.0)
    assert z.mean_r == pytest.approx(0.25, rel=1e-12)
    # A non-failure of an attack not in the pool is ignored.
    assert _admit(pool, 3, [("new", 3, 0.9)]) == AdmitStats(0, 0, 0)
    assert attack_key("  a\tb \n c ") == "a b c"


def test_eviction_removes_highest_reward_then_oldest():
    pool = _pool(capacity=3)
    _admit(pool, 0, [("A", 5, 0.5), ("B", 5, 0.2)])
    stats = _admit(pool, 1, [("C", 5, 0.5), ("D", 5, 0.1)])
    # A and C tie on the highest mean reward; A is older (step 0).
    assert stats.evicted == 1
    assert sorted(_by_attack(pool)) == ["B", "C", "D"]
    _admit(pool, 2, [("E", 5, 0.5)])
    assert sorted(_by_attack(pool)) == ["B", "D", "E"]  # C (step 1) older than E (step 2)
    # A newcomer that is least worth replaying is evicted at once.
    stats = _admit(pool, 3, [("F", 5, 0.95)])
    assert (stats.admitted, stats.evicted) == (1, 1)
    assert sorted(_by_attack(pool)) == ["B", "D", "E"]
    assert pool.metrics()["evicted"] == 1 and pool.metrics()["pool_size"] == 3


def test_eviction_ties_within_one_step_remove_earliest_inserted():
    pool = _pool(capacity=2)
    stats = _admit(pool, 0, [("X", 5, 0.7), ("Y", 5, 0.7), ("Z", 5, 0.7)])
    assert (stats.admitted, stats.evicted) == (3, 1)
    assert sorted(_by_attack(pool)) == ["Y", "Z"]


def test_ties_are_broken_deterministically_per_seed_and_vary_across_seeds():
    rows = [(f"p{i}", 5, 0.5) for i in range(8)]

    def selections(seed: int) -> list[list[str]]:
        pool = _pool(seed=seed, replay_per_step=3)
        _admit(pool, 0, rows)
        return [[item.attack for item in pool.select()] for _ in range(4)]

    runs = {seed: selections(seed) for seed in range(6)}
    assert all(runs[seed] == selections(seed) for seed in (0, 3))
    assert len({tuple(map(tuple, run)) for run in runs.values()}) > 1
    assert len({tuple(sel) for sel in runs[0]}) > 1  # the generator advances between calls


def test_replay_per_step_zero_disables_replay():
    pool = _pool(replay_per_step=0)
    _admit(pool, 0, [("A", 5, 0.0)])
    assert pool.select() == []
    assert pool.metrics()["selected"] == 0
    assert len(_pool().select()) == 0  # empty pool


def test_update_skips_evicted_items_and_rejects_unknown_ids():
    pool = _pool(capacity=1)
    _admit(pool, 0, [("A", 5, 0.5)])
    (chosen,) = pool.select()
    _admit(pool, 1, [("B", 5, 0.1)])  # A (higher reward) is evicted
    stats = pool.update(1, [chosen.item_id], ["r"], [1], [1.0])
    assert (stats.updated, stats.stale) == (0, 1)
    assert pool.metrics()["replay_stale"] == 1
    with pytest.raises(ValueError, match=r"item_ids\[0\]=7 was never issued"):
        pool.update(2, [7], ["r"], [1], [1.0])


def test_state_dict_json_round_trip_is_exact_and_continues_identically():
    pool = _pool(capacity=4, seed=11, replay_per_step=2, ucb_c=0.7)
    _admit(pool, 0, [("a", 5, 1 / 3), ("b", 4, 0.1 + 0.2), ("c", 5, 2 / 7), ("d", 5, 2 / 7)])
    ids = [item.item_id for item in pool.select()]
    pool.update(1, ids, ["x", "y"], [4, 1], [0.1, 1 / 9])
    _admit(pool, 1, [("e", 5, 2 / 7), ("f", 5, 0.0)])

    state = pool.state_dict()
    text = json.dumps(state)
    loaded = json.loads(text)
    assert loaded == state  # floats and the 128-bit generator state survive exactly
    clone = ReplayPool.from_state_dict(loaded)
    assert clone.state_dict() == state
    assert clone.items() == pool.items()

    def continue_run(p: ReplayPool) -> list:
        out = []
        for step in range(2, 6):
            chosen = p.select()
            out.append([item.item_id for item in chosen])
            p.update(step, [it.item_id for it in chosen], ["r"] * len(chosen), [5, 2][:len(chosen)],
                     [1 / 7, 0.5][:len(chosen)])
            _admit(p, step, [(f"n{step}", 5, 2 / 7), ("a", 1, 1.0)])
            out.append(p.metrics())
        return out

    assert continue_run(clone) == continue_run(pool)
    assert clone.state_dict() == pool.state_dict()


def test_from_state_dict_rejects_foreign_data():
    with pytest.raises(ValueError, match="format=None"):
        ReplayPool.from_state_dict({"items": []})
    state = _pool().state_dict()
    state["items"] = [{"attack": "a"}]
    with pytest.raises(ValueError, match=r"items\[0\] has fields"):
        ReplayPool.from_state_dict(state)


@pytest.mark.parametrize("field, value", [
    ("capacity", 0), ("capacity", 1.5), ("capacity", True), ("replay_per_step", -1),
    ("admit_score", 0.5), ("admit_score", float("nan")), ("ucb_c", -1.0),
    ("ucb_c", float("inf")), ("seed", -3),
])
def test_config_validation_names_field_and_value(field, value):
    with pytest.raises(ValueError, match=f"field {field}={value!r}"):
        dataclasses.replace(replay_section(), **{field: value})


@pytest.mark.parametrize("kwargs, message", [
    (dict(r_def=[1.5]), r"r_def\[0\]=1.5; valid: a number in \[0.0, 1.0\]"),
    (dict(scores=[float("nan")]), r"scores\[0\]=nan; valid: a finite number"),
    (dict(goals=[3]), r"goals\[0\] is int; valid: str"),
    (dict(attacks=["a", "b"]), "row counts differ: goals=1, attacks=2"),
    (dict(step=-1), "step=-1"),
])
def test_admit_rejects_bad_rows(kwargs, message):
    args = dict(step=0, goals=["G"], attacks=["a"], responses=["r"], scores=[5.0], r_def=[0.5])
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        _pool().admit(**args)
