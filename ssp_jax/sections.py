"""The config layer: one frozen dataclass per config section, its validation, and the
`StepLayout` derived from them.

No field here has a default: every value comes from ssp_jax/default_config.py (the only set of
defaults, with a comment on each field), merged with a config file by `ssp_jax.config.validate`
or by `section(cls, **overrides)`. This module imports no code that reads a section (the loop,
models, judges, rl), so every one of them can import it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from typing import TYPE_CHECKING, Any, Mapping, TypeVar

import jax.numpy as jnp
import optax

from ssp_jax import default_config

if TYPE_CHECKING:
    from ssp_jax.config import TrainConfig

ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash")
# projections a LoRA adapter may wrap (Hugging Face / PEFT module names)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
JUDGE_NAMES = ("refusal", "rubric", "llm", "llama_guard", "harmbench", "harmbench_mistral",
               "wildguard", "strongreject")
JUDGE_SCORINGS = ("probs", "text")
KL_REFERENCES = ("warm_start", "base")  # rl.reference
DECLINE_SOURCES = ("sampled", "written")  # sft.declines


def plain_data(obj: Any) -> Any:
    """ConfigDict / Mapping / list tree -> plain dicts and lists."""
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    if isinstance(obj, Mapping):
        return {k: plain_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_data(v) for v in obj]
    return obj


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters `W + (alpha / rank) * A @ B` on the `targets` projections; rank 0 = off.
    Hashable (part of the static ModelConfig). Its defaults are the model's "no adapters" (the
    value a model without a config has), not the `model.lora` section's (default_config.py)."""

    rank: int = 0  # r; 0 disables adapters (full fine-tuning)
    alpha: float = 16.0  # the adapter output is scaled by alpha / rank
    dropout: float = 0.0  # dropout on the adapter input in the update (not when sampling)
    targets: tuple[str, ...] = LORA_TARGETS  # projections that get an adapter

    def __post_init__(self) -> None:
        if self.rank < 0:
            raise ValueError(f"lora.rank={self.rank!r} must be ≥ 0 (0 = off)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout={self.dropout!r} must be in [0, 1)")
        if self.rank and self.alpha <= 0:
            raise ValueError(f"lora.alpha={self.alpha!r} must be > 0")
        bad = [t for t in self.targets if t not in LORA_TARGETS]
        if bad or (self.rank and not self.targets) or len(set(self.targets)) < len(self.targets):
            raise ValueError(f"lora.targets={list(self.targets)!r}: need distinct names from "
                             f"{', '.join(LORA_TARGETS)}")

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def scale(self) -> float:
        return self.alpha / self.rank if self.rank else 0.0


@dataclasses.dataclass(frozen=True)
class ModelSection:
    spec: str  # built-in name, HF folder or .gguf file
    dtype: str  # float32 | bfloat16 (parameters and compute)
    max_cache_len: int  # KV-cache slots per row (prompt bucket + new tokens)
    seed: int  # initialisation seed of tiny-random
    remat: bool  # rematerialize decoder blocks in the backward pass
    attention: str  # auto | xla | cudnn | splash: the self-attention kernel
    lora: LoraConfig  # low-rank adapters (rank 0 = full fine-tuning)


@dataclasses.dataclass(frozen=True)
class SelfPlaySection:
    """Rollout and reward settings of a self-play step: the `selfplay` section."""

    goals_per_step: int  # G
    attacks_per_goal: int  # A, the attacker's group size
    responses_per_attack: int  # R, the defender's group size
    greedy_responses: int  # the first k of each defender group decode greedily
    attacker_max_tokens: int
    defender_max_tokens: int
    max_prompt_tokens: int
    temperature: float
    top_p: float
    top_k: int
    attacker_brief: str
    defender_system_prompt: str
    benign_per_step: int
    benign_twins: bool  # benign slots go first to same-form twins of the goals (data/twins.py)
    invalid_attack_penalty: float
    min_attack_chars: int
    min_intent_similarity: float
    intent_encoder: str
    min_on_topic_similarity: float  # benign answers at or above it are on-topic (0 = no check)
    withholding_check: bool  # a decline must also withhold, by judge.withholding's classifier
    direct_attacks_per_goal: int  # attack slots per goal that carry the goal verbatim
    static_attacks: bool
    attacker_weight: float
    defender_weight: float
    benign_weight: float  # loss weight of benign rows, relative to the defender's
    scale_by_std: bool
    drop_zero_variance: bool
    asr_threshold: float
    oversample_goals: int  # dynamic sampling: extra goals rolled out, least informative dropped

    @property
    def needs_encoder(self) -> bool:
        """The intent check, the benign rows' on-topic check or the withholding check needs
        the sentence encoder."""
        return (self.min_intent_similarity > 0 or self.withholding_check
                or (self.min_on_topic_similarity > 0 and self.benign_per_step > 0))

    @property
    def update_temperature(self) -> float:
        """The temperature the update scores tokens under: the sampling one (1 when greedy)."""
        return self.temperature or 1.0


