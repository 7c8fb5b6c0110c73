"""Supervised refusal training: the warm start of self-play (`sft.warm_start_steps`, run by
`train.train` before the trainer) and the `sft` baseline of `python -m ssp_jax.experiment`.
The `sft` config section sets the data (`SftSettings.data`).

Data, by default with no hand-written answers (the base model's own text, sampled as the
defender samples: `selfplay.temperature`, `top_p`, `top_k`, at most
`selfplay.defender_max_tokens` tokens):
- declines: the first `sft.prompts` distinct goals of the config's `data` mixture (its
  training part, in the mixture's order) are put to the base model with a refusal-inducing
  system prompt (`sft.refusal_system_prompt`); of `sft.samples` answers per goal, the first
  that training's decline check calls a decline is kept (the strict check and, with
  `selfplay.withholding_check`, the withholding classifier: the decline tier's text side, so
  the baseline keeps no decline-then-comply answer the self-play arm would not reward).
  With `sft.declines="written"` every goal gets one of `sft.written_declines` instead (in
  turn; each must pass the same check), and no harmful goal is sampled;
- answers: as many prompts of `benign_data`, asked plainly; of the samples, the first that no
  decline check (lenient or strict) calls a refusal, that is readable (not empty, gibberish or
  degenerate) and that is on-topic (`judge.on_topic.OnTopicCheck`) is kept.
Every example's input is the defender's plain prompt (`game.roles.defender_prompt` with the
config's `selfplay.defender_system_prompt`), never the refusal system prompt: the model learns
to decline by itself.

What the data holds on SmolLM2-135M-Instruct (the recipe's goals and benign prompts, sampled at
its temperature 0.8; measured once, by hand): the model rarely declines even when told to. With
the default `sft.refusal_system_prompt`, 2 of 64 samples (4 for each of 16 goals) were strict
declines, 2 of 32 goals kept one (4 samples each), and both "declines" described the crime
rather than declining (the strict check matched phrases such as "illegal and unethical"); a
shorter system prompt gave 1 of 64, the instruction appended to the user turn 7 of 64 and then 3
of 128 (8 samples per goal). Every one of 32 benign prompts kept an on-topic answer. At the
defaults (256 goals, 4 samples each, the recipe's decline check with the withholding classifier)
19 goals kept a decline and 255 of 256 benign prompts an answer (benchmarks/RESULTS.md, "The
`sft` baseline"); several of the kept "declines" are hate mail or descriptions of the crime that
pass both checks. So on this model the baseline trains on few, weak declines; raise
`sft.samples` and `sft.prompts` (every goal) to collect more, or use written declines (on
SmolLM2 these taught the imperative form of the goals rather than their harm:
benchmarks/RESULTS.md, "Written declines for the warm start").

Compute matched to the self-play recipe of the same config:
- updates: `SftSettings.steps` (`train.num_steps` for `sft`; `sft.warm_start_steps` for the
  warm start, after which self-play runs the remaining steps);
- rows per update: the self-play defender batch's, (G * A + replay + benign) * R
  (`sections.StepLayout`), split the same way: (G * A + replay) * R decline rows and
  benign * R answer rows (or, with `sft.answer_share` > 0, that share of the same rows are
  answers and the rest declines), each drawn from its pool in epochs of fresh permutations (a
  pure function of the step);
- optimizer: `rl.optimizer(train.num_steps)` (learning rate, schedule, clipping, AdamW), the
  same trained parameters (LoRA adapters when `model.lora` is on), `rl.micro_batches`
  gradient-accumulation slices, rows sharded over the mesh's batch axes like the RL update.
Not matched: self-play samples and judges both roles at every step; SFT samples once, up front
(`sft.samples` answers per prompt), and its rows are not weighted (`benign_weight`
and the role weights shape a reward, which SFT has none of).

Loss: the mean token cross-entropy of the answer tokens (`sft_loss_terms`).

Checkpoints: `workdir/checkpoints/N` every `ckpt.every_steps` updates and after the last, in the
self-play trainer's layout (train state, an empty replay pool, metadata with the config), so
that `checkpoint.load_checkpoint` evaluates them and a `train.Trainer` on the same workdir
resumes from the last one. With `SftSettings.reset_optimizer` the last checkpoint carries a
fresh optimizer state: self-play then starts from the SFT weights with Adam moments of its own
(the SFT moments, of a cross-entropy gradient, would otherwise scale the first policy-gradient
steps). There is no resume: a workdir that already has checkpoints is an error.

Warm start (`warm_start`): on a workdir without checkpoints, SFT runs `sft.warm_start_steps`
updates with the optimizer reset after the last, and the trainer resumes from that checkpoint.
With `rl.reference="warm_start"` (and `rl.beta` > 0) the last update's weights are also saved
to `workdir/reference`, outside the checkpoints that `ckpt.keep` prunes: self-play's KL term
then holds the policy near the warm start's weights rather than pulling it back to the base
model's (`train.Trainer`).
A workdir whose newest checkpoint is at or past them has done its warm start: self-play
resumes as usual. One whose newest checkpoint comes before them (SFT stopped between its
checkpoints) is an error that asks for a new workdir: resuming SFT would need the sampled
data's token ids and the mid-run optimizer state, and starting self-play there would train it
from SFT's Adam moments (`resume.warm_start_error`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from tqdm import tqdm

from ssp_jax import sharding
from ssp_jax.checkpoint import Checkpointer, save_reference
from ssp_jax.config import TrainConfig, to_json, validate
from ssp_jax.data.mixture import GoalMixture, from_config
from ssp_jax.game.roles import defender_prompt, fit_prompt
from ssp_jax.judge.on_topic import OnTopicCheck
from ssp_jax.judge.refusal import RefusalJudge, either_refusal_detector
from ssp_jax.judge.withholding import load_withholding_check
from ssp_jax.metrics import MetricsWriter
from ssp_jax.models import load, lora
from ssp_jax.models.config import ModelConfig
from ssp_jax.models.sentence_encoder import load_sentence_encoder
from ssp_jax.models.tokenizer import Tokenizer
from ssp_jax.models.transformer import Params
from ssp_jax.paths import PathLike, as_path
from ssp_jax.replay import ReplayPool
from ssp_jax.resume import REFERENCE_DIR, warm_start_error
from ssp_jax.rl.update import (TrainState, apply_if_finite, completion_logprobs, init_train_state,
                               split_micro_batches, train_state_shardings)
from ssp_jax.rollout.sampler import generate_with_params
from ssp_jax.sections import SftSection, StepLayout
from ssp_jax.selfplay import decline_check

log = logging.getLogger(__name__)

DECLINE, ANSWER = "decline", "answer"


@dataclasses.dataclass(frozen=True)
class SftSettings:
    """What one SFT run does.

    data: the `sft` config section, validated with the config (prompts, samples, batch size,
      refusal system prompt; an `on_topic_threshold` of 0 means no on-topic check and no
      sentence encoder).
    steps: updates to run (at most `train.num_steps`: the optimizer's schedule is that run's).
    reset_optimizer: the last checkpoint carries a fresh optimizer state (a warm start).
    save_reference: the last update's weights are also written to `workdir/reference`, the KL
      reference of the self-play that follows (`rl.reference="warm_start"`).
    """

    data: SftSection
    steps: int
    reset_optimizer: bool
    save_reference: bool = False

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"SFT steps must be >= 1, got {self.steps}")


class SftChecks(NamedTuple):
    """The checks that pick the kept answers (text -> bool, or a batched pair check)."""

    declines: Callable[[str], bool]  # the decline tier's text check (`selfplay.decline_check`)
    refuses: Callable[[str], bool]  # any decline, lenient or strict
    unreadable: Callable[[str], bool]  # empty, gibberish or degenerate
    # (prompts, answers) -> [N] bool, or None for no on-topic check
    on_topic: Callable[[Sequence[str], Sequence[str]], np.ndarray] | None


def default_checks(on_topic: OnTopicCheck | None,
                   withholds: Callable[[Sequence[str]], np.ndarray] | None = None) -> SftChecks:
    """The project's checks: for declines the one training's decline tier uses
    (`selfplay.decline_check(withholds)`: the strict check and, when given, the withholding
    classifier), the lenient or strict detector for refusals, the strict judge's "empty" class
    for unreadable text."""
    strict = RefusalJudge(strict=True)
    decline = decline_check(withholds)
    return SftChecks(declines=lambda text: bool(decline([text])[0]),
                     refuses=either_refusal_detector(),
                     unreadable=lambda text: strict.classify(text) == "empty",
                     on_topic=on_topic.on_topic if on_topic is not None else None)


class Candidate(NamedTuple):
    """One sampled answer: its token ids (the stop token included when it stopped) and text."""

    tokens: list[int]
    text: str


class SftExample(NamedTuple):
    """A kept answer: `prompt` is the user turn it answers; `kind` is DECLINE or ANSWER."""

    prompt: str
    answer: Candidate
    kind: str


def keep_declines(goals: Sequence[str], candidates: Sequence[Sequence[Candidate]],
                  checks: SftChecks) -> list[SftExample]:
    """Per goal, the first candidate the decline check calls a decline (goals with none are
    left out). `candidates[i]` are goal i's samples."""
    if len(goals) != len(candidates):
        raise ValueError(f"{len(goals)} goals but {len(candidates)} candidate lists")
    kept = []
    for goal, cands in zip(goals, candidates):
        hit = next((c for c in cands if checks.declines(c.text)), None)
        if hit is not None:
            kept.append(SftExample(goal, hit, DECLINE))
    return kept


