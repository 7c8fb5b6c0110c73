"""Reward assembly, the one place a step's rewards are made: the defender is rewarded for
declining harmful requests with real (non-degenerate) text and for answering benign ones; the
attacker for valid, on-intent attacks the defender complied with; then group advantages.

Host side, NumPy. Row layout (see `ssp_jax.selfplay`): G goals x A attacks (attacker rows
`g * A + a`); defender rows: fresh `(g * A + a) * R + r`, then R per replayed item, then R per
benign prompt. Rules:
- judged rows: `r_att = clip((S - 1) / 4, 0, 1)`, `r_def = 1 - r_att` (zero-sum);
- a degenerate defender response (loop, symbols, empty) earns the defender no more than a
  compliant answer: `r_def = 0`, `r_att = 1`;
- an attack's reward is the mean over its judged responses; an invalid attack (malformed,
  the attacker declining, off-intent) gets `invalid_attack_penalty` instead (below 0 by
  default: declining costs more than failing);
- benign rows: 1 for answering, 0 for refusing or degenerate text, whatever the harm judge;
- excluded rows (the judge failed) and attacks with no judged response that are valid get no
  reward, no advantage and no loss weight;
- direct slots (the defender got the goal itself, not the attacker's sample): the attacker row
  gets no advantage and no loss weight and stays out of its group's baseline; the defender
  rows are judged and rewarded as usual;
- with `drop_zero_variance`, groups whose kept rewards are all equal get weight 0 too (DAPO's
  filter; their advantage is 0 already, the weight keeps them out of the token average).
  `informative_goals` ranks goals by the rows that carry signal, for dynamic sampling (roll
  out more goals than the batch holds, train on the most informative).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ssp_jax.rl import advantages as adv_lib
from ssp_jax.rl import rewards as reward_lib
from ssp_jax.rl.batch import TrainBatch, pack_groups
from ssp_jax.rl.episode import Episode
from ssp_jax.rollout.sampler import bucket_length
from ssp_jax.sections import SelfPlaySection, StepLayout


@dataclasses.dataclass(frozen=True)
class RewardInputs:
    """What the roles and checks produced in one step.

    scores: `[J]` f32 judge scores of the judged defender rows (fresh, then replayed).
    excluded: `[J]` bool, rows the judge failed on.
    degenerate: `[J]` bool, degenerate defender text.
    invalid_attack: `[G * A]` bool, attacks that are malformed, declined or off-intent.
    benign_failed: `[B * R]` bool, benign rows refused or degenerate.
    direct_attack: `[G * A]` bool, slots whose defender input was the goal verbatim (None: no
      such slot).
    """

    scores: np.ndarray
    excluded: np.ndarray
    degenerate: np.ndarray
    invalid_attack: np.ndarray
    benign_failed: np.ndarray
    direct_attack: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Assembled:
    """Rewards, advantages and loss-weight masks of both roles.

    r_att, att_adv, att_keep: `[G * A]` (f32, f32, bool); r_def, def_adv, def_keep: `[D]` over
    all defender rows (judged then benign; r_def NaN where excluded); att_informative,
    def_informative: the same shapes, bool, kept rows in groups whose kept rewards differ (the
    rows that carry a learning signal, before `drop_zero_variance`); zero_variance: share of
    kept rows per role (attacker, defender) that sit in groups with equal rewards.
    """

    r_att: np.ndarray
    att_adv: np.ndarray
    att_keep: np.ndarray
    r_def: np.ndarray
    def_adv: np.ndarray
    def_keep: np.ndarray
    att_informative: np.ndarray
    def_informative: np.ndarray
    zero_variance: tuple[float, float]


def defender_group_ids(n_fresh: int, n_replay: int, n_benign: int, attacks_per_goal: int,
                       responses_per_attack: int) -> np.ndarray:
    """`[D]` int group ids: per attack / replayed item / benign prompt when R > 1; with R = 1
    per goal, all replayed rows, all benign rows. The three kinds never share a group."""
    R, A = responses_per_attack, attacks_per_goal
    rows = np.arange(n_fresh + n_replay + n_benign)
    if R > 1:
        return rows // R
    goals = n_fresh // A
    return np.where(rows < n_fresh, rows // A,
                    np.where(rows < n_fresh + n_replay, goals, goals + 1))


def _zero_variance_rows(rewards: np.ndarray, groups: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """`[N]` bool: kept rows whose group's kept rewards are all equal."""
    out = np.zeros(len(rewards), bool)
    for g in np.unique(groups[keep]):
        rows = keep & (groups == g)
        out[rows] = np.ptp(rewards[rows]) == 0
    return out


