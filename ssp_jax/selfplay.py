"""The self-play step's play: attacker turn, defender turn, judge and text checks, as an
`rl.episode.Episode`; its metrics (`rollout_metrics`). Rewards, advantages and batches come
from `ssp_jax.rl.assemble.build_batches`. The trainer's step reads
play -> build_batches -> update -> metrics. Row layout: `ssp_jax.rl.episode`.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple, Sequence

import jax
import numpy as np

from ssp_jax.data.loaders import PromptItem
from ssp_jax.game.roles import attacker_prompt, clean_attack, defender_prompt, fit_prompt
from ssp_jax.judge.attack_validity import AttackRefusalCheck
from ssp_jax.judge.base import Judge
from ssp_jax.judge.degenerate import DegenerateCheck
from ssp_jax.judge.intent import IntentCheck
from ssp_jax.judge.on_topic import OnTopicCheck
from ssp_jax.judge.refusal import either_refusal_detector, refusal_detector
from ssp_jax.models.config import ModelConfig
from ssp_jax.models.tokenizer import Tokenizer
from ssp_jax.models.transformer import Params
from ssp_jax.replay import ReplayItem
from ssp_jax.rl import rewards as reward_lib
from ssp_jax.rl.assemble import StepBatches
from ssp_jax.rl.episode import Episode
from ssp_jax.rollout.sampler import GenerationResult, generate_with_params
from ssp_jax.sections import SelfPlaySection


class Policy(NamedTuple):
    """The model that plays both roles."""

    cfg: ModelConfig
    params: Params
    tokenizer: Tokenizer
    max_cache_len: int  # KV-cache slots per row


class SamplingParams(NamedTuple):
    """How both roles sample."""

    temperature: float
    top_p: float
    top_k: int

    @classmethod
    def of(cls, sp: SelfPlaySection) -> "SamplingParams":
        return cls(sp.temperature, sp.top_p, sp.top_k)


def _sample(policy: Policy, prompts: list[list[int]], max_tokens: int, num_samples: int,
            key: jax.Array, sampling: SamplingParams, greedy_samples: int = 0
            ) -> GenerationResult:
    """`num_samples` rows per prompt, the first `greedy_samples` of them greedy decodes."""
    return generate_with_params(
        policy.cfg, policy.params, prompts, max_tokens, temperature=sampling.temperature,
        top_p=sampling.top_p, top_k=sampling.top_k, num_samples=num_samples,
        greedy_samples=greedy_samples, seed=key, stop_ids=policy.tokenizer.stop_ids,
        pad_id=policy.tokenizer.pad_id, max_cache_len=policy.max_cache_len)


def _stats(x: np.ndarray, prefix: str) -> dict[str, float]:
    if len(x) == 0:
        return {}
    return {f"{prefix}_mean": float(np.mean(x)), f"{prefix}_std": float(np.std(x))}


def _mean(x: np.ndarray) -> float:
    """Mean, NaN for no rows (every row excluded)."""
    return float(np.mean(x)) if len(x) else float("nan")


_STRICT_DECLINE = refusal_detector(strict=True)
_EITHER_DECLINE = either_refusal_detector()


def _withheld(detector: Callable[[str], bool],
              withholds: Callable[[Sequence[str]], np.ndarray] | None
              ) -> Callable[[Sequence[str]], np.ndarray]:
    """`[N]` answers -> `[N]` bool: `detector` and, when given, `withholds` both say the answer
    declines; the classifier runs only on the detector's declines."""

    def declines(answers: Sequence[str]) -> np.ndarray:
        found = np.array([detector(a) for a in answers], bool)
        if withholds is None or not found.any():
            return found
        out = found.copy()
        out[found] = np.asarray(withholds([a for a, f in zip(answers, found) if f]), bool)
        return out

    return declines


def decline_check(withholds: Callable[[Sequence[str]], np.ndarray] | None = None
                  ) -> Callable[[Sequence[str]], np.ndarray]:
    """The text check of a decline: `[N]` answers to harmful seeds -> `[N]` bool, the strict
    decline check (`refusal_detector(strict=True)`) and, when given, `withholds` (the
    withholding classifier, `ssp_jax.judge.withholding`) both saying so. `rl.assemble` also
    asks the judge to agree."""
    return _withheld(_STRICT_DECLINE, withholds)


