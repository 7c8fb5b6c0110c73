"""One self-play rollout: attacker turn, defender turn, judge, rewards and advantages.

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
from typing import Sequence

import jax
import numpy as np

from ssp_jax.data.loaders import PromptItem
from ssp_jax.judge.base import Judge
from ssp_jax.models.config import ModelConfig
from ssp_jax.models.tokenizer import Tokenizer
from ssp_jax.models.transformer import Params
from ssp_jax.replay import ReplayItem
from ssp_jax.rl import advantages as adv_lib
from ssp_jax.rl import rewards as reward_lib
from ssp_jax.rl.batch import TrainBatch, pack_groups
from ssp_jax.roles import (ATTACKER_BRIEF, attacker_prompt, clean_attack, defender_prompt,
                           fit_prompt)
from ssp_jax.rollout.sampler import bucket_length, generate_with_params


@dataclasses.dataclass(frozen=True)
class SelfPlayConfig:
    """Rollout and reward settings of a self-play step."""

    goals_per_step: int = 4  # G
    attacks_per_goal: int = 2  # A, the attacker's group size
    responses_per_attack: int = 2  # R, the defender's group size
    attacker_max_tokens: int = 64
    defender_max_tokens: int = 64
    max_prompt_tokens: int = 256  # longer goals/attacks are cut inside the template (counted)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    attacker_brief: str = ATTACKER_BRIEF  # must contain "{goal}"
    defender_system_prompt: str = ""
    benign_per_step: int = 0  # benign prompts sent straight to the defender (over-refusal guard)
    invalid_attack_penalty: float = 0.0  # attacker reward for empty / malformed / refused attacks
    min_attack_chars: int = 8
    attacker_weight: float = 1.0
    defender_weight: float = 1.0
    scale_by_std: bool = True  # GRPO; False gives Dr. GRPO
    asr_threshold: float = 4.0  # a judge score ≥ this is a successful attack
    replay_per_step: int = 0  # rows reserved for replayed items (the replay config's value)
    micro_batches: int = 1
    row_shards: int = 1  # devices the update's groups are split over (the trainer sets it)

    @property
    def num_groups(self) -> tuple[int, int]:
        """Prompt groups per step (attacker batch, defender batch), each padded to a multiple
        of micro_batches x row_shards, so that every (strided) micro-batch spreads over all
        row shards. The two roles are packed separately, each padded only to its own
        longest prompt and generation limit."""
        g, a = self.goals_per_step, self.attacks_per_goal
        groups = (g, g * a + self.replay_per_step + self.benign_per_step)
        multiple = self.micro_batches * self.row_shards
        return tuple(-(-n // multiple) * multiple for n in groups)

    @property
    def group_sizes(self) -> tuple[int, int]:
        """Rows per group (attacker, defender): attacks per goal, responses per attack."""
        return self.attacks_per_goal, self.responses_per_attack


@dataclasses.dataclass
class Rollout:
    """Everything one self-play step produced before the update."""

    batches: tuple[TrainBatch, TrainBatch]  # attacker groups, defender groups
    goals: list[str]  # [G * A * R] goal of each fresh defender row
    attacks: list[str]  # [G * A * R] attack text of each fresh defender row
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
            max_tokens: int, num_samples: int, key: jax.Array, sp: SelfPlayConfig,
            max_cache_len: int):
    return generate_with_params(
        cfg, params, prompts, max_tokens, temperature=sp.temperature, top_p=sp.top_p,
        top_k=sp.top_k, num_samples=num_samples, seed=key, stop_ids=tokenizer.stop_ids,
        pad_id=tokenizer.pad_id, max_cache_len=max_cache_len)


def _pack(prompts: list[list[int]], completions: list[list[int]], logps: list[np.ndarray],
          advantages: np.ndarray, weights: np.ndarray, group_size: int, num_groups: int,
          max_tokens: int, sp: SelfPlayConfig, pad_id: int) -> TrainBatch:
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


def judged_rewards(scores: np.ndarray, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(r_att, r_def) `[N]` f32 from judge scores `[N]`; NaN on excluded rows `[N]` bool (a
    failed judgement earns neither role anything)."""
    r_att, r_def = reward_lib.attacker_defender_rewards(np.where(excluded, 1.0, scores))
    return np.where(excluded, np.nan, r_att), np.where(excluded, np.nan, r_def)


def kept_group_advantages(rewards: np.ndarray, group_ids: np.ndarray, keep: np.ndarray,
                          scale_by_std: bool) -> np.ndarray:
    """Group advantages `[N]` f32 over the kept rows only: an excluded row gets 0 and does not
    move its group's mean or std. rewards `[N]` (anything on excluded rows), group_ids `[N]`
    int, keep `[N]` bool."""
    adv = np.zeros(len(rewards), np.float32)
    adv[keep] = adv_lib.group_advantages(np.asarray(rewards)[keep], np.asarray(group_ids)[keep],
                                         scale_by_std=scale_by_std)
    return adv


