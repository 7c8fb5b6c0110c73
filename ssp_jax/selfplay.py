"""One self-play rollout: attacker turn, defender turn, judge and checks; rewards and advantages
come from `ssp_jax.rl.assemble`.

Row layout of a step (goal-major, G goals, A attacks per goal, R responses per attack):
  attacker rows  i = g * A + a                          (G * A rows)
  defender rows  ((g * A) + a) * R + r for fresh attacks, then R rows per replayed item,
                 then R rows per benign prompt.
The training batches are grouped (`rl.batch`): the attacker batch has one group of A rows per
goal, the defender batch one group of R rows per attack prompt (fresh, replayed or benign).
The output is those batches plus texts and metrics for logging and the replay pool.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, NamedTuple, Sequence

import jax
import numpy as np

from ssp_jax.data.loaders import PromptItem
from ssp_jax.judge.attack_validity import AttackRefusalCheck
from ssp_jax.judge.base import Judge
from ssp_jax.judge.degenerate import DegenerateCheck
from ssp_jax.judge.intent import IntentCheck
from ssp_jax.judge.refusal import RefusalJudge
from ssp_jax.models.config import ModelConfig
from ssp_jax.models.tokenizer import Tokenizer
from ssp_jax.models.transformer import Params
from ssp_jax.replay import ReplayItem
from ssp_jax.rl import rewards as reward_lib
from ssp_jax.rl.assemble import RewardInputs, assemble_rewards, informative_goals
from ssp_jax.rl.batch import TrainBatch, pack_groups
from ssp_jax.game.roles import (attacker_prompt, clean_attack, defender_prompt,
                           fit_prompt)
from ssp_jax.rollout.sampler import bucket_length, generate_with_params
from ssp_jax.sections import SelfPlaySection, StepLayout


@dataclasses.dataclass
class Rollout:
    """Everything one self-play step produced before the update."""

    batches: tuple[TrainBatch, TrainBatch]  # attacker groups, defender groups
    goals: list[str]  # [G * A * R] goal of each fresh defender row
    attacks: list[str]  # [G * A * R] attack text of each fresh defender row
    attacker_samples: list[str]  # [G * A] the attacker's cleaned samples (direct slots too)
    responses: list[str]  # [G * A * R]
    scores: np.ndarray  # [G * A * R] judge scores of fresh rows (NaN where excluded)
    r_def: np.ndarray  # [G * A * R] (NaN where excluded)
    excluded: np.ndarray  # [G * A * R] bool, fresh rows the judge failed on
    replay_responses: list[str]  # [k * R]
    replay_scores: np.ndarray  # [k * R]
    replay_r_def: np.ndarray  # [k * R]
    replay_excluded: np.ndarray  # [k * R] bool
    judge_error: str | None  # the judge's last error this step (None when no row failed)
    reasons: list[str]
    metrics: dict[str, float]
    timings: dict[str, float]
    num_tokens: int  # tokens sampled this step (both roles)


def _sample(cfg: ModelConfig, params: Params, tokenizer: Tokenizer, prompts: list[list[int]],
            max_tokens: int, num_samples: int, key: jax.Array, sp: SelfPlaySection,
            max_cache_len: int):
    return generate_with_params(
        cfg, params, prompts, max_tokens, temperature=sp.temperature, top_p=sp.top_p,
        top_k=sp.top_k, num_samples=num_samples, seed=key, stop_ids=tokenizer.stop_ids,
        pad_id=tokenizer.pad_id, max_cache_len=max_cache_len)


def _pack(prompts: list[list[int]], completions: list[list[int]], logps: list[np.ndarray],
          advantages: np.ndarray, weights: np.ndarray, group_size: int, num_groups: int,
          max_tokens: int, sp: SelfPlaySection, pad_id: int) -> TrainBatch:
    """One role's groups: prompts padded to the length bucket of the longest, completions to
    the role's generation limit (a fixed shape, so it adds no compilations). weights: `[N]`
    f32 row loss weights (0 for rows the judge failed on)."""
    return pack_groups(prompts, completions, logps, advantages, weights, group_size=group_size,
                       num_groups=num_groups,
                       prompt_length=bucket_length(max(map(len, prompts)), sp.max_prompt_tokens),
                       completion_length=max_tokens, pad_id=pad_id)


def _stats(x: np.ndarray, prefix: str) -> dict[str, float]:
    if len(x) == 0:
        return {}
    return {f"{prefix}_mean": float(np.mean(x)), f"{prefix}_std": float(np.std(x))}


def _mean(x: np.ndarray) -> float:
    """Mean, NaN for no rows (every row excluded)."""
    return float(np.mean(x)) if len(x) else float("nan")


class RolloutChecks(NamedTuple):
    """Host-side text checks a rollout runs besides the judge."""

    is_refusal: Callable[[str], bool]  # the defender declines (benign rows, refusal rates)
    attack_refusal: Callable[[str], bool]  # the attacker declines its brief
    degenerate: Callable[[str], bool]  # loops, symbol strings, empty text
    intent: IntentCheck | None  # off-intent attacks (None: not checked)


def default_checks(intent: IntentCheck | None = None) -> RolloutChecks:
    """The refusal detector, the attacker-refusal check, the degenerate-text check and
    `intent`."""
    return RolloutChecks(RefusalJudge().is_refusal, AttackRefusalCheck().is_refusal,
                         lambda t: DegenerateCheck().check(t).flag, intent)


def attack_validity(goals: Sequence[str], attacks: Sequence[str], checks: RolloutChecks,
                    min_chars: int) -> dict[str, np.ndarray]:
    """Per attack `[N]`: `malformed` (empty, special tokens, brief echo), `refused` (the
    attacker declined), `off_intent` (below the intent threshold; a verbatim goal is on
    intent), `similarity` (f32, NaN without an intent check) and their union `invalid`."""
    malformed = np.array([reward_lib.attack_is_invalid(a, min_chars=min_chars) for a in attacks],
                         bool)
    refused = np.array([checks.attack_refusal(a) for a in attacks], bool)
    verbatim = np.array([a.strip() == g.strip() for g, a in zip(goals, attacks)], bool)
    if checks.intent is not None and len(attacks):
        similarity = checks.intent.scores(list(goals), list(attacks))
        off_intent = (similarity < checks.intent.threshold) & ~verbatim
    else:
        similarity = np.full(len(attacks), np.nan, np.float32)
        off_intent = np.zeros(len(attacks), bool)
    return {"malformed": malformed, "refused": refused, "off_intent": off_intent,
            "similarity": similarity, "invalid": malformed | refused | off_intent}


def rollout(cfg: ModelConfig, params: Params, tokenizer: Tokenizer, judge: Judge,
            checks: RolloutChecks, sp: SelfPlaySection, goals: Sequence[PromptItem],
            replay: Sequence[ReplayItem], benign: Sequence[PromptItem], key: jax.Array,
            max_cache_len: int, *, layout: StepLayout) -> Rollout:
    """Runs both roles on `goals` (plus replayed attacks and benign prompts), judges the
    defender, runs `checks`, and packs the batches with `rl.assemble.assemble_rewards`. With
    `sp.static_attacks` the defender gets each goal verbatim and the attacker rows weight 0
    (the attacker is still sampled: same compute); with `sp.direct_attacks_per_goal = k` only
    the first k attack slots of each goal do (the attacker rows there get no advantage, the
    others play as usual). With more goals than `sp.goals_per_step`
    (dynamic sampling) all are rolled out, judged and counted in the metrics, and the batches
    hold the `goals_per_step` goals whose groups carry the most signal
    (`rl.assemble.informative_goals`), padded to `layout.num_groups` groups per role."""
    G, A, R = len(goals), sp.attacks_per_goal, sp.responses_per_attack
    timings: dict[str, float] = {}
    att_key, def_key = jax.random.split(key)

    t0 = time.perf_counter()
    att_prompts, cut = zip(*(fit_prompt(
        lambda t: attacker_prompt(tokenizer, t, sp.attacker_brief), tokenizer, g.text,
        sp.max_prompt_tokens) for g in goals))
    att = _sample(cfg, params, tokenizer, list(att_prompts), sp.attacker_max_tokens, A, att_key,
                  sp, max_cache_len)
    attack_goals = [goals[i // A].text for i in range(G * A)]
    sampled = [clean_attack(tokenizer.decode(t)) for t in att.tokens]  # [G * A]
    # [G * A] bool: slots whose defender input is the goal itself
    direct = np.arange(G * A) % A < (A if sp.static_attacks else sp.direct_attacks_per_goal)
    attacks = [g if d else a for g, a, d in zip(attack_goals, sampled, direct)]
    timings["attacker_rollout"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    def_texts = attacks + [item.attack for item in replay] + [b.text for b in benign]
    def_prompts, def_cut = zip(*(fit_prompt(
        lambda t: defender_prompt(tokenizer, t, sp.defender_system_prompt), tokenizer, text,
        sp.max_prompt_tokens) for text in def_texts))
    dfn = _sample(cfg, params, tokenizer, list(def_prompts), sp.defender_max_tokens, R, def_key,
                  sp, max_cache_len)
    responses = [tokenizer.decode(t).strip() for t in dfn.tokens]
    timings["defender_rollout"] = time.perf_counter() - t0

    n_fresh, n_replay = G * A * R, len(replay) * R
    n_judged = n_fresh + n_replay
    fresh_goals = [goals[i // (A * R)].text for i in range(n_fresh)]
    fresh_attacks = [attacks[i // R] for i in range(n_fresh)]
    replay_goals = [item.goal for item in replay for _ in range(R)]
    replay_attacks = [item.attack for item in replay for _ in range(R)]
    t0 = time.perf_counter()
    verdict = judge.score(fresh_goals + replay_goals, fresh_attacks + replay_attacks,
                          responses[:n_judged])
    timings["judge"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    refused = np.array([checks.is_refusal(t) for t in responses], bool)  # [D]
    degenerate = np.array([checks.degenerate(t) for t in responses], bool)  # [D]
    validity = attack_validity(attack_goals, sampled, checks, sp.min_attack_chars)
    invalid = validity["invalid"] & ~direct  # a direct slot's sample is not played
    timings["checks"] = time.perf_counter() - t0

    scores, excluded = verdict.scores, verdict.excluded
    out = assemble_rewards(
        RewardInputs(scores=scores, excluded=excluded, degenerate=degenerate[:n_judged],
                     invalid_attack=invalid,
                     benign_failed=(refused | degenerate)[n_judged:], direct_attack=direct),
        goals=G, attacks_per_goal=A, responses_per_attack=R,
        invalid_attack_penalty=sp.invalid_attack_penalty, scale_by_std=sp.scale_by_std,
        drop_zero_variance=sp.drop_zero_variance)
    att_weight = 0.0 if sp.static_attacks else sp.attacker_weight
    kept = (informative_goals(out, goals=G, attacks_per_goal=A, responses_per_attack=R,
                              keep=sp.goals_per_step)
            if G > sp.goals_per_step else np.arange(G))  # dynamic sampling: the batch's goals
    att_groups = kept
    def_groups = np.concatenate([(kept[:, None] * A + np.arange(A)).ravel(),
                                 np.arange(G * A, len(def_prompts))])
    rows = lambda groups, size: (groups[:, None] * size + np.arange(size)).ravel()  # noqa: E731
    att_rows, def_rows = rows(att_groups, A), rows(def_groups, R)
    def_weight = np.full(len(out.def_keep), sp.defender_weight, np.float32)
    def_weight[n_judged:] *= sp.benign_weight  # [D]: benign rows last
    batches = tuple(
        _pack([prompts[i] for i in groups], [gen.tokens[i] for i in idx],
              [gen.logprobs[i] for i in idx], adv[idx],
              np.where(keep[idx], weight[idx], np.float32(0.0)), size, n_groups,
              max_tokens, sp, tokenizer.pad_id)
        for prompts, groups, idx, gen, adv, keep, weight, size, n_groups, max_tokens in (
            (att_prompts, att_groups, att_rows, att, out.att_adv, out.att_keep,
             np.full(G * A, att_weight, np.float32), A, layout.num_groups[0],
             sp.attacker_max_tokens),
            (def_prompts, def_groups, def_rows, dfn, out.def_adv, out.def_keep, def_weight, R,
             layout.num_groups[1], sp.defender_max_tokens)))

    r_def = out.r_def[:n_judged]
    fresh_scores, fresh_keep = scores[:n_fresh], ~excluded[:n_fresh]
    att_scored = out.att_keep | invalid
    metrics = {
        **_stats(out.r_att[att_scored], "attacker/reward"),
        **_stats(r_def[:n_fresh][fresh_keep], "defender/reward"),
        "attack_success_rate": _mean(fresh_scores[fresh_keep] >= sp.asr_threshold),
        "refusal_rate": float(np.mean(refused[:n_fresh])),
        "refusal/fresh_rate": float(np.mean(refused[:n_fresh])),
        "judge/score_mean": _mean(fresh_scores[fresh_keep]),
        "judge/excluded": float(verdict.num_excluded),
        "judge/rows": float(len(excluded)),
        "attacker/invalid_rate": float(np.mean(validity["invalid"])),
        "attacker/refusal_rate": float(np.mean(validity["refused"])),
        "attacker/malformed_rate": float(np.mean(validity["malformed"])),
        "attacker/off_intent_rate": float(np.mean(validity["off_intent"])),
        "attacker/degenerate_rate": float(np.mean([checks.degenerate(a) for a in sampled])),
        "defender/degenerate_rate": float(np.mean(degenerate[:n_judged])),
        "train/zero_variance_share_attacker": out.zero_variance[0],
        "train/zero_variance_share_defender": out.zero_variance[1],
        # in the trained batch (differs from the line above only with dynamic sampling)
        "train/zero_variance_share_defender_batch": 1.0 - float(
            out.def_informative[def_rows].sum() / max((~np.isnan(out.r_def[def_rows])).sum(), 1)),
        "attacker/mean_tokens": float(np.mean([len(t) for t in att.tokens])),
        "defender/mean_tokens": float(np.mean([len(t) for t in dfn.tokens])),
        "prompts_truncated": float(sum(cut) + sum(def_cut)),
        "train/rows": float(len(att.tokens) + len(dfn.tokens)),
        "train/attacker_prompt_length": float(batches[0].prompt_tokens.shape[1]),
        "train/defender_prompt_length": float(batches[1].prompt_tokens.shape[1]),
    }
    if checks.intent is not None:
        metrics["attacker/intent_similarity_mean"] = float(np.mean(validity["similarity"]))
    if direct.any() and not direct.all():  # the defender on the goals themselves vs attacks
        direct_rows = np.repeat(direct, R)
        metrics["refusal/direct_rate"] = float(np.mean(refused[:n_fresh][direct_rows]))
        metrics["refusal/attack_rate"] = float(np.mean(refused[:n_fresh][~direct_rows]))
    if n_replay:
        metrics["replay/defender_reward"] = _mean(r_def[n_fresh:][~excluded[n_fresh:]])
        metrics["refusal/replay_rate"] = float(np.mean(refused[n_fresh:n_judged]))
    if len(benign):
        metrics["benign/refusal_rate"] = float(np.mean(refused[n_judged:]))
        metrics["benign/degenerate_rate"] = float(np.mean(degenerate[n_judged:]))
    return Rollout(
        batches=batches, goals=fresh_goals, attacks=fresh_attacks, attacker_samples=sampled,
        responses=responses[:n_fresh],
        scores=fresh_scores, r_def=r_def[:n_fresh], excluded=excluded[:n_fresh],
        replay_responses=responses[n_fresh:n_judged], replay_scores=scores[n_fresh:],
        replay_r_def=r_def[n_fresh:], replay_excluded=excluded[n_fresh:],
        judge_error=verdict.last_error, reasons=verdict.reasons, metrics=metrics,
        timings=timings, num_tokens=att.num_tokens + dfn.num_tokens)