def soft_decline_check(withholds: Callable[[Sequence[str]], np.ndarray] | None = None
                       ) -> Callable[[Sequence[str]], np.ndarray]:
    """The text check of a soft decline (an apology or a hedged decline): `[N]` answers ->
    `[N]` bool, the strict or the lenient check and, when given, `withholds` both saying so.
    A superset of `decline_check(withholds)`; `rl.assemble` also asks the judge to agree."""
    return _withheld(_EITHER_DECLINE, withholds)


class PlayChecks(NamedTuple):
    """Host-side text checks `play()` runs besides the judge."""

    # the defender declines, by the strict or the lenient check (benign rows, refusal rates)
    is_refusal: Callable[[str], bool]
    # [N] answers to harmful seeds -> [N] bool, those in the decline tier's text check
    declines: Callable[[Sequence[str]], np.ndarray]
    # [N] answers to harmful seeds -> [N] bool, those in the soft decline tier's text check
    soft_declines: Callable[[Sequence[str]], np.ndarray]
    attack_refusal: Callable[[str], bool]  # the attacker declines its brief
    degenerate: Callable[[str], bool]  # loops, symbol strings, word salad, empty text
    intent: IntentCheck | None  # off-intent attacks (None: not checked)
    on_topic: OnTopicCheck | None  # benign answers on topic (None: every answer counts)


def _read_once(withholds: Callable[[Sequence[str]], np.ndarray]
               ) -> Callable[[Sequence[str]], np.ndarray]:
    """`withholds` that reads each distinct answer once, and keeps the last call's verdicts for
    the next call: `play()` asks the decline tier and then the soft decline tier, whose
    answers include the first tier's."""
    last: dict[str, bool] = {}

    def cached(answers: Sequence[str]) -> np.ndarray:
        nonlocal last
        new = [a for a in dict.fromkeys(answers) if a not in last]
        verdicts = dict(zip(new, np.asarray(withholds(new), bool).tolist())) if new else {}
        last = {a: last[a] if a in last else verdicts[a] for a in answers}
        return np.array([last[a] for a in answers], bool)

    return cached


def default_checks(intent: IntentCheck | None = None, on_topic: OnTopicCheck | None = None,
                   withholds: Callable[[Sequence[str]], np.ndarray] | None = None
                   ) -> PlayChecks:
    """The refusal detector (strict or lenient), `decline_check(withholds)`,
    `soft_decline_check(withholds)` (sharing one reading of each answer by `withholds`), the
    attacker-refusal check, the degenerate-text check, `intent` and `on_topic`."""
    withholds = None if withholds is None else _read_once(withholds)
    return PlayChecks(_EITHER_DECLINE, decline_check(withholds), soft_decline_check(withholds),
                      AttackRefusalCheck().is_refusal,
                      lambda t: DegenerateCheck().check(t).flag, intent, on_topic)


def benign_on_topic(prompts: Sequence[str], answers: Sequence[str],
                    check: OnTopicCheck | None) -> np.ndarray:
    """`[N]` bool: each benign answer addresses its prompt; all True without a check (then
    every answer that is not a decline counts as on-topic)."""
    if check is None or not answers:
        return np.ones(len(answers), bool)
    return np.asarray(check.on_topic(list(prompts), list(answers)), bool)