@dataclasses.dataclass(frozen=True)
class RlSection:
    """Loss and optimizer settings of the update: the `rl` section. It builds its optimizer
    for a run of `num_steps` updates (`optimizer(num_steps)`)."""

    learning_rate: float
    warmup_steps: int
    schedule: str  # "constant" after warmup, or "cosine" decay to 10%
    weight_decay: float
    b1: float
    b2: float
    max_grad_norm: float
    clip_eps_low: float
    clip_eps_high: float
    beta: float  # KL (k3) coefficient against the frozen reference
    reference: str  # the KL reference: "warm_start" (the warm start's weights) or "base"
    aggregation: str  # "token" or "sequence"
    micro_batches: int
    rank_weight: float  # weight of the decline-ranking loss (rl/rank.py); 0 = off
    rank_prompts: int  # harmful goals, and as many benign prompts, ranked per step
    rank_declines: tuple[str, ...]  # the decline texts whose log-probability is ranked
    rank_twins: bool  # benign prompts in each harmful goal's form (data.twins) join the ranking
    rank_anchor: float  # weight of the ranked prompts' last-state drift from the reference
    rank_calibration: float  # weight of the loss putting each ranked s on its side of log ½

    def learning_rate_schedule(self, num_steps: int) -> optax.Schedule:
        """Linear warmup from 0, then constant or cosine decay to 10% at `num_steps`."""
        if self.schedule == "cosine":
            return optax.warmup_cosine_decay_schedule(
                0.0, self.learning_rate, max(self.warmup_steps, 1), max(num_steps, 2),
                end_value=0.1 * self.learning_rate)
        if self.warmup_steps == 0:
            return optax.constant_schedule(self.learning_rate)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, self.learning_rate, self.warmup_steps),
             optax.constant_schedule(self.learning_rate)], [self.warmup_steps])

    def optimizer(self, num_steps: int) -> optax.GradientTransformation:
        """Global-norm clipping then AdamW (moments in float32 whatever the parameter dtype)
        on the schedule of a `num_steps`-update run."""
        return optax.chain(
            optax.clip_by_global_norm(self.max_grad_norm),
            optax.adamw(self.learning_rate_schedule(num_steps), b1=self.b1, b2=self.b2,
                        weight_decay=self.weight_decay, mu_dtype=jnp.float32))


@dataclasses.dataclass(frozen=True)
class JudgeSection:
    """The `judge` section: which judge scores the defender, and its settings."""

    name: str
    model: str
    url: str
    remote_model: str
    api_key_env: str
    timeout_s: float
    max_concurrency: int
    max_retries: int
    max_excluded_fraction: float
    batch_timeout_s: float
    min_answer_mass: float
    instruction_source: str
    scoring: str
    llama_guard_version: int
    max_tokens: int
    batch_size: int
    max_cache_len: int
    refusal_score: float
    compliance_score: float
    empty_score: float
    strict: bool  # the refusal judge's decline check that apologies cannot fake
    partial_refusal_score: float

    @property
    def model_based(self) -> bool:
        return self.name != "refusal"