def keep_answers(prompts: Sequence[str], candidates: Sequence[Sequence[Candidate]],
                 checks: SftChecks) -> list[SftExample]:
    """Per benign prompt, the first candidate that is neither a refusal nor unreadable and is
    on-topic (prompts with none are left out)."""
    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
    pairs = [(i, c) for i, cands in enumerate(candidates) for c in cands
             if not checks.refuses(c.text) and not checks.unreadable(c.text)]
    if checks.on_topic is not None and pairs:
        on = checks.on_topic([prompts[i] for i, _ in pairs], [c.text for _, c in pairs])
        pairs = [p for p, keep in zip(pairs, on) if keep]
    first: dict[int, Candidate] = {}
    for i, c in pairs:
        first.setdefault(i, c)
    return [SftExample(prompts[i], first[i], ANSWER) for i in sorted(first)]


def written_declines(goals: Sequence[str], texts: Sequence[str], tokenizer: Tokenizer,
                     checks: SftChecks) -> list[SftExample]:
    """One decline per goal: `texts` in turn (goal i gets `texts[i % len(texts)]`), tokenized
    with the end-of-sequence token after it, as a sampled answer that stopped. A text the
    decline check does not call a decline is a ValueError: training on it would teach what the
    self-play arm does not reward."""
    rejected = [t for t in dict.fromkeys(texts) if not checks.declines(t)]
    if rejected:
        raise ValueError(f"sft.written_declines: the decline check does not call {rejected!r} a "
                         "decline; reword or remove it")
    cands = [Candidate(tokenizer.encode(t) + [tokenizer.eos_id], t) for t in texts]
    return [SftExample(goal, cands[i % len(cands)], DECLINE) for i, goal in enumerate(goals)]