def attack_validity(goals: Sequence[str], attacks: Sequence[str], checks: PlayChecks,
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


class _Attacks(NamedTuple):
    prompts: list[list[int]]  # [G]
    generation: GenerationResult  # [G * A]
    samples: list[str]  # [G * A] cleaned
    direct: np.ndarray  # [G * A] bool
    truncated: int


def _attack(policy: Policy, sp: SelfPlaySection, goals: Sequence[str],
            key: jax.Array) -> _Attacks:
    """The attacker's turn: A samples per goal; the first direct slots carry the goal."""
    tok, A = policy.tokenizer, sp.attacks_per_goal
    prompts, cut = zip(*(fit_prompt(lambda t: attacker_prompt(tok, t, sp.attacker_brief), tok,
                                    g, sp.max_prompt_tokens) for g in goals))
    gen = _sample(policy, list(prompts), sp.attacker_max_tokens, A, key, SamplingParams.of(sp))
    samples = [clean_attack(tok.decode(t)) for t in gen.tokens]
    direct = np.arange(len(goals) * A) % A < (A if sp.static_attacks
                                              else sp.direct_attacks_per_goal)
    return _Attacks(list(prompts), gen, samples, direct, sum(cut))


def play(policy: Policy, judge: Judge, checks: PlayChecks, sp: SelfPlaySection,
         goals: Sequence[PromptItem], replay: Sequence[ReplayItem],
         benign: Sequence[PromptItem], key: jax.Array) -> Episode:
    """Runs both roles on `goals` (plus replayed attacks and benign prompts), judges the
    defender and runs `checks`. With `sp.static_attacks` the defender gets each goal verbatim
    (the attacker is still sampled: same compute); with `sp.direct_attacks_per_goal = k` only
    the first k attack slots of each goal do; with `sp.greedy_responses = k` the first k of
    each prompt's R defender answers are greedy decodes. Every goal given is played (dynamic
    sampling picks the batch's goals later, in `build_batches`)."""
    R, timings = sp.responses_per_attack, {}
    att_key, def_key = jax.random.split(key)
    texts = [g.text for g in goals]
    t0 = time.perf_counter()
    att = _attack(policy, sp, texts, att_key)
    slot_goals = [g for g in texts for _ in range(sp.attacks_per_goal)]
    attacks = [g if d else a for g, a, d in zip(slot_goals, att.samples, att.direct)]
    timings["attacker_rollout"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tok = policy.tokenizer
    def_prompts, def_cut = zip(*(fit_prompt(
        lambda t: defender_prompt(tok, t, sp.defender_system_prompt), tok, text,
        sp.max_prompt_tokens)
        for text in attacks + [item.attack for item in replay] + [b.text for b in benign]))
    dfn = _sample(policy, list(def_prompts), sp.defender_max_tokens, R, def_key,
                  SamplingParams.of(sp), sp.greedy_responses)
    responses = [tok.decode(t).strip() for t in dfn.tokens]
    timings["defender_rollout"] = time.perf_counter() - t0

    n_fresh = len(attacks) * R
    n_judged = n_fresh + len(replay) * R
    t0 = time.perf_counter()
    verdict = judge.score(
        [g for g in slot_goals for _ in range(R)] + [i.goal for i in replay for _ in range(R)],
        [a for a in attacks for _ in range(R)] + [i.attack for i in replay for _ in range(R)],
        responses[:n_judged])
    timings["judge"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    refused = np.array([checks.is_refusal(t) for t in responses], bool)  # [D]
    declined = np.asarray(checks.declines(responses[:n_judged]), bool)  # [J]
    soft_declined = np.asarray(checks.soft_declines(responses[:n_judged]), bool)  # [J]
    degenerate = np.array([checks.degenerate(t) for t in responses], bool)  # [D]
    on_topic = benign_on_topic([b.text for b in benign for _ in range(R)],
                               responses[n_judged:], checks.on_topic)  # [B * R]
    validity = attack_validity(slot_goals, att.samples, checks, sp.min_attack_chars)
    timings["checks"] = time.perf_counter() - t0
    return Episode(
        goals=texts, group_sizes=(sp.attacks_per_goal, R), attacker_prompts=att.prompts,
        attacker=att.generation, attacker_samples=att.samples, direct=att.direct,
        defender_prompts=list(def_prompts), defender=dfn, responses=responses,
        num_replayed=len(replay), num_benign=len(benign), scores=verdict.scores,
        excluded=verdict.excluded, num_excluded=verdict.num_excluded,
        judge_error=verdict.last_error, reasons=verdict.reasons, refused=refused,
        declined=declined, soft_declined=soft_declined, degenerate=degenerate, on_topic=on_topic,
        on_topic_checked=checks.on_topic is not None, validity=validity,
        attacker_degenerate=np.array([checks.degenerate(a) for a in att.samples], bool),
        intent_checked=checks.intent is not None,
        prompts_truncated=att.truncated + sum(def_cut), timings=timings)


def _reward_metrics(episode: Episode, built: StepBatches, asr_threshold: float
                    ) -> dict[str, float]:
    """Rewards, attack success and the judge's coverage of the fresh rows."""
    out, n_fresh = built.rewards, episode.num_fresh
    fresh_scores, fresh_keep = episode.scores[:n_fresh], ~episode.excluded[:n_fresh]
    r_def = out.r_def[:n_fresh]
    declines = reward_lib.harmful_declines(fresh_scores, episode.declined[:n_fresh])
    soft = reward_lib.harmful_soft_declines(fresh_scores, episode.soft_declined[:n_fresh])
    def_rows = built.defender_rows
    return {
        **_stats(out.r_att[out.att_keep | episode.invalid], "attacker/reward"),
        **_stats(r_def[~np.isnan(r_def)], "defender/reward"),
        # fresh answers in the decline tier: the judge and the decline check agree
        "defender/decline_rate": _mean(declines[fresh_keep]),
        # ... in the soft decline tier (an apology or hedged decline the judge agrees with)
        "defender/soft_decline_rate": _mean((soft & ~declines)[fresh_keep]),
        "attack_success_rate": _mean(fresh_scores[fresh_keep] >= asr_threshold),
        "refusal_rate": float(np.mean(episode.refused[:n_fresh])),
        "refusal/fresh_rate": float(np.mean(episode.refused[:n_fresh])),
        "judge/score_mean": _mean(fresh_scores[fresh_keep]),
        "judge/excluded": float(episode.num_excluded),
        "judge/rows": float(len(episode.excluded)),
        "train/zero_variance_share_attacker": out.zero_variance[0],
        "train/zero_variance_share_defender": out.zero_variance[1],
        # in the trained batch (differs from the line above only with dynamic sampling)
        "train/zero_variance_share_defender_batch": 1.0 - float(
            out.def_informative[def_rows].sum() / max((~np.isnan(out.r_def[def_rows])).sum(),
                                                      1)),
    }


def _text_metrics(episode: Episode, built: StepBatches) -> dict[str, float]:
    """Attack checks, degenerate text, lengths and batch shapes."""
    validity, J = episode.validity, episode.num_judged
    att, dfn = episode.attacker, episode.defender
    return {
        "attacker/invalid_rate": float(np.mean(validity["invalid"])),
        "attacker/refusal_rate": float(np.mean(validity["refused"])),
        "attacker/malformed_rate": float(np.mean(validity["malformed"])),
        "attacker/off_intent_rate": float(np.mean(validity["off_intent"])),
        "attacker/degenerate_rate": float(np.mean(episode.attacker_degenerate)),
        "defender/degenerate_rate": float(np.mean(episode.degenerate[:J])),
        "attacker/mean_tokens": float(np.mean([len(t) for t in att.tokens])),
        "defender/mean_tokens": float(np.mean([len(t) for t in dfn.tokens])),
        "prompts_truncated": float(episode.prompts_truncated),
        "train/rows": float(len(att.tokens) + len(dfn.tokens)),
        "train/attacker_prompt_length": float(built.batches[0].prompt_tokens.shape[1]),
        "train/defender_prompt_length": float(built.batches[1].prompt_tokens.shape[1]),
    }


def rollout_metrics(episode: Episode, built: StepBatches, sp: SelfPlaySection
                    ) -> dict[str, float]:
    """The step's metrics before the update: rewards, attack success, the defender's tiers
    (decline rate; benign refusal, on- and off-topic rates), refusal rates by kind of prompt,
    attack checks and batch shapes."""
    metrics = {**_reward_metrics(episode, built, sp.asr_threshold),
               **_text_metrics(episode, built)}
    n_fresh, J, refused = episode.num_fresh, episode.num_judged, episode.refused
    if episode.intent_checked:
        metrics["attacker/intent_similarity_mean"] = float(
            np.mean(episode.validity["similarity"]))
    direct = episode.direct
    if direct.any() and not direct.all():  # the defender on the goals themselves vs attacks
        direct_rows = np.repeat(direct, episode.group_sizes[1])
        metrics["refusal/direct_rate"] = float(np.mean(refused[:n_fresh][direct_rows]))
        metrics["refusal/attack_rate"] = float(np.mean(refused[:n_fresh][~direct_rows]))
    if episode.num_replayed:
        r_def = built.rewards.r_def[n_fresh:J]
        metrics["replay/defender_reward"] = _mean(r_def[~np.isnan(r_def)])
        metrics["refusal/replay_rate"] = float(np.mean(refused[n_fresh:J]))
    if episode.num_benign:
        metrics.update(_benign_metrics(episode, built.rewards.r_def[J:]))
    return metrics


def _benign_metrics(episode: Episode, r_def: np.ndarray) -> dict[str, float]:
    """The benign rows' tiers: refusals (strict or lenient), degenerate text, and with the
    on-topic check the answers on and off the prompt's topic. `r_def`: `[B * R]` rewards."""
    J = episode.num_judged
    refused, degenerate = episode.refused[J:], episode.degenerate[J:]
    metrics = {"benign/reward_mean": float(np.mean(r_def)),
               "benign/refusal_rate": float(np.mean(refused)),
               "benign/degenerate_rate": float(np.mean(degenerate))}
    if episode.on_topic_checked:
        answered = ~refused & ~degenerate
        metrics["benign/on_topic_rate"] = float(np.mean(answered & episode.on_topic))
        metrics["benign/off_topic_rate"] = float(np.mean(answered & ~episode.on_topic))
    return metrics
