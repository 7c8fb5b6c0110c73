"""Collapse monitor on planted always-refuse and healthy rate sequences."""

import math

import numpy as np
import pytest

from ssp_jax.collapse import (ATTACKER_REFUSAL, BENIGN_REFUSAL, CollapseError, CollapseLimit,
                              CollapseMonitor, default_limits)


def _rates_of_policy(refuse_prob: float, steps: int, rows: int, seed: int) -> list[float]:
    """Per-step refusal rates of a policy refusing each of `rows` prompts with `refuse_prob`."""
    rng = np.random.default_rng(seed)
    return list((rng.random((steps, rows)) < refuse_prob).mean(axis=1))


def test_fires_on_a_planted_always_refuse_policy_and_stops():
    monitor = CollapseMonitor(default_limits(0.3, 0.5), patience=5, stop=True)
    healthy = _rates_of_policy(0.05, 10, 8, seed=0)
    for step, rate in enumerate(healthy):
        assert monitor.update(step, {BENIGN_REFUSAL: rate}) == []
    with pytest.raises(CollapseError, match="benign/refusal_rate above 0.3 for 5 steps") as info:
        for step in range(10, 20):
            monitor.update(step, {BENIGN_REFUSAL: 1.0})
    assert "step 14" in str(info.value) and "over-refusal" in str(info.value)


def test_healthy_noisy_policy_never_fires():
    monitor = CollapseMonitor(default_limits(0.3, 0.5), patience=5, stop=True)
    benign = _rates_of_policy(0.1, 200, 4, seed=1)  # single steps reach 0.5 now and then
    attacker = _rates_of_policy(0.2, 200, 8, seed=2)
    assert max(benign) > 0.3
    for step, (b, a) in enumerate(zip(benign, attacker)):
        assert monitor.update(step, {BENIGN_REFUSAL: b, ATTACKER_REFUSAL: a}) == []


def test_warns_once_per_streak_and_again_after_a_break(caplog):
    monitor = CollapseMonitor([CollapseLimit("x", 0.5, "cause")], patience=2)
    fired = [bool(monitor.update(s, {"x": v}))
             for s, v in enumerate([0.9, 0.9, 0.9, 0.1, 0.9, 0.9])]
    assert fired == [False, True, False, False, False, True]
    assert caplog.text.count("collapse: step") == 2


def test_missing_or_nan_steps_neither_extend_nor_break_a_streak():
    monitor = CollapseMonitor(default_limits(0.3, 0.5), patience=3)
    assert monitor.update(0, {ATTACKER_REFUSAL: 0.9}) == []
    assert monitor.update(1, {ATTACKER_REFUSAL: math.nan}) == []
    assert monitor.update(2, {}) == []
    assert monitor.update(3, {ATTACKER_REFUSAL: 0.9}) == []
    warning = monitor.update(4, {ATTACKER_REFUSAL: 0.8})
    assert len(warning) == 1 and "invalid_attack_penalty" in warning[0]


@pytest.mark.parametrize("kwargs, match", [
    ({"limits": [], "patience": 0}, "patience"),
    ({"limits": [CollapseLimit("x", 1.5, "c")], "patience": 1}, "limit for x"),
])
def test_bad_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CollapseMonitor(**kwargs)


def test_restored_monitor_keeps_its_streaks():
    monitor = CollapseMonitor([CollapseLimit("x", 0.5, "cause")], patience=3)
    monitor.update(0, {"x": 0.9})
    monitor.update(1, {"x": 0.9})
    restored = CollapseMonitor([CollapseLimit("x", 0.5, "cause")], patience=3)
    restored.load_state_dict(monitor.state_dict())
    assert restored.update(2, {"x": 0.9}) == [monitor.update(2, {"x": 0.9})[0]]