def distinct_prompts(mixture: GoalMixture, n: int) -> list[str]:
    """The first `n` distinct texts the mixture serves from step 0 (its training part, in its
    weighted order); fewer when it has fewer."""
    texts = dict.fromkeys(item.text for item in mixture.batch(0, n * 4))
    return list(texts)[:n]


class Sampler(NamedTuple):
    """The base model that writes the candidates."""

    cfg: ModelConfig
    params: Params
    tokenizer: Tokenizer
    max_cache_len: int


def sample_candidates(sampler: Sampler, texts: Sequence[str], system: str, cfg: TrainConfig,
                      sft: SftSection, seed: int) -> list[list[Candidate]]:
    """`sft.samples` sampled answers per text, asked with the system turn `system` ("" for none),
    sampled as the defender samples, `sft.batch_size` texts per call; `[len(texts)][samples]`."""
    sp, tok = cfg.selfplay, sampler.tokenizer
    limit = sampler.max_cache_len - sp.defender_max_tokens
    prompts = [fit_prompt(lambda t: defender_prompt(tok, t, system), tok, text, limit)[0]
               for text in texts]
    out: list[list[Candidate]] = []
    for start in tqdm(range(0, len(prompts), sft.batch_size), desc="SFT data",
                      unit="batch", disable=jax.process_index() != 0):
        chunk = prompts[start:start + sft.batch_size]
        gen = generate_with_params(
            sampler.cfg, sampler.params, chunk, sp.defender_max_tokens,
            temperature=sp.temperature, top_p=sp.top_p, top_k=sp.top_k,
            num_samples=sft.samples, seed=jax.random.fold_in(jax.random.key(seed), start),
            stop_ids=tok.stop_ids, pad_id=tok.pad_id, max_cache_len=sampler.max_cache_len)
        answers = [Candidate(t, tok.decode(t).strip()) for t in gen.tokens]
        out += [answers[i:i + sft.samples] for i in range(0, len(answers), sft.samples)]
    return out