def check_judge_section(c: JudgeSection) -> None:
    """Raises ValueError naming the `judge.*` field of a bad value."""
    choices = {"name": JUDGE_NAMES, "instruction_source": ("goal", "attack"),
               "scoring": JUDGE_SCORINGS, "llama_guard_version": (3, 4)}
    for field, valid in choices.items():
        if getattr(c, field) not in valid:
            raise ValueError(f"config field judge.{field}={getattr(c, field)!r}; valid: "
                             f"{', '.join(map(str, valid))}")
    if c.model and c.url:
        raise ValueError(f"judge.model={c.model!r} and judge.url={c.url!r} are both set; a "
                         "judge runs in this process or on a server, not both")
    if c.url and not c.remote_model:
        raise ValueError("judge.url needs judge.remote_model, the model name the server serves")
    if not 0 < c.min_answer_mass <= 1:
        raise ValueError(f"config field judge.min_answer_mass={c.min_answer_mass!r} must be in "
                         "(0, 1]")
    if not 0 <= c.max_excluded_fraction <= 1:
        raise ValueError(f"config field judge.max_excluded_fraction={c.max_excluded_fraction!r} "
                         "must be in [0, 1]")
    for field in ("timeout_s", "batch_timeout_s", "max_concurrency", "max_tokens", "batch_size",
                  "max_cache_len"):
        if not getattr(c, field) > 0:
            raise ValueError(f"config field judge.{field}={getattr(c, field)!r} must be > 0")
    if c.max_retries < 0:
        raise ValueError(f"config field judge.max_retries={c.max_retries!r} must be ≥ 0")


def is_int(value: Any) -> bool:
    """An integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real number, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class ReplaySection:
    """Settings of the replay pool (the `replay` section); validated on construction."""

    capacity: int  # most items kept; beyond it the least worth replaying are evicted
    replay_per_step: int  # items `select()` returns by default; 0 disables replay
    admit_score: float  # judge score (1..5 scale) at or above which a response failed
    ucb_c: float  # exploration weight c of the UCB bonus
    seed: int  # seed of the tie-breaking random generator

    def __post_init__(self) -> None:
        for name, minimum in (("capacity", 1), ("replay_per_step", 0), ("seed", 0)):
            value = getattr(self, name)
            if not is_int(value) or value < minimum:
                raise ValueError(f"replay config field {name}={value!r}; valid: an int ≥ "
                                 f"{minimum}")
        if not is_real(self.admit_score) or not 1.0 <= self.admit_score <= 5.0:
            raise ValueError(f"replay config field admit_score={self.admit_score!r}; valid: a "
                             "number in [1, 5] (the judge's score scale)")
        if not is_real(self.ucb_c) or not (math.isfinite(self.ucb_c) and self.ucb_c >= 0):
            raise ValueError(f"replay config field ucb_c={self.ucb_c!r}; valid: a finite "
                             "number ≥ 0")

    def to_json(self) -> dict[str, int | float]:
        """The fields as plain Python numbers."""
        return {"capacity": int(self.capacity), "replay_per_step": int(self.replay_per_step),
                "admit_score": float(self.admit_score), "ucb_c": float(self.ucb_c),
                "seed": int(self.seed)}


@dataclasses.dataclass(frozen=True)
class TrainSection:
    num_steps: int
    seed: int  # rollout sampling seed
    log_every: int  # console / TensorBoard logging period (metrics.jsonl gets every step)
    sample_every: int  # write (goal, attack, response, score) rows every N steps
    samples_per_log: int
    max_bad_steps: int  # stop after this many non-finite updates in a row
    max_benign_refusal: float  # collapse monitor limits (see default_config.py)
    max_attacker_refusal: float
    collapse_patience: int
    stop_on_collapse: bool
    diversity_window: int


@dataclasses.dataclass(frozen=True)
class SftSection:
    """The supervised warm start before self-play and the data of supervised refusal training
    (the `sft` section; ssp_jax/sft.py builds its `SftSettings` from it)."""

    warm_start_steps: int  # SFT updates before self-play, out of train.num_steps (0 = none)
    prompts: int  # distinct harmful goals, and as many benign prompts, to sample answers for
    samples: int  # answers sampled per prompt; the first that passes the checks is kept
    on_topic_threshold: float  # cos(prompt, answer) a kept benign answer needs (0 = no check)
    refusal_system_prompt: str  # asks the base model for declines (generation only)
    batch_size: int  # prompts per sampling call
    declines: str  # "sampled": the base model's own; "written": written_declines in turn
    written_declines: tuple[str, ...]  # the decline texts of declines="written"
    answer_share: float  # share of each update's rows that are benign answers (0 = as self-play)


@dataclasses.dataclass(frozen=True)
class CkptSection:
    every_steps: int  # 0 = only at the end
    keep: int  # latest checkpoints kept
    restore_from: str  # a checkpoint step folder to start from ("" = resume the workdir)
    async_save: bool


@dataclasses.dataclass(frozen=True)
class EvalSection:
    every_steps: int  # 0 = off; else evaluate on held-out goals every N steps
    num_goals: int  # held-out goals per evaluation


@dataclasses.dataclass(frozen=True)
class MeshSection:
    data: int
    fsdp: int  # -1 = all remaining devices
    tensor: int


class ConfigError(ValueError):
    """A bad field in the training config."""


def _check_type(path: str, value: Any, annotation: Any) -> Any:
    """Returns `value` converted to the field type (int -> float allowed; a list or tuple
    -> `tuple[T, ...]`) or raises."""
    if typing.get_origin(annotation) is tuple:
        item = typing.get_args(annotation)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field {path}={value!r} has type {type(value).__name__}; "
                              f"expected a sequence of {item.__name__}")
        return tuple(_check_type(f"{path}[{i}]", v, item) for i, v in enumerate(value))
    kinds = typing.get_args(annotation) or (annotation,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    for kind in kinds:
        if dataclasses.is_dataclass(kind) and isinstance(value, kind):  # a built sub-section
            return value
        if kind is type(None) and value is None:
            return value
        if kind in (int, float, str, bool) and type(value) is kind:
            return value
    names = " or ".join(getattr(k, "__name__", str(k)) for k in kinds)
    raise ConfigError(f"config field {path}={value!r} has type {type(value).__name__}; "
                      f"expected {names}")


S = TypeVar("S")


def build_section(cls: type[S], raw: Mapping[str, Any], name: str) -> S:
    """`raw` (fields of section `name`; a missing one keeps its default, if it has one) as a
    `cls`, type-checked; ConfigError names a bad or unknown field."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"unknown config field(s) {', '.join(f'{name}.{k}' for k in unknown)}; "
                          f"valid: {', '.join(sorted(fields))}")
    values = {k: _check_type(f"{name}.{k}", v, hints[k]) for k, v in raw.items()}
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"config section {name}: {e}") from None


