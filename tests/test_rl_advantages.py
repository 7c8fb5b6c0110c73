"""Group advantages against a float64 loop reference; group-id layouts by hand."""

import numpy as np
import pytest

from ssp_jax.rl.advantages import attacker_group_ids, group_advantages
from ssp_jax.rl.assemble import defender_group_ids


def _reference(rewards, ids, scale_by_std, eps=1e-6):
    out = np.zeros(len(rewards))
    for gid in set(ids.tolist()):
        rows = [i for i in range(len(ids)) if ids[i] == gid]
        vals = [float(rewards[i]) for i in rows]
        mean = sum(vals) / len(vals)
        std = (sum((v - mean) ** 2 for v in vals) / len(vals)) ** 0.5
        for i in rows:
            out[i] = (rewards[i] - mean) / (std + eps) if scale_by_std else rewards[i] - mean
    return out


@pytest.mark.parametrize("scale_by_std", [True, False])
def test_group_advantages_match_reference(scale_by_std):
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.repeat([7, -3, 100, 4], [5, 3, 8, 2]))  # unsorted, non-contiguous
    rewards = rng.uniform(0, 1, ids.size).astype(np.float32)
    got = group_advantages(rewards, ids, scale_by_std=scale_by_std)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _reference(rewards, ids, scale_by_std), rtol=1e-5, atol=1e-6)


def test_grpo_uses_population_std():
    got = group_advantages(np.array([0.0, 1.0]), np.array([0, 0]), scale_by_std=True, eps=1e-9)
    np.testing.assert_allclose(got, [-1.0, 1.0], rtol=1e-6)  # mean 0.5, population std 0.5


@pytest.mark.parametrize("scale_by_std", [True, False])
def test_degenerate_groups_give_exact_zero(scale_by_std):
    rewards = np.array([0.1, 0.1, 0.1, 0.7, 0.3, 0.9], np.float32)
    ids = np.array([0, 0, 0, 1, 2, 2])  # all-equal group, single-row group, real group
    got = group_advantages(rewards, ids, scale_by_std=scale_by_std)
    assert np.all(np.isfinite(got))
    np.testing.assert_array_equal(got[:4], 0.0)
    assert got[4] < 0 < got[5]


def test_group_advantages_reject_mismatched_or_bad_input():
    with pytest.raises(ValueError, match="shapes"):
        group_advantages(np.ones(3), np.zeros(2, int), scale_by_std=True)
    with pytest.raises(ValueError, match="integers"):
        group_advantages(np.ones(2), np.zeros(2), scale_by_std=True)
    with pytest.raises(ValueError, match="row 1"):
        group_advantages(np.array([0.0, np.inf]), np.zeros(2, int), scale_by_std=False)


def test_attacker_groups_are_goals():
    np.testing.assert_array_equal(attacker_group_ids(3, 2), [0, 0, 1, 1, 2, 2])


def test_defender_groups_are_attacks_when_several_responses():
    # G=2, A=2, R=3: row = ((g * A) + a) * R + r, group = g * A + a
    expected = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    np.testing.assert_array_equal(defender_group_ids(12, 0, 0, 2, 3), expected)


def test_defender_groups_are_goals_with_one_response():
    # G=2, A=3, R=1: row = g * A + a, group = g
    np.testing.assert_array_equal(defender_group_ids(6, 0, 0, 3, 1), [0, 0, 0, 1, 1, 1])


def test_defender_groups_keep_replayed_and_benign_rows_apart_with_one_response():
    # G=2, A=2, R=1, then 2 replayed and 2 benign rows: groups per goal, replay, benign
    np.testing.assert_array_equal(defender_group_ids(4, 2, 2, 2, 1), [0, 0, 1, 1, 2, 2, 3, 3])


def test_group_id_helpers_reject_non_positive_counts():
    with pytest.raises(ValueError, match="attacks_per_goal"):
        attacker_group_ids(2, 1.5)