def _advantages(rewards, groups, keep, scale_by_std):
    adv = np.zeros(len(rewards), np.float32)
    adv[keep] = adv_lib.group_advantages(rewards[keep], groups[keep], scale_by_std=scale_by_std)
    return adv


def assemble_rewards(x: RewardInputs, *, goals: int, attacks_per_goal: int,
                     responses_per_attack: int, invalid_attack_penalty: float,
                     scale_by_std: bool, drop_zero_variance: bool = False) -> Assembled:
    """The step's rewards and group advantages (module docstring has the rules)."""
    G, A, R = goals, attacks_per_goal, responses_per_attack
    n_fresh, n_judged, n_benign = G * A * R, len(x.scores), len(x.benign_failed)
    if len(x.invalid_attack) != G * A or n_judged < n_fresh or (n_judged - n_fresh) % R:
        raise ValueError(f"row counts do not fit G={G}, A={A}, R={R}: {len(x.invalid_attack)} "
                         f"attacks, {n_judged} judged rows")
    excluded = np.asarray(x.excluded, bool)
    scores = np.where(np.asarray(x.degenerate, bool), 5.0, np.asarray(x.scores, np.float64))
    r_att_rows, r_def_rows = reward_lib.attacker_defender_rewards(np.where(excluded, 1.0, scores))

    judged = ~excluded[:n_fresh].reshape(G * A, R)
    att_mean = (np.where(judged, r_att_rows[:n_fresh].reshape(G * A, R), 0.0).sum(axis=1)
                / np.maximum(judged.sum(axis=1), 1))
    invalid = np.asarray(x.invalid_attack, bool)
    r_att = reward_lib.apply_attacker_penalty(att_mean, invalid, invalid_attack_penalty)
    direct = (np.zeros(G * A, bool) if x.direct_attack is None
              else np.asarray(x.direct_attack, bool))
    att_keep = (judged.any(axis=1) | invalid) & ~direct
    att_groups = np.repeat(np.arange(G), A)

    r_def = np.concatenate([np.where(excluded, np.nan, r_def_rows),
                            reward_lib.benign_rewards(np.asarray(x.benign_failed, bool))])
    def_keep = np.concatenate([~excluded, np.ones(n_benign, bool)])
    def_groups = defender_group_ids(n_fresh, n_judged - n_fresh, n_benign, A, R)
    def_rewards = np.where(def_keep, r_def, 0.0).astype(np.float32)

    att_zero = _zero_variance_rows(r_att, att_groups, att_keep)
    def_zero = _zero_variance_rows(def_rewards, def_groups, def_keep)
    share = lambda zero, keep: float(zero.sum() / max(keep.sum(), 1))  # noqa: E731
    zero_variance = (share(att_zero, att_keep), share(def_zero, def_keep))
    att_adv = _advantages(r_att, att_groups, att_keep, scale_by_std)
    def_adv = _advantages(def_rewards, def_groups, def_keep, scale_by_std)
    att_informative, def_informative = att_keep & ~att_zero, def_keep & ~def_zero
    if drop_zero_variance:
        att_keep, def_keep = att_informative, def_informative
    return Assembled(r_att=r_att, att_adv=att_adv, att_keep=att_keep,
                     r_def=r_def.astype(np.float32), def_adv=def_adv, def_keep=def_keep,
                     att_informative=att_informative, def_informative=def_informative,
                     zero_variance=zero_variance)