def section(cls: type[S], section_name: str, /, **overrides: Any) -> S:
    """Section `section_name` of the default config as a `cls`, with `overrides` (tests,
    tools that need one section without a config file)."""
    defaults = plain_data(default_config.get_config())[section_name]
    return build_section(cls, {**defaults, **overrides}, section_name)


def judge_section(**overrides: Any) -> JudgeSection:
    """The default `judge` section with `overrides`."""
    return section(JudgeSection, "judge", **overrides)


def rl_section(**overrides: Any) -> RlSection:
    """The default `rl` section with `overrides`."""
    return section(RlSection, "rl", **overrides)


def replay_section(**overrides: Any) -> ReplaySection:
    """The default `replay` section with `overrides`."""
    return section(ReplaySection, "replay", **overrides)


@dataclasses.dataclass(frozen=True)
class StepLayout:
    """The shape of a self-play step, derived once from the validated config and the mesh:
    how many prompts each role gets, how they group, and how the update splits them."""

    goals: int  # G, goals in the trained batch
    rollout_goals: int  # goals rolled out: G plus the dynamic-sampling extra
    group_sizes: tuple[int, int]  # rows per group (attacker A, defender R)
    replay_rows: int  # replayed attacks per step (defender prompts)
    benign_prompts: int  # benign prompts per step (defender prompts)
    micro_batches: int  # gradient-accumulation slices of the update
    row_shards: int  # devices the update's groups are split over

    @classmethod
    def of(cls, cfg: "TrainConfig", row_shards: int) -> "StepLayout":
        """The layout of `cfg`'s steps on `row_shards` row shards."""
        sp = cfg.selfplay
        return cls(goals=sp.goals_per_step, rollout_goals=sp.goals_per_step + sp.oversample_goals,
                   group_sizes=(sp.attacks_per_goal, sp.responses_per_attack),
                   replay_rows=cfg.replay.replay_per_step, benign_prompts=sp.benign_per_step,
                   micro_batches=cfg.rl.micro_batches, row_shards=row_shards)

    def prompts(self, goals: int) -> tuple[int, int]:
        """Prompts per role (attacker, defender) when `goals` goals are rolled out."""
        return goals, goals * self.group_sizes[0] + self.replay_rows + self.benign_prompts

    @property
    def num_groups(self) -> tuple[int, int]:
        """Prompt groups per update batch (attacker, defender), each padded to a multiple of
        micro_batches x row_shards, so that every (strided) micro-batch spreads over all row
        shards."""
        multiple = self.micro_batches * self.row_shards
        return tuple(-(-n // multiple) * multiple for n in self.prompts(self.goals))
