"""Group-relative advantages (GRPO / Dr. GRPO) and the groups each role is compared in.

Host side, NumPy: the arrays are one rollout's rewards, a few hundred numbers at most.

Row layout of a fresh self-play rollout, goal-major: G goals, A attacks per goal, R defender
responses per attack. Attacker row `g * A + a` is attack `a` of goal `g`; defender row
`((g * A) + a) * R + r` is response `r` to that attack.
"""

from __future__ import annotations

import numpy as np


def group_advantages(rewards: np.ndarray, group_ids: np.ndarray, *, scale_by_std: bool,
                     eps: float = 1e-6) -> np.ndarray:
    """Advantage of each row relative to the other rows of its group.

        A_i = r_i - mean_g(r)                            (Dr. GRPO, scale_by_std=False)
        A_i = (r_i - mean_g(r)) / (std_g(r) + eps)       (GRPO, scale_by_std=True)

    where g is row i's group and std_g is the population standard deviation (divide by the
    group size, not size - 1). A degenerate group, all rewards equal or a single row, gives
    exactly 0 (it carries no learning signal), never NaN.

    rewards: `[N]` float; group_ids: `[N]` int, any values (rows sharing one form a group).
    Returns `[N]` f32. Computed in float64.
    """
    r = np.asarray(rewards, dtype=np.float64)
    ids = np.asarray(group_ids)
    if r.ndim != 1 or ids.shape != r.shape:
        raise ValueError(f"rewards and group_ids must both be [N]; got shapes {r.shape} and "
                         f"{ids.shape}")
    if r.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"group_ids must be integers, got dtype {ids.dtype}")
    bad = np.flatnonzero(~np.isfinite(r))
    if bad.size:
        raise ValueError(f"rewards must be finite; row {bad[0]} is {r[bad[0]]}")
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if r.size == 0:
        return np.zeros((0,), np.float32)
    _, g = np.unique(ids, return_inverse=True)
    count = np.bincount(g).astype(np.float64)
    mean = np.bincount(g, weights=r) / count
    centered = r - mean[g]
    if scale_by_std:
        std = np.sqrt(np.bincount(g, weights=centered**2) / count)
        centered = centered / (std[g] + eps)
    lo = np.full(count.shape, np.inf)
    hi = np.full(count.shape, -np.inf)
    np.minimum.at(lo, g, r)
    np.maximum.at(hi, g, r)
    return np.where((lo == hi)[g], 0.0, centered).astype(np.float32)


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def attacker_group_ids(num_goals: int, attacks_per_goal: int) -> np.ndarray:
    """`[G * A]` int32 group id of each attacker row: the goal index (row = g * A + a).

    The attacks written for one goal are compared with each other."""
    _check_counts(num_goals=num_goals, attacks_per_goal=attacks_per_goal)
    return np.repeat(np.arange(num_goals, dtype=np.int32), attacks_per_goal)