def informative_goals(out: Assembled, *, goals: int, attacks_per_goal: int,
                      responses_per_attack: int, keep: int) -> np.ndarray:
    """The `keep` goals (sorted indices `[keep]` int) whose attacker and fresh defender rows
    carry the most signal (rows in groups with unequal rewards), ties to the earlier goal:
    DAPO-style dynamic sampling, which fills the batch with informative groups."""
    G, A, R = goals, attacks_per_goal, responses_per_attack
    if not 0 < keep <= G:
        raise ValueError(f"keep must be in [1, {G}], got {keep}")
    signal = (out.att_informative.reshape(G, A).sum(axis=1)
              + out.def_informative[:G * A * R].reshape(G, A * R).sum(axis=1))
    return np.sort(np.argsort(-signal, kind="stable")[:keep])


@dataclasses.dataclass
class StepBatches:
    """The update's input of one step and the rewards it was built from."""

    batches: tuple[TrainBatch, TrainBatch]  # attacker groups, defender groups
    rewards: Assembled
    defender_rows: np.ndarray  # [rows] int, the episode's defender rows in the batch


def episode_rewards(episode: Episode, shaping: SelfPlaySection) -> Assembled:
    """`assemble_rewards` on what `episode` played, with the `selfplay` section's shaping."""
    J = episode.num_judged
    A, R = episode.group_sizes
    return assemble_rewards(
        RewardInputs(scores=episode.scores, excluded=episode.excluded,
                     degenerate=episode.degenerate[:J], invalid_attack=episode.invalid,
                     benign_failed=(episode.refused | episode.degenerate)[J:],
                     direct_attack=episode.direct),
        goals=len(episode.goals), attacks_per_goal=A, responses_per_attack=R,
        invalid_attack_penalty=shaping.invalid_attack_penalty,
        scale_by_std=shaping.scale_by_std, drop_zero_variance=shaping.drop_zero_variance)


def _rows(groups: np.ndarray, size: int) -> np.ndarray:
    """`[len(groups) * size]` the rows of `groups` of `size` rows each."""
    return (groups[:, None] * size + np.arange(size)).ravel()


def build_batches(episode: Episode, layout: StepLayout,
                  shaping: SelfPlaySection, pad_id: int) -> StepBatches:
    """Loss weights, dynamic-sampling group selection and packing of `episode` into the
    layout's two batches. With more goals than `layout.goals` the batches hold the
    `layout.goals` goals whose groups carry the most signal (`informative_goals`). Prompts
    are padded to the length bucket of the longest (at most `shaping.max_prompt_tokens`),
    completions to the role's generation limit; rows the judge failed on get weight 0."""
    out = episode_rewards(episode, shaping)
    G, (A, R) = len(episode.goals), episode.group_sizes
    kept = (informative_goals(out, goals=G, attacks_per_goal=A, responses_per_attack=R,
                              keep=layout.goals)
            if G > layout.goals else np.arange(G))
    def_groups = np.concatenate([(kept[:, None] * A + np.arange(A)).ravel(),
                                 np.arange(G * A, len(episode.defender_prompts))])
    att_weight = 0.0 if shaping.static_attacks else shaping.attacker_weight
    def_weight = np.full(len(out.def_keep), shaping.defender_weight, np.float32)
    def_weight[episode.num_judged:] *= shaping.benign_weight  # [D]: benign rows last
    roles = (
        (episode.attacker_prompts, kept, episode.attacker, out.att_adv, out.att_keep,
         np.full(G * A, att_weight, np.float32), A, layout.num_groups[0],
         shaping.attacker_max_tokens),
        (episode.defender_prompts, def_groups, episode.defender, out.def_adv, out.def_keep,
         def_weight, R, layout.num_groups[1], shaping.defender_max_tokens))
    batches = tuple(
        pack_groups([prompts[i] for i in groups], [gen.tokens[i] for i in _rows(groups, size)],
                    [gen.logprobs[i] for i in _rows(groups, size)], adv[_rows(groups, size)],
                    np.where(keep[_rows(groups, size)], weight[_rows(groups, size)],
                             np.float32(0.0)),
                    group_size=size, num_groups=n_groups,
                    prompt_length=bucket_length(max(map(len, [prompts[i] for i in groups])),
                                                shaping.max_prompt_tokens),
                    completion_length=max_tokens, pad_id=pad_id)
        for prompts, groups, gen, adv, keep, weight, size, n_groups, max_tokens in roles)
    return StepBatches(batches=batches, rewards=out, defender_rows=_rows(def_groups, R))