class SftData(NamedTuple):
    """The kept examples and how many prompts each pool was drawn from."""

    declines: list[SftExample]
    answers: list[SftExample]
    goals_tried: int
    benign_tried: int

    def counts(self) -> dict[str, int]:
        return {"goals_tried": self.goals_tried, "declines_kept": len(self.declines),
                "benign_tried": self.benign_tried, "answers_kept": len(self.answers)}


def build_data(sampler: Sampler, cfg: TrainConfig, sft: SftSection, checks: SftChecks,
               with_benign: bool) -> SftData:
    """Samples and keeps the examples (module docstring); ValueError when a pool the batches
    need is empty."""
    goals = distinct_prompts(from_config(cfg.data), sft.prompts)
    if sft.declines == "written":
        declines = written_declines(goals, sft.written_declines, sampler.tokenizer, checks)
    else:
        declines = keep_declines(goals, sample_candidates(
            sampler, goals, sft.refusal_system_prompt, cfg, sft, cfg.train.seed), checks)
    benign = distinct_prompts(from_config(cfg.benign_data), sft.prompts) \
        if with_benign else []
    answers = keep_answers(benign, sample_candidates(
        sampler, benign, "", cfg, sft, cfg.train.seed + 1), checks) if benign else []
    data = SftData(declines, answers, len(goals), len(benign))
    if not declines:
        raise ValueError(f"SFT: none of the {len(goals) * sft.samples} sampled answers "
                         f"to {len(goals)} goals was a decline under the decline check; raise "
                         "sft.samples or change sft.refusal_system_prompt")
    if with_benign and not answers:
        raise ValueError(f"SFT: no on-topic answer among the samples for {len(benign)} benign "
                         "prompts; raise sft.samples or lower sft.on_topic_threshold")
    return data


class SftBatch(NamedTuple):
    """One update's rows: N (prompt, answer) pairs; padding rows have an all-zero mask."""

    prompt_tokens: np.ndarray  # [N, P] int32, right-padded
    prompt_mask: np.ndarray  # [N, P] bool, True on real prompt tokens
    tokens: np.ndarray  # [N, C] int32 answers, right-padded
    loss_mask: np.ndarray  # [N, C] f32, 1 on answer tokens


BATCH_AXES = SftBatch(("batch", "seq"), ("batch", "seq"), ("batch", "seq"), ("batch", "seq"))


