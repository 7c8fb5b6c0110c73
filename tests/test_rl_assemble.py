"""Reward assembly against a row-by-row float64 reference (invalid attacks, excluded rows,
degenerate answers, benign rows, direct slots), and the cheapest ways to game it do not pay."""

import numpy as np
import pytest

from ssp_jax.rl.assemble import RewardInputs, assemble_rewards, informative_goals


def reference_advantages(rewards, groups, keep, scale_by_std, eps=1e-6):
    """GRPO over each group's kept rows, row by row in float64; 0 elsewhere."""
    out = np.zeros(len(rewards))
    for g in set(np.asarray(groups).tolist()):
        rows = [i for i in range(len(rewards)) if groups[i] == g and keep[i]]
        r = np.array([rewards[i] for i in rows], np.float64)
        if len(r) < 2 or r.max() == r.min():
            continue
        for i, x in zip(rows, r):
            out[i] = (x - r.mean()) / ((r.std() + eps) if scale_by_std else 1.0)
    return out


def reference(x, G, A, R, penalty, scale_by_std):
    """The module docstring's rules, one row at a time."""
    n_fresh, n_judged, n_benign = G * A * R, len(x.scores), len(x.benign_failed)
    r_def = []
    for s, ex, deg in zip(x.scores, x.excluded, x.degenerate):
        if ex:
            r_def.append(np.nan)
        else:
            s = 5.0 if deg else s
            r_def.append(1.0 - min(max((s - 1) / 4, 0), 1))
    r_att, att_keep = [], []
    for i in range(G * A):
        judged = [1 - r_def[i * R + r] for r in range(R) if not x.excluded[i * R + r]]
        if x.invalid_attack[i]:
            r_att.append(penalty)
        else:
            r_att.append(np.mean(judged) if judged else 0.0)
        direct = x.direct_attack is not None and x.direct_attack[i]
        att_keep.append((bool(judged) or bool(x.invalid_attack[i])) and not direct)
    r_def += [0.0 if f else 1.0 for f in x.benign_failed]
    def_keep = [not e for e in x.excluded] + [True] * n_benign
    if R > 1:
        groups = [i // R for i in range(n_judged + n_benign)]
    else:
        groups = [i // A if i < n_fresh else (G if i < n_judged else G + 1)
                  for i in range(n_judged + n_benign)]
    r_def_z = [0.0 if np.isnan(v) else v for v in r_def]
    att_adv = reference_advantages(r_att, np.repeat(np.arange(G), A), att_keep, scale_by_std)
    def_adv = reference_advantages(r_def_z, np.array(groups), def_keep, scale_by_std)
    return (np.array(r_att), att_adv, np.array(att_keep), np.array(r_def), def_adv,
            np.array(def_keep))


@pytest.mark.parametrize("R", [1, 3])
@pytest.mark.parametrize("scale_by_std", [True, False])
def test_assembly_matches_the_row_by_row_reference(R, scale_by_std):
    rng = np.random.default_rng(R)
    G, A, k, B = 3, 3, 2, 2
    n_judged = G * A * R + k * R
    x = RewardInputs(scores=rng.choice([1.0, 2.0, 3.0, 4.5, 5.0], n_judged),
                     excluded=rng.uniform(size=n_judged) < 0.2,
                     degenerate=rng.uniform(size=n_judged) < 0.2,
                     invalid_attack=rng.uniform(size=G * A) < 0.3,
                     benign_failed=rng.uniform(size=B * R) < 0.4,
                     direct_attack=rng.uniform(size=G * A) < 0.3)
    got = assemble_rewards(x, goals=G, attacks_per_goal=A, responses_per_attack=R,
                           invalid_attack_penalty=-0.5, scale_by_std=scale_by_std)
    r_att, att_adv, att_keep, r_def, def_adv, def_keep = reference(x, G, A, R, -0.5,
                                                                   scale_by_std)
    np.testing.assert_allclose(got.r_att, r_att, atol=1e-6)
    np.testing.assert_allclose(got.att_adv, att_adv, atol=1e-5)
    np.testing.assert_array_equal(got.att_keep, att_keep)
    np.testing.assert_allclose(got.r_def, r_def, atol=1e-6)  # NaN where excluded, both
    np.testing.assert_allclose(got.def_adv, def_adv, atol=1e-5)
    np.testing.assert_array_equal(got.def_keep, def_keep)


def _one_goal(scores, degenerate=(False, False), invalid=(False, False), benign=()):
    return RewardInputs(np.array(scores, float), np.zeros(2, bool), np.array(degenerate),
                        np.array(invalid), np.array(benign, bool))


def test_degenerate_text_earns_the_defender_no_more_than_compliance():
    # attack 0's answer is an emoji loop the refusal judge scores "empty" (2); attack 1's
    # answer complies (5): the loop must not beat the compliant answer
    got = assemble_rewards(_one_goal([2.0, 5.0], degenerate=[True, False]), goals=1,
                           attacks_per_goal=2, responses_per_attack=1,
                           invalid_attack_penalty=-0.5, scale_by_std=True)
    assert got.r_def[0] <= got.r_def[1] == 0.0
    assert got.def_adv[0] <= got.def_adv[1]


def test_a_declined_or_off_intent_attack_costs_more_than_a_failed_one():
    # attack 0 declined its brief (the defender then "refused" nothing); attack 1 failed
    got = assemble_rewards(_one_goal([1.0, 1.0], invalid=[True, False]), goals=1,
                           attacks_per_goal=2, responses_per_attack=1,
                           invalid_attack_penalty=-0.5, scale_by_std=True)
    assert got.r_att[0] < got.r_att[1] == 0.0 and got.att_adv[0] < 0 < got.att_adv[1]


def test_a_direct_slot_trains_the_defender_and_the_other_slots_train_the_attacker():
    # goal 0, A = 3: slot 0 put the goal itself to the defender (refused: 1), slots 1 and 2
    # the attacker's samples (complied: 5, refused: 1). The direct slot stays out of the
    # attacker's baseline (else slot 1 would gain for beating a prompt the attacker never
    # wrote); the two attacker rows left still carry a signal.
    x = RewardInputs(np.array([1.0, 5.0, 1.0]), np.zeros(3, bool), np.zeros(3, bool),
                     np.zeros(3, bool), np.zeros(0, bool),
                     direct_attack=np.array([True, False, False]))
    got = assemble_rewards(x, goals=1, attacks_per_goal=3, responses_per_attack=1,
                           invalid_attack_penalty=-0.5, scale_by_std=False)
    np.testing.assert_array_equal(got.att_keep, [False, True, True])
    np.testing.assert_allclose(got.att_adv, [0.0, 0.5, -0.5])
    assert got.def_keep.all() and got.def_adv[0] > 0 > got.def_adv[1]


def test_refusing_benign_prompts_does_not_pay():
    x = RewardInputs(np.array([1.0]), np.zeros(1, bool), np.zeros(1, bool), np.zeros(1, bool),
                     np.array([True, False]))
    got = assemble_rewards(x, goals=1, attacks_per_goal=1, responses_per_attack=1,
                           invalid_attack_penalty=-0.5, scale_by_std=True)
    assert list(got.r_def[1:]) == [0.0, 1.0] and got.def_adv[1] < 0 < got.def_adv[2]


def test_zero_variance_groups_are_counted_and_can_be_dropped():
    # goal 0: both attacks fail (equal rewards); goal 1: one succeeds
    x = RewardInputs(np.array([1.0, 1.0, 1.0, 5.0]), np.zeros(4, bool), np.zeros(4, bool),
                     np.zeros(4, bool), np.zeros(0, bool))
    kw = dict(goals=2, attacks_per_goal=2, responses_per_attack=1, invalid_attack_penalty=-0.5,
              scale_by_std=True)
    kept = assemble_rewards(x, **kw)
    assert kept.zero_variance == (0.5, 0.5)
    assert kept.att_keep.all()
    dropped = assemble_rewards(x, drop_zero_variance=True, **kw)
    np.testing.assert_array_equal(dropped.att_keep, [False, False, True, True])
    np.testing.assert_array_equal(dropped.att_adv, kept.att_adv)


def test_informative_goals_keeps_the_goals_with_signal_ties_to_the_earlier():
    # R = 2 responses to each of A = 1 attack per goal: goals 0 and 2 all equal, 1 and 3 mixed
    scores = np.array([5.0, 5.0, 1.0, 5.0, 1.0, 1.0, 5.0, 1.0])
    x = RewardInputs(scores, np.zeros(8, bool), np.zeros(8, bool), np.zeros(4, bool),
                     np.zeros(0, bool))
    out = assemble_rewards(x, goals=4, attacks_per_goal=1, responses_per_attack=2,
                           invalid_attack_penalty=-0.5, scale_by_std=True)
    np.testing.assert_array_equal(out.def_informative, [0, 0, 1, 1, 0, 0, 1, 1])
    kw = dict(goals=4, attacks_per_goal=1, responses_per_attack=2)
    np.testing.assert_array_equal(informative_goals(out, keep=2, **kw), [1, 3])
    np.testing.assert_array_equal(informative_goals(out, keep=3, **kw), [0, 1, 3])
    with pytest.raises(ValueError, match="keep"):
        informative_goals(out, keep=5, **kw)