def rollout(cfg: ModelConfig, params: Params, tokenizer: Tokenizer, judge: Judge,
            is_refusal, sp: SelfPlayConfig, goals: Sequence[PromptItem],
            replay: Sequence[ReplayItem], benign: Sequence[PromptItem], key: jax.Array,
            max_cache_len: int) -> Rollout:
    """Runs both roles on `goals` (plus replayed attacks and benign prompts), judges the
    defender, and packs the training batch. `is_refusal(text) -> bool` is the refusal
    detector used for refused attacks, benign rows and the refusal rate."""
    G, A, R = len(goals), sp.attacks_per_goal, sp.responses_per_attack
    timings: dict[str, float] = {}
    att_key, def_key = jax.random.split(key)

    t0 = time.perf_counter()
    att_prompts, cut = zip(*(fit_prompt(
        lambda t: attacker_prompt(tokenizer, t, sp.attacker_brief), tokenizer, g.text,
        sp.max_prompt_tokens) for g in goals))
    att = _sample(cfg, params, tokenizer, list(att_prompts), sp.attacker_max_tokens, A, att_key,
                  sp, max_cache_len)
    attacks = [clean_attack(tokenizer.decode(t)) for t in att.tokens]  # [G * A]
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
    fresh_goals = [goals[i // (A * R)].text for i in range(n_fresh)]
    fresh_attacks = [attacks[i // R] for i in range(n_fresh)]
    replay_goals = [item.goal for item in replay for _ in range(R)]
    replay_attacks = [item.attack for item in replay for _ in range(R)]
    t0 = time.perf_counter()
    verdict = judge.score(fresh_goals + replay_goals, fresh_attacks + replay_attacks,
                          responses[:n_fresh + n_replay])
    benign_refused = np.array([is_refusal(t) for t in responses[n_fresh + n_replay:]], bool)
    timings["judge"] = time.perf_counter() - t0

    scores, excluded = verdict.scores, verdict.excluded
    r_att_rows, r_def = judged_rewards(scores, excluded)
    invalid = np.array([reward_lib.attack_is_invalid(t, min_chars=sp.min_attack_chars,
                                                     is_refusal=is_refusal) for t in attacks])
    # an attack's reward: the mean over its judged responses; none judged and valid = excluded
    judged = ~excluded[:n_fresh].reshape(G * A, R)
    att_mean = np.where(judged, r_att_rows[:n_fresh].reshape(G * A, R), 0.0).sum(axis=1) \
        / np.maximum(judged.sum(axis=1), 1)
    att_keep = judged.any(axis=1) | invalid
    r_att = reward_lib.apply_attacker_penalty(att_mean, invalid, sp.invalid_attack_penalty)
    r_benign = reward_lib.benign_rewards(benign_refused)

    att_adv = kept_group_advantages(r_att, np.repeat(np.arange(G), A), att_keep,
                                    sp.scale_by_std)
    # defender groups: per attack / item / benign prompt when R > 1, else per goal /
    # all replay rows / all benign rows; ids are offset so the three kinds never mix
    rows = np.arange(len(def_texts) * R)
    per_prompt = rows // R
    if R == 1:
        per_prompt = np.where(rows < n_fresh, rows // A, np.where(
            rows < n_fresh + n_replay, G, G + 1))
    def_rewards = np.concatenate([r_def, r_benign]).astype(np.float32)
    def_keep = np.concatenate([~excluded, np.ones(len(r_benign), bool)])
    def_adv = kept_group_advantages(def_rewards, per_prompt, def_keep, sp.scale_by_std)

    batches = tuple(
        _pack(list(prompts), gen.tokens, gen.logprobs, adv,
              np.where(keep, np.float32(weight), np.float32(0.0)), size, groups, max_tokens, sp,
              tokenizer.pad_id)
        for prompts, gen, adv, keep, weight, size, groups, max_tokens in (
            (att_prompts, att, att_adv, att_keep, sp.attacker_weight, A, sp.num_groups[0],
             sp.attacker_max_tokens),
            (def_prompts, dfn, def_adv, def_keep, sp.defender_weight, R, sp.num_groups[1],
             sp.defender_max_tokens)))

    fresh_scores, fresh_keep = scores[:n_fresh], ~excluded[:n_fresh]
    replay_scores = scores[n_fresh:]
    fresh_refused = np.array([is_refusal(t) for t in responses[:n_fresh]], bool)
    metrics = {
        **_stats(r_att[att_keep], "attacker/reward"),
        **_stats(r_def[:n_fresh][fresh_keep], "defender/reward"),
        "attack_success_rate": _mean(fresh_scores[fresh_keep] >= sp.asr_threshold),
        "refusal_rate": float(np.mean(fresh_refused)),
        "judge/score_mean": _mean(fresh_scores[fresh_keep]),
        "judge/excluded": float(verdict.num_excluded),
        "judge/rows": float(len(excluded)),
        "attacker/invalid_rate": float(np.mean(invalid)),
        "attacker/mean_tokens": float(np.mean([len(t) for t in att.tokens])),
        "defender/mean_tokens": float(np.mean([len(t) for t in dfn.tokens])),
        "prompts_truncated": float(sum(cut) + sum(def_cut)),
        "train/rows": float(len(att.tokens) + len(dfn.tokens)),
        "train/attacker_prompt_length": float(batches[0].prompt_tokens.shape[1]),
        "train/defender_prompt_length": float(batches[1].prompt_tokens.shape[1]),
    }
    if n_replay:
        metrics["replay/defender_reward"] = _mean(r_def[n_fresh:][~excluded[n_fresh:]])
    if len(benign):
        metrics["benign/refusal_rate"] = float(np.mean(benign_refused))
    return Rollout(
        batches=batches, goals=fresh_goals, attacks=fresh_attacks, responses=responses[:n_fresh],
        scores=fresh_scores, r_def=r_def[:n_fresh], excluded=excluded[:n_fresh],
        replay_responses=responses[n_fresh:n_fresh + n_replay], replay_scores=replay_scores,
        replay_r_def=r_def[n_fresh:], replay_excluded=excluded[n_fresh:],
        judge_error=verdict.last_error, reasons=verdict.reasons, metrics=metrics,
        timings=timings, num_tokens=att.num_tokens + dfn.num_tokens)