def pack_batch(prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], *,
               rows: int, prompt_length: int, answer_length: int, pad_id: int) -> SftBatch:
    """Packs (prompt, answer) token-id pairs into `rows` rows (the rest padding); a pair longer
    than its length is a ValueError."""
    if len(prompts) != len(answers) or len(prompts) > rows:
        raise ValueError(f"{len(prompts)} prompts and {len(answers)} answers for {rows} rows")
    batch = SftBatch(np.full((rows, prompt_length), pad_id, np.int32),
                     np.zeros((rows, prompt_length), bool),
                     np.full((rows, answer_length), pad_id, np.int32),
                     np.zeros((rows, answer_length), np.float32))
    for r, (p, a) in enumerate(zip(prompts, answers)):
        if not 0 < len(p) <= prompt_length or len(a) > answer_length:
            raise ValueError(f"row {r}: prompt of {len(p)} tokens (1 to {prompt_length}) or "
                             f"answer of {len(a)} (at most {answer_length})")
        batch.prompt_tokens[r, :len(p)], batch.prompt_mask[r, :len(p)] = p, True
        batch.tokens[r, :len(a)], batch.loss_mask[r, :len(a)] = a, 1.0
    return batch


def stream_indices(step: int, n: int, size: int, seed: int) -> np.ndarray:
    """`[n]` int: items `step * n ... step * n + n - 1` of a stream over a pool of `size`
    that serves it in epochs, each a fresh permutation drawn from (seed, epoch)."""
    k = step * n + np.arange(n)
    epochs = k // size
    perms = {e: np.random.default_rng((seed, int(e))).permutation(size) for e in set(epochs)}
    return np.array([perms[e][i] for e, i in zip(epochs, k % size)], np.int64)


