"""The Safety Self-Play training loop.

Per step: draw goals (a pure function of (data seed, step)), pick replay items by UCB, run
the attacker and defender rollouts, judge, compute rewards and advantages, apply one jitted
update to the shared parameters, feed the replay pool, log, and checkpoint. Restarting with
the same workdir resumes from the newest complete checkpoint. With `sft.warm_start_steps` > 0,
`train` first runs that many supervised updates (`sft.warm_start`) and the loop resumes from
their last checkpoint; with `rl.reference="warm_start"` the KL reference is then those updates'
weights (`workdir/reference`), not the loaded model.

Steps are numbered by the updates applied when they end: the first step is step 1, and
metrics.jsonl, samples.jsonl, eval.jsonl, the console and the checkpoint folders
(`checkpoints/N`, saved after step N) all use that number. A run of N steps ends at step N.
Random draws (goals, sampling keys) are keyed by the step's index, its number minus one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from tqdm import tqdm

from ssp_jax import sharding
from ssp_jax.checkpoint import Checkpointer, abstract_like, restore_from_path, restore_reference
from ssp_jax.config import to_json, validate
from ssp_jax.data.loaders import PromptItem
from ssp_jax.data.mixture import GoalMixture, from_config
from ssp_jax.data.twins import FormTwins
from ssp_jax.distributed import Preemption
from ssp_jax.cli import UserError
from ssp_jax.collapse import CollapseError, CollapseMonitor, default_limits
from ssp_jax.diversity import DiversityWindow
from ssp_jax.judge.intent import IntentCheck
from ssp_jax.judge.on_topic import OnTopicCheck
from ssp_jax.judge.base import Judge, JudgeFailed
from ssp_jax.judge.registry import JudgeModel, check_judge_cache, policy_judge
from ssp_jax.judge.withholding import load_withholding_check
from ssp_jax.metrics import LOG_FILES, MetricsWriter, read_metrics
from ssp_jax.models import load, lora
from ssp_jax.models.config import ModelConfig
from ssp_jax.models.sentence_encoder import SentenceEncoder, load_sentence_encoder
from ssp_jax.models.tokenizer import Tokenizer
from ssp_jax.models.transformer import Params
from ssp_jax.paths import PathLike, as_path
from ssp_jax.replay import ReplayPool
from ssp_jax.resume import REFERENCE_DIR, check_resume_config
from ssp_jax.game.rank_prompts import RankPrompts
from ssp_jax.game.roles import check_prompt_budget
from ssp_jax.rl.assemble import build_batches
from ssp_jax.rl.batch import TrainBatch
from ssp_jax.rl.rank import RankBatch, rank_batch_prompts
from ssp_jax.rl.episode import Episode
from ssp_jax.rl.update import (
    TrainState,
    init_train_state,
    make_train_step,
    train_state_shardings,
)
from ssp_jax.sections import SelfPlaySection, StepLayout
from ssp_jax.selfplay import PlayChecks, Policy, default_checks, play, rollout_metrics
from ssp_jax.sft import SftChecks, warm_start

log = logging.getLogger(__name__)

BATCH_AXES = TrainBatch(prompt_tokens=("batch", "seq"), prompt_mask=("batch", "seq"),
                        tokens=("batch", "seq"), loss_mask=("batch", "seq"),
                        old_logp=("batch", "seq"), advantages=("batch",), role_weight=("batch",))
RANK_AXES = RankBatch(prompt_tokens=("batch", "seq"), prompt_mask=("batch", "seq"),
                      tokens=("batch", "seq"), loss_mask=("batch", "seq"), harmful=("batch",),
                      valid=("batch",))
SUMMARY_KEYS = ("attack_success_rate", "attacker/reward_mean", "defender/reward_mean",
                "refusal_rate")


class TrainingDiverged(UserError):
    """Too many consecutive updates with a non-finite loss or gradient."""


class TrainingCollapsed(UserError):
    """The collapse monitor stopped the run (`train.stop_on_collapse`)."""


def _summary(records: list[dict]) -> dict[str, dict[str, float | None]]:
    if not records:
        return {}
    first, last = records[0], records[-1]
    return {k: {"first": first.get(k), "last": last.get(k)} for k in SUMMARY_KEYS}


def print_summary(summary: dict, first_step: int, last_step: int) -> None:
    print(f"\nsummary (step {first_step} -> step {last_step}):")
    print(f"  {'metric':<24}{'first':>10}{'last':>10}")
    for k, v in summary.items():
        fmt = lambda x: f"{x:10.3f}" if x is not None else f"{'-':>10}"  # noqa: E731
        print(f"  {k:<24}{fmt(v['first'])}{fmt(v['last'])}")


def describe_outputs(workdir: PathLike, shown_as: str) -> str:
    """One line naming the run's outputs in `workdir` (written as `shown_as`): the newest
    checkpoint, the logs and the TensorBoard folder that exist."""
    root = as_path(workdir)
    ckpts = root / "checkpoints"
    steps = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) \
        if ckpts.is_dir() else []
    parts = [f"checkpoints/{steps[-1]}" + (f" (newest of {', '.join(map(str, steps))})"
                                           if len(steps) > 1 else "")] if steps else []
    parts += [name for name in (*LOG_FILES, "config.json") if (root / name).exists()]
    parts += ["tensorboard/"] if (root / "tensorboard").is_dir() else []
    return f"outputs in {shown_as}: {', '.join(parts)}"


# In-training evaluation, composed by the entry point so that the loop does not import the
# evaluation package: (model config, policy params, tokenizer, judge, held-out goals) ->
# metrics such as `asr` (python -m ssp_jax.main passes evaluate.runner.held_out_evaluation).
HeldOutEvaluation = Callable[[ModelConfig, Params, Tokenizer, Judge, Sequence[PromptItem]],
                             dict[str, float]]


def play_checks(sp: SelfPlaySection, encoder: SentenceEncoder | None) -> PlayChecks:
    """`default_checks` with the intent, on-topic and withholding checks the `selfplay`
    section turns on (a threshold > 0; on-topic only with benign rows; `withholding_check`),
    all on the sentence `encoder` (None: none of them)."""
    intent = on_topic = withholds = None
    if encoder is not None and sp.min_intent_similarity > 0:
        intent = IntentCheck(encoder.similarity, sp.min_intent_similarity)
    if encoder is not None and sp.min_on_topic_similarity > 0 and sp.benign_per_step:
        on_topic = OnTopicCheck(encoder.similarity, sp.min_on_topic_similarity)
    if encoder is not None and sp.withholding_check:
        withholds = load_withholding_check(encoder).withholds
    return default_checks(intent, on_topic, withholds)


class Trainer:
    """Owns the run's state; `run()` trains to `train.num_steps` or until preempted.
    `evaluate_held_out` runs every `eval.every_steps` steps (needed when that is > 0). The
    supervised warm start is `train`'s: a Trainer resumes from the workdir as it is."""

    def __init__(self, config: Any, workdir: PathLike,
                 evaluate_held_out: HeldOutEvaluation | None = None):
        self.cfg = cfg = validate(config)
        self.evaluate_held_out = evaluate_held_out
        self.workdir = as_path(workdir)  # local or gs://
        self.workdir_arg = str(workdir)  # as the user wrote it, for messages
        # data first: a bad goals file fails before any model is loaded or compiled
        self.goals: GoalMixture = from_config(cfg.data)
        self.benign = (from_config(cfg.benign_data)
                       if cfg.selfplay.benign_per_step or cfg.rl.rank_weight else None)
        self.twins = FormTwins.of(self.benign) if cfg.selfplay.benign_twins else None
        self._check_evaluation()
        self.mesh = sharding.make_mesh(dataclasses.asdict(cfg.mesh))
        jax.set_mesh(self.mesh)
        # update batches: whole groups per row shard in every micro-batch
        self.layout = StepLayout.of(cfg, sharding.axis_size("batch", self.mesh,
                                                            sharding.TRAIN_RULES))
        model, self.tokenizer = load(cfg.model.spec, dtype=cfg.model.dtype, seed=cfg.model.seed,
                                     mesh=self.mesh, rules=sharding.TRAIN_RULES)
        self.model_cfg = model.config.replace(remat=cfg.model.remat,
                                              attention=cfg.model.attention,
                                              lora=cfg.model.lora)
        params = model.params()
        self.param_shardings = jax.tree.map(lambda x: x.sharding, params)
        del model
        check_prompt_budget(self.tokenizer, cfg.selfplay.max_prompt_tokens,
                            cfg.selfplay.attacker_brief, cfg.selfplay.defender_system_prompt)
        self.rank, self.rank_shardings = self._rank_prompts()
        # The update donates the train state, so the policy gets its own buffers (the state
        # init's outputs below: the one copy full fine-tuning needs). The KL reference and a
        # frozen-policy judge are the loaded arrays themselves, placed by the rule table like
        # the policy, without a copy; with rl.beta = 0 no reference exists. After a warm start
        # with rl.reference = "warm_start" the reference is the warm start's weights instead.
        # With LoRA the loaded arrays are also the frozen base the adapters apply to.
        self.ref_params = self._reference(params)
        self.judge = self._make_judge(params)
        # compilation starts here, once the judge is up
        self.optimizer = cfg.rl.optimizer(cfg.train.num_steps)
        trained = params
        if cfg.model.lora.enabled:  # only the adapters are trained
            adapter_init = jax.jit(
                lambda key: lora.init_adapters(self.model_cfg, key),
                out_shardings=lora.shardings(self.model_cfg, self.mesh, sharding.TRAIN_RULES))
            trained = adapter_init(jax.random.key(cfg.model.seed))
        state = jax.jit(lambda p: init_train_state(p, self.optimizer),
                        out_shardings=train_state_shardings(trained, self.optimizer))(trained)
        # one sentence encoder, on the mesh, for the intent and on-topic checks and attack
        # diversity
        encoder = (load_sentence_encoder(cfg.selfplay.intent_encoder, mesh=self.mesh,
                                         rules=sharding.TRAIN_RULES)
                   if cfg.selfplay.needs_encoder else None)
        self.checks = play_checks(cfg.selfplay, encoder)
        self.diversity = DiversityWindow(cfg.train.diversity_window,
                                         embed=encoder.embed if encoder is not None else None)
        self.collapse = CollapseMonitor(
            default_limits(cfg.train.max_benign_refusal, cfg.train.max_attacker_refusal),
            cfg.train.collapse_patience, stop=cfg.train.stop_on_collapse)
        self.pool = ReplayPool(cfg.replay)
        self.bad_steps = 0
        self.ckpt = Checkpointer(self.workdir / "checkpoints", keep=cfg.ckpt.keep,
                                 async_save=cfg.ckpt.async_save)
        self.state = self._restore(state)
        self.start_step = int(self.state.step)
        state_shardings = jax.tree.map(lambda x: x.sharding, self.state)
        self.batch_shardings = batch_shardings = self._batch_shardings()
        self.train_step = make_train_step(
            self.model_cfg, cfg.rl, self.optimizer, temperature=cfg.selfplay.update_temperature,
            num_steps=cfg.train.num_steps, state_shardings=state_shardings,
            batch_shardings=batch_shardings,
            ref_shardings=self.param_shardings if self.ref_params is not None else None,
            rank_shardings=self.rank_shardings)
        self.writer = MetricsWriter(self.workdir, self.start_step,
                                    enabled=jax.process_index() == 0)
        if jax.process_index() == 0:
            self.workdir.mkdir(parents=True, exist_ok=True)
            (self.workdir / "config.json").write_text(json.dumps(to_json(cfg), indent=2))

    def _batch_shardings(self) -> tuple[TrainBatch, ...]:
        """Each role's update batch shardings: groups and rows over the batch axes (fixed by
        the config); the sequence axes (bucketed) are never sharded."""
        return tuple(
            TrainBatch(*[sharding.logical_sharding(axes, (lead, 1)[:len(axes)], self.mesh,
                                                   sharding.TRAIN_RULES)
                         for axes, lead in zip(BATCH_AXES, (groups, groups, *[groups * size] * 5))])
            for groups, size in zip(self.layout.num_groups, self.layout.group_sizes))

    def _rank_prompts(self) -> tuple[RankPrompts | None, RankBatch | None]:
        """The decline ranking's prompts and its batch shardings (rows over the batch axes),
        or (None, None) when `rl.rank_weight` is 0."""
        cfg = self.cfg
        if not cfg.rl.rank_weight:
            return None, None
        prompts = rank_batch_prompts(cfg.rl.rank_prompts, sharding.axis_size(
            "batch", self.mesh, sharding.TRAIN_RULES))
        rank = RankPrompts(self.goals, self.benign, self.tokenizer,
                           declines=cfg.rl.rank_declines,
                           per_side=cfg.rl.rank_prompts, num_prompts=prompts,
                           system=cfg.selfplay.defender_system_prompt,
                           prompt_length=cfg.selfplay.max_prompt_tokens,
                           twins=cfg.rl.rank_twins)
        rows = prompts * len(cfg.rl.rank_declines)
        return rank, RankBatch(*[
            sharding.logical_sharding(axes, (lead, 1)[:len(axes)], self.mesh,
                                      sharding.TRAIN_RULES)
            for axes, lead in zip(RANK_AXES, (prompts, prompts, rows, rows, prompts, prompts))])

    def _make_judge(self, params: Params) -> Judge:
        """The configured judge (a policy-as-judge runs on the loaded arrays `params`, shared
        with the KL reference), checked to fit the self-play prompts and answers."""
        cfg = self.cfg
        judge = policy_judge(cfg.judge, JudgeModel(self.model_cfg, params, self.tokenizer),
                             mesh=self.mesh, dtype=cfg.model.dtype)
        check_judge_cache(
            judge, response_tokens=cfg.selfplay.defender_max_tokens,
            response_field="selfplay.defender_max_tokens",
            **({"request_tokens": cfg.selfplay.max_prompt_tokens,
                "request_field": "selfplay.max_prompt_tokens"}
               if cfg.judge.instruction_source == "goal" else
               {"request_tokens": cfg.selfplay.attacker_max_tokens,
                "request_field": "selfplay.attacker_max_tokens"}))
        return judge

    def _reference(self, params: Params) -> Params | None:
        """The KL reference (and, with LoRA, the adapters' base): the loaded `params`, the
        warm start's weights (`rl.reference`), or None without a KL term."""
        cfg = self.cfg
        if not cfg.has_reference_model:
            return None
        if cfg.model.lora.enabled:
            return params
        if cfg.warm_start_reference:
            step, ref = restore_reference(self.workdir / REFERENCE_DIR, abstract_like(params))
            log.info("KL reference: the warm start's weights (step %d)", step)
            return ref
        return params

    @property
    def policy_params(self) -> Params:
        """The current policy's parameters: the trained ones, or the base with adapters."""
        if self.model_cfg.lora.enabled:
            return lora.with_adapters(self.ref_params, self.state.params)
        return self.state.params

    def _restore(self, state: TrainState) -> TrainState:
        abstract = abstract_like(state)
        if self.cfg.ckpt.restore_from and not self.ckpt.manager.all_steps():
            found = restore_from_path(self.cfg.ckpt.restore_from, abstract)
        else:
            found = self.ckpt.restore_latest(abstract)
        if found is None:
            return state
        step, state, replay, meta = found
        check_resume_config(meta.get("config"), to_json(self.cfg), step)
        self.pool = ReplayPool.from_state_dict(replay, config=self.cfg.replay)
        self.bad_steps = int(meta["bad_steps"])
        self.diversity.load_state_dict(meta.get("diversity_window", []))
        self.collapse.load_state_dict(meta.get("collapse_streaks", {}))
        log.info("resumed from checkpoint at step %d", step)
        return state

    def save(self, step: int) -> None:
        meta = {"step": step, "bad_steps": self.bad_steps, "config": to_json(self.cfg),
                "diversity_window": self.diversity.state_dict(),
                "collapse_streaks": self.collapse.state_dict()}
        self.ckpt.save(step, self.state, self.pool.state_dict(), meta)
        self.writer.sync()

    def step(self, step: int) -> dict[str, float]:
        """The self-play step of index `step`, logged as step `step + 1`: play -> build
        batches -> update -> metrics (and the replay pool's bookkeeping); its metrics."""
        cfg, sp = self.cfg, self.cfg.selfplay
        number = step + 1  # the step's number in logs and checkpoints
        t_start = time.perf_counter()
        goals = self.goals.batch(step, self.layout.rollout_goals)
        replay = self.pool.select() if cfg.replay.replay_per_step else []
        pool_select = self.pool.metrics()
        benign = self.benign.batch(step, sp.benign_per_step) if sp.benign_per_step else []
        if self.twins:
            benign = self.twins.pair(step, goals, benign)
        key = jax.random.fold_in(jax.random.key(cfg.train.seed), step)
        policy = Policy(self.model_cfg, self.policy_params, self.tokenizer,
                        cfg.model.max_cache_len)
        episode = play(policy, self.judge, self.checks, sp, goals, replay, benign, key)
        self._check_judge(episode, number)
        built = build_batches(episode, self.layout, sp, self.tokenizer.pad_id)
        t0 = time.perf_counter()
        update_metrics = self._update(built.batches,
                                      self.rank.batch(step) if self.rank else None)
        episode.timings["update"] = time.perf_counter() - t0
        self._feed_pool(step, replay, episode, built.rewards.r_def)
        elapsed = time.perf_counter() - t_start
        metrics = {**rollout_metrics(episode, built, sp),
                   **{f"train/{k}": float(v) for k, v in update_metrics.items()},
                   **{f"time/{k}": v for k, v in episode.timings.items()},
                   "time/step": elapsed, "tokens_per_second": episode.num_tokens / elapsed,
                   "train/bad_steps_in_a_row": float(self.bad_steps),
                   **self.diversity.add(episode.attacker_samples),
                   **self._pool_metrics(pool_select)}
        self._log(step, number, episode, metrics)
        return metrics

    def _check_judge(self, episode: Episode, number: int) -> None:
        """Stops the run when the judge failed on more rows than judge.max_excluded_fraction."""
        failed, rows = episode.num_excluded, len(episode.excluded)
        if failed > self.cfg.judge.max_excluded_fraction * rows:
            raise JudgeFailed(
                f"the judge ({self.judge.describe}) failed on {failed:.0f} of {rows:.0f} rows at "
                f"step {number}, more than judge.max_excluded_fraction="
                f"{self.cfg.judge.max_excluded_fraction}; last error: {episode.judge_error}")

    def _update(self, batches: tuple[TrainBatch, TrainBatch],
                rank: RankBatch | None) -> dict[str, Any]:
        """One update on the host batches and decline-ranking batch (placed on the mesh); its
        metrics on the host. Counts skipped (non-finite) updates in `bad_steps`."""
        batches = jax.tree.map(sharding.put_global, batches, self.batch_shardings)
        if rank is not None:
            rank = jax.tree.map(sharding.put_global, rank, self.rank_shardings)
        self.state, update_metrics = self.train_step(self.state, self.ref_params, batches, rank)
        update_metrics = jax.tree.map(sharding.to_host, update_metrics)
        skipped = bool(update_metrics["update_skipped"])
        self.bad_steps = self.bad_steps + 1 if skipped else 0
        return update_metrics

    def _feed_pool(self, step: int, replay: list, episode: Episode, r_def: np.ndarray) -> None:
        """Replayed attacks' new judgements update their stats; fresh failures of replayable
        rows (`Episode.replayable`: valid, on-intent attacker samples the judge scored) are
        admitted. `r_def`: `[D]` the defender rewards. Rows the judge failed on are left
        out."""
        n_fresh, J = episode.num_fresh, episode.num_judged
        if replay:
            kept = np.flatnonzero(~episode.excluded[n_fresh:])
            ids = [item.item_id for item in replay for _ in range(episode.group_sizes[1])]
            responses, scores = episode.responses[n_fresh:J], episode.scores[n_fresh:]
            self.pool.update(step, [ids[i] for i in kept], [responses[i] for i in kept],
                             scores[kept], r_def[n_fresh:J][kept])
        kept = np.flatnonzero(episode.replayable)
        goals, attacks = episode.fresh_goals, episode.fresh_attacks
        self.pool.admit(step, [goals[i] for i in kept], [attacks[i] for i in kept],
                        [episode.responses[i] for i in kept], episode.scores[:n_fresh][kept],
                        r_def[:n_fresh][kept])

    def _pool_metrics(self, pool_select: dict) -> dict[str, float]:
        """The replay pool after the step, and what it selected before it."""
        pool = self.pool.metrics()
        return {"replay/pool_size": pool["pool_size"], "replay/admitted": pool["admitted"],
                "replay/evicted": pool["evicted"], "replay/selected": pool_select["selected"],
                "replay/selected_mean_ucb": pool_select["selected_mean_ucb"],
                "replay/selected_mean_reward": pool_select["selected_mean_reward"]}

    def _log(self, step: int, number: int, episode: Episode, metrics: dict) -> None:
        """Writes the metrics (and samples every train.sample_every steps), then stops the
        run on collapse or divergence."""
        cfg = self.cfg
        self.writer.write(number, metrics)
        if step % cfg.train.sample_every == 0:  # the first step, then every sample_every
            rows = zip(episode.fresh_goals, episode.fresh_attacks, episode.responses,
                       episode.scores, episode.reasons)
            self.writer.write_samples(number, [
                {"goal": g, "attack": a, "response": r, "score": float(s), "reason": why}
                for g, a, r, s, why in list(rows)[:cfg.train.samples_per_log]])
        try:
            self.collapse.update(number, metrics)
        except CollapseError as e:
            self.save(number)
            raise TrainingCollapsed(f"{e}\n(train.stop_on_collapse=True; the checkpoint of "
                                    f"step {number} was saved)") from None
        if self.bad_steps >= cfg.train.max_bad_steps:
            raise TrainingDiverged(
                f"{self.bad_steps} updates in a row had a non-finite loss or gradient "
                f"(last at step {number}); lower rl.learning_rate or check the data. The last "
                "checkpoint holds the parameters from before the divergence.")

    def _check_evaluation(self) -> None:
        """eval.every_steps > 0 needs an evaluation and held-out goals to run it on."""
        if not self.cfg.eval.every_steps:
            return
        if self.evaluate_held_out is None:
            raise ValueError("eval.every_steps > 0 needs an evaluation to run: pass "
                             "evaluate_held_out (python -m ssp_jax.main passes one)")
        if not self.goals.holdout:
            raise ValueError("eval.every_steps > 0 needs data.holdout_fraction > 0 "
                             "(held-out goals to evaluate on)")

    def evaluate(self, step: int) -> dict[str, float]:
        """Direct-mode attack success on the held-out goals, logged as `eval/*` at `step`."""
        metrics = self.evaluate_held_out(self.model_cfg, self.policy_params, self.tokenizer,
                                         self.judge, self.goals.holdout[:self.cfg.eval.num_goals])
        metrics = {f"eval/{k}": v for k, v in metrics.items()}
        self.writer.write_eval(step, metrics)
        log.info("eval at step %d: %s", step, ", ".join(f"{k}={v:.3f}" for k, v in
                                                         metrics.items()))
        return metrics

    def run(self) -> dict:
        """Trains to the configured number of steps; returns a first-vs-last summary."""
        cfg = self.cfg
        num_steps = cfg.train.num_steps
        preemption = Preemption()
        bar = tqdm(total=num_steps, initial=self.start_step, desc="self-play", unit="step",
                   disable=jax.process_index() != 0)
        step = self.start_step
        try:
            # every process checks the agreement at every boundary, so all stop at one step
            while step < num_steps and not preemption.agreed():
                metrics = self.step(step)
                step += 1
                bar.update(1)
                bar.set_postfix(asr=f"{metrics['attack_success_rate']:.2f}",
                                excluded=f"{metrics['judge/excluded']:.0f}",
                                r_def=f"{metrics.get('defender/reward_mean', float('nan')):.2f}")
                if step % cfg.train.log_every == 0:
                    log.info("step %d: %s (judge excluded %d of %d rows)", step, ", ".join(
                        f"{k}={metrics[k]:.3f}" for k in SUMMARY_KEYS if k in metrics),
                        metrics["judge/excluded"], metrics["judge/rows"])
                if cfg.eval.every_steps and step % cfg.eval.every_steps == 0:
                    self.evaluate(step)
                if cfg.ckpt.every_steps and step % cfg.ckpt.every_steps == 0:
                    self.save(step)
            if step not in self.ckpt.manager.all_steps():
                self.save(step)
        finally:
            bar.close()
            self.judge.close()  # a remote judge's connections
            self.ckpt.close()
            self.writer.close()
            preemption.restore()
        if preemption.requested:
            log.warning("preempted: saved the checkpoint of step %d and stopped", step)
        # the self-play steps' records (a warm start's SFT records have none of their metrics)
        records = [r for r in read_metrics(self.writer.metrics_path)
                   if "attack_success_rate" in r] if self.writer.enabled else []
        summary = _summary(records)
        if records and jax.process_index() == 0:
            print_summary(summary, records[0]["step"], records[-1]["step"])
        if jax.process_index() == 0:
            print(describe_outputs(self.workdir, self.workdir_arg))
        return {"steps_done": step, "preempted": preemption.requested, "summary": summary}


def train(config: Any, workdir: PathLike, evaluate_held_out: HeldOutEvaluation | None = None,
          sft_checks: SftChecks | None = None) -> dict:
    """Runs the config's warm start, if any (`sft.warm_start`, with `sft_checks` as its data
    checks, default `sft.default_checks`), then builds a Trainer and runs it
    (`evaluate_held_out`: see Trainer); the Trainer's summary, with `warm_start` the SFT
    result (None when SFT did not run). The Trainer sets its device mesh globally; the mesh
    that was set before (usually none) is set again afterwards, so that models loaded later in
    the process (an experiment's checkpoints, on one device) are not checked against it."""
    previous = jax.sharding.get_mesh()
    try:
        sft = warm_start(config, workdir, sft_checks)
        return {**Trainer(config, workdir, evaluate_held_out).run(), "warm_start": sft}
    finally:
        jax.set_mesh(None if previous.empty else previous)