class RowPlan(NamedTuple):
    """Rows per update: declines, benign answers, and padding up to `total`."""

    declines: int
    answers: int
    total: int

    @classmethod
    def of(cls, layout: StepLayout, answer_share: float = 0.0) -> "RowPlan":
        """The self-play defender batch's rows, padded to a multiple of micro-batches x row
        shards (as the RL update pads its groups). An `answer_share` in (0, 1) splits the same
        rows again: that share of them (rounded, at least one) are answers, the rest
        declines."""
        R = layout.group_sizes[1]
        declines = (layout.goals * layout.group_sizes[0] + layout.replay_rows) * R
        answers = layout.benign_prompts * R
        if answer_share:
            rows = declines + answers
            answers = min(rows - 1, max(1, round(answer_share * rows)))
            declines = rows - answers
        multiple = layout.micro_batches * layout.row_shards
        return cls(declines, answers, -(-(declines + answers) // multiple) * multiple)


def step_batch(data: SftData, prompt_ids: dict[str, list[int]], plan: RowPlan, step: int,
               seed: int, pad_id: int, lengths: tuple[int, int]) -> SftBatch:
    """The batch of update `step`: `plan.declines` decline rows and `plan.answers` answer rows
    (a pure function of the step), padded to `plan.total` rows of `lengths` (prompt, answer)."""
    rows = [data.declines[i] for i in stream_indices(step, plan.declines, len(data.declines),
                                                     seed)]
    if plan.answers:
        rows += [data.answers[i] for i in stream_indices(step, plan.answers, len(data.answers),
                                                         seed + 1)]
    return pack_batch([prompt_ids[r.prompt] for r in rows], [r.answer.tokens for r in rows],
                      rows=plan.total, prompt_length=lengths[0], answer_length=lengths[1],
                      pad_id=pad_id)


def sft_loss_terms(logp: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Summed token cross-entropy and its token count (sums, so micro-batches add exactly):

        ce_sum = -sum_{b,t} mask[b, t] * log p(y[b, t] | prompt_b, y[b, <t]),
        count = sum_{b,t} mask[b, t];   the loss is ce_sum / count.

    logp: `[N, C]` f32 log-probs of the answer tokens; loss_mask: `[N, C]` f32. Masked
    positions are zeroed before the product (an inf there is harmless)."""
    mask = loss_mask.astype(jnp.float32)
    return -jnp.sum(jnp.where(mask > 0, logp, 0.0) * mask), jnp.sum(mask)


def make_sft_step(model_cfg: ModelConfig, optimizer: optax.GradientTransformation,
                  schedule: optax.Schedule, micro_batches: int, *, state_shardings: Any = None,
                  batch_shardings: SftBatch | None = None, base_shardings: Any = None
                  ) -> Callable[[TrainState, Params | None, SftBatch], tuple[TrainState, dict]]:
    """`sft_step(state, base, batch) -> (state, metrics)`, jitted with the state donated.
    Gradients of the summed cross-entropy are accumulated over `micro_batches` strided slices
    and divided once by the total answer tokens. With LoRA `state.params` are the adapters over
    the frozen `base` (else `base` is None). A step whose loss or gradients are not finite
    leaves the state's parameters and optimizer state unchanged (`update_skipped`)."""

    def micro(params, base, mb: SftBatch):
        def loss_fn(p):
            policy = lora.with_adapters(base, p) if model_cfg.lora.enabled else p
            logp, _ = completion_logprobs(policy, model_cfg, mb.prompt_tokens, mb.prompt_mask,
                                          mb.tokens, 1.0)
            ce_sum, count = sft_loss_terms(logp, mb.loss_mask)
            return ce_sum, count

        (ce_sum, count), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return jax.tree.map(lambda g: g.astype(jnp.float32), grads), ce_sum, count

    def sft_step(state: TrainState, base: Params | None, batch: SftBatch):
        slices = split_micro_batches(batch, micro_batches, batch_shardings)
        first = micro(state.params, base, jax.tree.map(lambda x: x[0], slices))
        if micro_batches > 1:
            def body(carry, mb):
                return jax.tree.map(jnp.add, carry, micro(state.params, base, mb)), None

            first, _ = jax.lax.scan(body, first, jax.tree.map(lambda x: x[1:], slices))
        grads, ce_sum, count = first
        count = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / count, grads)
        new_state, grad_norm, finite = apply_if_finite(state, grads, ce_sum, optimizer)
        return new_state, {"loss": ce_sum / count, "tokens": count, "grad_norm": grad_norm,
                           "learning_rate": schedule(state.step),
                           "update_skipped": (~finite).astype(jnp.float32)}

    if state_shardings is None:
        return jax.jit(sft_step, donate_argnums=0)
    return jax.jit(sft_step, donate_argnums=0,
                   in_shardings=(state_shardings, base_shardings, batch_shardings),
                   out_shardings=(state_shardings, None))


class _Run(NamedTuple):
    """What the SFT loop works with, set up once."""

    cfg: TrainConfig
    settings: SftSettings
    model_cfg: ModelConfig
    base: Params | None  # the frozen base under LoRA adapters, else None
    optimizer: optax.GradientTransformation
    plan: RowPlan
    mesh: jax.sharding.Mesh


def _load_policy(cfg: TrainConfig, mesh: jax.sharding.Mesh
                 ) -> tuple[ModelConfig, Params, Tokenizer]:
    """The base model on the mesh, configured as the trainer configures it."""
    model, tokenizer = load(cfg.model.spec, dtype=cfg.model.dtype, seed=cfg.model.seed,
                            mesh=mesh, rules=sharding.TRAIN_RULES)
    model_cfg = model.config.replace(remat=cfg.model.remat, attention=cfg.model.attention,
                                     lora=cfg.model.lora)
    return model_cfg, model.params(), tokenizer


def _init_state(run: _Run, params: Params) -> TrainState:
    """A fresh train state as the trainer makes it: a copy of the weights (or new adapters)
    and the optimizer state, sharded like the parameters."""
    trained = params
    if run.model_cfg.lora.enabled:
        trained = jax.jit(lambda key: lora.init_adapters(run.model_cfg, key),
                          out_shardings=lora.shardings(run.model_cfg, run.mesh,
                                                       sharding.TRAIN_RULES)
                          )(jax.random.key(run.cfg.model.seed))
    return jax.jit(lambda p: init_train_state(p, run.optimizer),
                   out_shardings=train_state_shardings(trained, run.optimizer))(trained)


def _save(ckpt: Checkpointer, run: _Run, state: TrainState, step: int, data: SftData) -> None:
    """A checkpoint in the trainer's layout (see module docstring)."""
    meta = {"step": step, "bad_steps": 0, "config": to_json(run.cfg),
            "sft": {**dataclasses.asdict(run.settings), **data.counts(),
                    "rows": run.plan._asdict()}}
    ckpt.save(step, state, ReplayPool(run.cfg.replay).state_dict(), meta)


def _write_data(workdir: epath.Path, data: SftData) -> None:
    """`sft_data.jsonl`: every kept example, to read what the model was trained on."""
    lines = [json.dumps({"kind": e.kind, "prompt": e.prompt, "answer": e.answer.text},
                        ensure_ascii=False) for e in data.declines + data.answers]
    (workdir / "sft_data.jsonl").write_text("".join(line + "\n" for line in lines))


def _train(run: _Run, state: TrainState, data: SftData, tokenizer: Tokenizer,
           workdir: epath.Path, ckpt: Checkpointer) -> None:
    """The update loop: batch -> update -> metrics -> checkpoint, `settings.steps` times."""
    cfg, sp = run.cfg, run.cfg.selfplay
    prompt_ids = {e.prompt: fit_prompt(lambda t: defender_prompt(
        tokenizer, t, sp.defender_system_prompt), tokenizer, e.prompt, sp.max_prompt_tokens)[0]
        for e in data.declines + data.answers}
    lengths = (max(len(p) for p in prompt_ids.values()), sp.defender_max_tokens)
    shardings = SftBatch(*[sharding.logical_sharding(axes, (run.plan.total, 1), run.mesh,
                                                     sharding.TRAIN_RULES)
                           for axes in BATCH_AXES])
    step_fn = make_sft_step(
        run.model_cfg, run.optimizer, cfg.rl.learning_rate_schedule(cfg.train.num_steps),
        cfg.rl.micro_batches, state_shardings=jax.tree.map(lambda x: x.sharding, state),
        batch_shardings=shardings,
        base_shardings=jax.tree.map(lambda x: x.sharding, run.base) if run.base else None)
    writer = MetricsWriter(workdir, 0, enabled=jax.process_index() == 0)
    bar = tqdm(range(run.settings.steps), desc="SFT", unit="step",
               disable=jax.process_index() != 0)
    bad_steps = 0
    try:
        for step in bar:
            batch = step_batch(data, prompt_ids, run.plan, step, cfg.train.seed,
                               tokenizer.pad_id, lengths)
            state, metrics = step_fn(state, run.base,
                                     jax.tree.map(sharding.put_global, batch, shardings))
            metrics = {f"sft/{k}": float(sharding.to_host(v)) for k, v in metrics.items()}
            writer.write(step + 1, metrics)
            bar.set_postfix(loss=f"{metrics['sft/loss']:.3f}")
            bad_steps = bad_steps + 1 if metrics["sft/update_skipped"] else 0
            if bad_steps >= cfg.train.max_bad_steps:
                raise FloatingPointError(f"{bad_steps} SFT updates in a row had a non-finite "
                                         f"loss or gradient (last at step {step + 1})")
            last = step + 1 == run.settings.steps
            if last and run.settings.reset_optimizer:
                fresh = train_state_shardings(state.params, run.optimizer).opt_state
                state = state.replace(opt_state=jax.jit(
                    run.optimizer.init, out_shardings=fresh)(state.params))
            if last and run.settings.save_reference:
                save_reference(workdir / REFERENCE_DIR, step + 1, state.params)
            if last or cfg.ckpt.every_steps and (step + 1) % cfg.ckpt.every_steps == 0:
                _save(ckpt, run, state, step + 1, data)
                writer.sync()
    finally:
        writer.close()


def run_sft(config: Any, workdir: PathLike, settings: SftSettings,
            checks: SftChecks | None = None) -> dict:
    """Samples the SFT data with the base model, trains `settings.steps` updates and writes
    checkpoints to `workdir/checkpoints` (module docstring). `checks` default to
    `default_checks` with MiniLM (`selfplay.intent_encoder`) for the on-topic check and, with
    `selfplay.withholding_check`, the withholding classifier in the decline check. Returns
    {"steps_done", "data": kept / tried counts, "rows": each update's `RowPlan`}. The device
    mesh set before is set again afterwards."""
    cfg = validate(config)
    if settings.steps > cfg.train.num_steps:
        raise ValueError(f"SFT steps ({settings.steps}) exceed train.num_steps "
                         f"({cfg.train.num_steps}), the run the optimizer's schedule is for")
    workdir = as_path(workdir)
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.ckpt.keep,
                        async_save=cfg.ckpt.async_save)
    previous = jax.sharding.get_mesh()
    try:
        if ckpt.manager.all_steps():
            raise ValueError(f"{workdir / 'checkpoints'} already has checkpoints; SFT starts "
                             "from the base model in a new workdir")
        mesh = sharding.make_mesh(dataclasses.asdict(cfg.mesh))
        jax.set_mesh(mesh)
        model_cfg, params, tokenizer = _load_policy(cfg, mesh)
        layout = StepLayout.of(cfg, sharding.axis_size("batch", mesh, sharding.TRAIN_RULES))
        run = _Run(cfg, settings, model_cfg, params if model_cfg.lora.enabled else None,
                   cfg.rl.optimizer(cfg.train.num_steps),
                   RowPlan.of(layout, settings.data.answer_share), mesh)
        if checks is None:
            threshold = settings.data.on_topic_threshold
            encoder = load_sentence_encoder(cfg.selfplay.intent_encoder, mesh=mesh,
                                            rules=sharding.TRAIN_RULES) \
                if threshold > 0 or cfg.selfplay.withholding_check else None
            checks = default_checks(
                OnTopicCheck(encoder.similarity, threshold) if threshold > 0 else None,
                load_withholding_check(encoder).withholds
                if cfg.selfplay.withholding_check else None)
        data = build_data(Sampler(model_cfg, params, tokenizer, cfg.model.max_cache_len), cfg,
                          settings.data, checks, with_benign=run.plan.answers > 0)
        log.info("SFT data: %s; rows per update: %s", data.counts(), run.plan._asdict())
        if jax.process_index() == 0:
            workdir.mkdir(parents=True, exist_ok=True)
            _write_data(workdir, data)
        _train(run, _init_state(run, params), data, tokenizer, workdir, ckpt)
    finally:
        ckpt.close()
        jax.set_mesh(None if previous.empty else previous)
    return {"steps_done": settings.steps, "data": data.counts(), "rows": run.plan._asdict()}


def warm_start_settings(cfg: TrainConfig) -> SftSettings:
    """The warm start of the validated config `cfg`: `sft.warm_start_steps` updates, then a
    fresh optimizer state, its weights saved as the KL reference where self-play has one and
    `rl.reference` asks for them."""
    return SftSettings(cfg.sft, steps=cfg.sft.warm_start_steps, reset_optimizer=True,
                       save_reference=cfg.warm_start_reference)


def warm_start(config: Any, workdir: PathLike, checks: SftChecks | None = None) -> dict | None:
    """The supervised warm start of a self-play run in `workdir` (module docstring): on a
    workdir without checkpoints, `run_sft` for `sft.warm_start_steps` updates with the
    optimizer reset after the last; nothing without a warm start or when the newest checkpoint
    is at or past its end; a ValueError saying what to do when it is before. Returns
    `run_sft`'s result, or None when SFT did not run."""
    cfg = validate(config)
    steps = cfg.sft.warm_start_steps
    if not steps:
        return None
    ckpt = Checkpointer(as_path(workdir) / "checkpoints", keep=cfg.ckpt.keep, async_save=False)
    saved = ckpt.manager.all_steps()
    ckpt.close()
    if saved:
        if message := warm_start_error(max(saved), steps):
            raise ValueError(f"{workdir}: {message}")
        log.info("warm start: done before (newest checkpoint: step %d)", max(saved))
        return None
    log.info("warm start: %d SFT updates from the base model, then self-play for the other %d "
             "steps (sft.warm_start_steps)", steps, cfg.train.num_steps - steps)
    out = run_sft(config, workdir, warm_start_settings(cfg), checks)
    log.info("warm start: done (SFT data %s); self-play resumes from checkpoints/%d",
             out["data"], steps)
    return out
