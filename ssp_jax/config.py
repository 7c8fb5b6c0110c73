"""Validates an ml_collections training config once, at start-up, into typed dataclasses.

Every section becomes a frozen dataclass; unknown keys, wrong types and bad values fail here
with the field's dotted name, the bad value and what would be valid — before any model is
loaded or compiled.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from ssp_jax import default_config
from ssp_jax.sections import (ATTENTION_IMPLEMENTATIONS, DECLINE_SOURCES, KL_REFERENCES,
                              CkptSection, ConfigError, EvalSection, JudgeSection, LoraConfig,
                              MeshSection, ModelSection, ReplaySection, RlSection,
                              SelfPlaySection, SftSection, TrainSection, build_section,
                              check_judge_section, plain_data)

__all__ = ["ConfigError", "TrainConfig", "lora_config", "to_json", "unknown_override",
           "validate"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: ModelSection
    data: dict  # goal mixture (see ssp_jax.data.mixture.from_config)
    benign_data: dict  # benign prompts for the over-refusal guard (same shape)
    selfplay: SelfPlaySection
    rl: RlSection
    judge: JudgeSection
    replay: ReplaySection
    train: TrainSection
    sft: SftSection
    ckpt: CkptSection
    eval: EvalSection
    mesh: MeshSection

    @property
    def has_reference_model(self) -> bool:
        """The update holds a frozen reference model: the KL reference (`rl.beta` > 0) or, with
        LoRA, the base model the adapters apply to."""
        return self.rl.beta > 0 or self.model.lora.enabled

    @property
    def warm_start_reference(self) -> bool:
        """Self-play's KL reference is the warm start's weights (`rl.reference`), which the warm
        start saves to `workdir/reference` (validation allows it with full fine-tuning only)."""
        return (bool(self.sft.warm_start_steps) and self.rl.reference == "warm_start"
                and self.rl.beta > 0)


# reward-shaping keys that moved from `rl` to `selfplay` (named in the error for old configs)
_MOVED_TO_SELFPLAY = ("attacker_weight", "defender_weight", "scale_by_std",
                      "invalid_attack_penalty")
_CHOICES = {
    "model.dtype": ("float32", "bfloat16"),
    "model.attention": ATTENTION_IMPLEMENTATIONS,
    "rl.aggregation": ("token", "sequence"),
    "rl.schedule": ("constant", "cosine"),
    "sft.declines": DECLINE_SOURCES,
    "rl.reference": KL_REFERENCES,
}
_POSITIVE = ("selfplay.goals_per_step", "selfplay.attacks_per_goal",
             "selfplay.responses_per_attack", "selfplay.attacker_max_tokens",
             "selfplay.defender_max_tokens", "selfplay.max_prompt_tokens",
             "rl.micro_batches", "train.num_steps", "train.log_every", "train.sample_every",
             "train.max_bad_steps", "ckpt.keep", "model.max_cache_len", "rl.learning_rate",
             "rl.max_grad_norm", "train.collapse_patience", "train.diversity_window",
             "sft.prompts", "sft.samples", "sft.batch_size", "rl.rank_prompts")
_NON_NEGATIVE = ("selfplay.benign_per_step", "selfplay.oversample_goals",
                 "selfplay.direct_attacks_per_goal",
                 "selfplay.temperature", "selfplay.top_k", "rl.warmup_steps", "rl.weight_decay",
                 "rl.beta", "rl.clip_eps_low", "rl.clip_eps_high", "selfplay.attacker_weight",
                 "selfplay.defender_weight", "selfplay.benign_weight", "ckpt.every_steps",
                 "eval.every_steps", "eval.num_goals", "selfplay.min_attack_chars",
                 "train.max_benign_refusal", "train.max_attacker_refusal",
                 "sft.warm_start_steps", "rl.rank_weight", "rl.rank_anchor",
                 "rl.rank_calibration")


def lora_config(raw: Any) -> LoraConfig:
    """`model.lora` as a LoraConfig (targets: a list of projection names)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config field model.lora={raw!r} must be a dict with keys "
                          "rank, alpha, dropout, targets")
    return build_section(LoraConfig, raw, "model.lora")


def _value(cfg: TrainConfig, path: str) -> Any:
    section, field = path.split(".")
    return getattr(getattr(cfg, section), field)


def _check_direct_slots(attacks: int, direct: int) -> None:
    """Direct slots must leave the attacker at least two rows per goal: a group of one has
    advantage 0 whatever its reward, so the attacker would not be trained (run 5 had A = 2,
    one direct slot). `selfplay.static_attacks` is the way to train no attacker."""
    if direct and attacks - direct < 2:
        left = max(attacks - direct, 0)
        raise ConfigError(
            f"config field selfplay.direct_attacks_per_goal={direct} leaves {left} attacker "
            f"row{'' if left == 1 else 's'} per goal of selfplay.attacks_per_goal={attacks}; "
            "fewer than two give every attacker row advantage 0 (no attacker training); "
            f"valid: 0 or at most selfplay.attacks_per_goal - 2 = {attacks - 2} (raise "
            "attacks_per_goal, or use selfplay.static_attacks for no attacker)")


def _check_greedy_responses(responses: int, greedy: int) -> None:
    """Greedy answers must leave each defender group a sampled one: the greedy answers of a
    group are all the same text, so a group of only greedy answers has equal rewards and
    advantage 0 (no defender training). At temperature 0 every answer is greedy already and
    this changes nothing (allowed)."""
    if not 0 <= greedy < responses:
        raise ConfigError(
            f"config field selfplay.greedy_responses={greedy} must be in [0, "
            f"selfplay.responses_per_attack - 1 = {responses - 1}]: greedy answers of one "
            "prompt are all the same text, so each defender group needs at least one sampled "
            "answer for a nonzero advantage (0 = off)")


def _check_sft(cfg: TrainConfig) -> None:
    """The warm start is the first part of the run, from the base model; its on-topic
    threshold is a cosine; the answer share leaves room for declines; its weights as the KL
    reference need full fine-tuning; written declines need texts."""
    steps, num_steps = cfg.sft.warm_start_steps, cfg.train.num_steps
    if steps >= num_steps:
        raise ConfigError(f"config field sft.warm_start_steps={steps} must be < train.num_steps="
                          f"{num_steps} (the SFT updates before self-play, which needs at least "
                          "one step), or 0 for no warm start")
    if steps and cfg.ckpt.restore_from:
        raise ConfigError(f"config field sft.warm_start_steps={steps} trains from the base model "
                          f"and ckpt.restore_from={cfg.ckpt.restore_from!r} from a checkpoint; "
                          "set one of them")
    if not 0 <= cfg.sft.on_topic_threshold <= 1:
        raise ConfigError(f"config field sft.on_topic_threshold={cfg.sft.on_topic_threshold!r} "
                          "must be a cosine in [0, 1] (0 = no check)")
    if not 0 <= cfg.sft.answer_share < 1:
        raise ConfigError(f"config field sft.answer_share={cfg.sft.answer_share!r} must be in "
                          "[0, 1): the share of each update's rows that are benign answers "
                          "(0 = the self-play batch's split)")
    if cfg.warm_start_reference and cfg.model.lora.enabled:
        raise ConfigError("config field rl.reference='warm_start' after a warm start "
                          f"(sft.warm_start_steps={steps}) is not supported with LoRA adapters "
                          "(model.lora), whose KL reference is the base model; set "
                          "rl.reference='base'")
    texts = cfg.sft.written_declines
    if cfg.sft.declines == "written" and (not texts or not all(t.strip() for t in texts)):
        raise ConfigError("config field sft.declines='written' needs sft.written_declines: one "
                          "or more non-blank texts")


def _check_values(cfg: TrainConfig) -> None:
    try:
        check_judge_section(cfg.judge)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for path, choices in _CHOICES.items():
        if _value(cfg, path) not in choices:
            raise ConfigError(f"config field {path}={_value(cfg, path)!r}; valid: "
                              f"{', '.join(choices)}")
    for path in _POSITIVE:
        v = _value(cfg, path)
        if not (v > 0 and math.isfinite(v)):
            raise ConfigError(f"config field {path}={v!r} must be > 0")
    for path in _NON_NEGATIVE:
        v = _value(cfg, path)
        if not (v >= 0 and math.isfinite(v)):
            raise ConfigError(f"config field {path}={v!r} must be ≥ 0")
    if not 0 < cfg.selfplay.top_p <= 1:
        raise ConfigError(f"config field selfplay.top_p={cfg.selfplay.top_p!r} must be in (0, 1]")
    _check_direct_slots(cfg.selfplay.attacks_per_goal, cfg.selfplay.direct_attacks_per_goal)
    _check_greedy_responses(cfg.selfplay.responses_per_attack, cfg.selfplay.greedy_responses)
    _check_sft(cfg)
    for field in ("min_intent_similarity", "min_on_topic_similarity"):
        if not -1 <= getattr(cfg.selfplay, field) <= 1:
            raise ConfigError(f"config field selfplay.{field}={getattr(cfg.selfplay, field)!r} "
                              "must be a cosine in [-1, 1] (0 = no check)")
    if cfg.judge.strict and cfg.judge.name != "refusal":
        raise ConfigError(f"config field judge.strict=True applies to judge.name='refusal' "
                          f"only, not {cfg.judge.name!r}")
    if "{goal}" not in cfg.selfplay.attacker_brief:
        raise ConfigError("config field selfplay.attacker_brief must contain '{goal}'")
    need = cfg.selfplay.max_prompt_tokens + 32 + max(cfg.selfplay.attacker_max_tokens,
                                                    cfg.selfplay.defender_max_tokens)
    if cfg.model.max_cache_len < need:
        raise ConfigError(
            f"config field model.max_cache_len={cfg.model.max_cache_len} is too small for "
            f"selfplay.max_prompt_tokens + max tokens (+ bucket slack): need ≥ {need}")
    if cfg.judge.partial_refusal_score != cfg.judge.compliance_score and not cfg.judge.strict:
        raise ConfigError(f"config field judge.partial_refusal_score="
                          f"{cfg.judge.partial_refusal_score!r} needs judge.strict=True (it "
                          "scores what the default detector calls a refusal and the strict "
                          "check does not)")
    for score_path in ("judge.refusal_score", "judge.compliance_score", "judge.empty_score",
                       "judge.partial_refusal_score", "selfplay.asr_threshold"):
        if not 1 <= _value(cfg, score_path) <= 5:
            raise ConfigError(f"config field {score_path}={_value(cfg, score_path)!r} must be "
                              "a judge score in [1, 5]")


def validate(config: Any) -> TrainConfig:
    """Turns the ml_collections config into a TrainConfig, or raises ConfigError."""
    raw = plain_data(config)
    sections = ("model", "data", "benign_data", "selfplay", "rl", "judge", "replay", "train",
                "sft", "ckpt", "eval", "mesh")
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"unknown config section(s) {', '.join(unknown)}; valid: "
                          f"{', '.join(sections)}")
    defaults = plain_data(default_config.get_config())

    def get(name: str) -> dict:  # a section: the default config's, then the config's values
        if name in ("data", "benign_data") and name in raw:
            return raw[name] or {}
        return {**defaults.get(name, {}), **(raw.get(name) or {})}

    rl_raw = get("rl")
    moved = sorted(k for k in _MOVED_TO_SELFPLAY if k in (raw.get("rl") or {}))
    if moved:
        raise ConfigError(f"config field(s) {', '.join(f'rl.{k}' for k in moved)} moved to the "
                          f"selfplay section (selfplay.{moved[0]}, ...), where all reward "
                          "shaping lives")
    derived = {"temperature": "selfplay.temperature", "total_steps": "train.num_steps"}
    for k in sorted(set(derived) & set(raw.get("rl") or {})):
        raise ConfigError(f"config field rl.{k} is set from {derived[k]}; set that instead")
    selfplay_raw = get("selfplay")
    for k, home in (("replay_per_step", "replay"), ("micro_batches", "rl"),
                    ("row_shards", "mesh")):
        if k in selfplay_raw:
            raise ConfigError(f"unknown config field selfplay.{k} (it follows {home})")
    selfplay = build_section(SelfPlaySection, selfplay_raw, "selfplay")
    rl = build_section(RlSection, rl_raw, "rl")
    if "data" not in raw:
        raise ConfigError("config has no data section (the goals to attack)")
    model_raw = dict(get("model"))
    lora = lora_config(model_raw.pop("lora", {}))
    cfg = TrainConfig(
        model=build_section(ModelSection, {**model_raw, "lora": lora}, "model"),
        data=raw["data"], benign_data=get("benign_data"),
        selfplay=selfplay, rl=rl, judge=build_section(JudgeSection, get("judge"), "judge"),
        replay=build_section(ReplaySection, get("replay"), "replay"),
        train=build_section(TrainSection, get("train"), "train"),
        sft=build_section(SftSection, get("sft"), "sft"),
        ckpt=build_section(CkptSection, get("ckpt"), "ckpt"),
        eval=build_section(EvalSection, get("eval"), "eval"),
        mesh=build_section(MeshSection, get("mesh"), "mesh"))
    _check_values(cfg)
    if cfg.selfplay.benign_per_step and not cfg.benign_data:
        raise ConfigError("selfplay.benign_per_step > 0 needs a benign_data section")
    if cfg.rl.rank_weight and not cfg.benign_data:
        raise ConfigError("rl.rank_weight > 0 needs a benign_data section: the decline ranking "
                          "sets benign prompts against the harmful goals")
    if cfg.rl.rank_weight and not (cfg.rl.rank_declines
                                   and all(t.strip() for t in cfg.rl.rank_declines)):
        raise ConfigError("config field rl.rank_declines needs one or more non-blank texts "
                          "when rl.rank_weight > 0")
    if cfg.rl.rank_anchor and not cfg.rl.rank_weight:
        raise ConfigError("rl.rank_anchor > 0 needs rl.rank_weight > 0: it anchors the "
                          "decline ranking's prompts")
    if cfg.rl.rank_calibration and not cfg.rl.rank_weight:
        raise ConfigError("rl.rank_calibration > 0 needs rl.rank_weight > 0: it calibrates the "
                          "decline ranking's scores")
    if cfg.rl.rank_anchor and not cfg.has_reference_model:
        raise ConfigError("rl.rank_anchor > 0 needs a reference model to anchor to: set "
                          "rl.beta > 0 (the KL reference) or train LoRA adapters (model.lora)")
    if cfg.selfplay.benign_twins and not cfg.selfplay.benign_per_step:
        raise ConfigError("selfplay.benign_twins needs selfplay.benign_per_step > 0: the twins "
                          "take the step's benign slots")
    return cfg


def to_json(cfg: TrainConfig) -> dict:
    """The resolved config as plain JSON data (saved with checkpoints and in the workdir)."""
    return dataclasses.asdict(cfg)


def unknown_override(config: Any, path: str) -> str | None:
    """For a command-line override `--config.PATH=...`: None when PATH names a field of
    `config`, else one line naming the field and the valid keys where PATH goes wrong."""
    node, parts = config, path.split(".")
    for i, key in enumerate(parts):
        where = ".".join(parts[:i])
        if not isinstance(node, Mapping) and not hasattr(node, "keys"):
            return f"config field {where} has no fields (cannot set {path})"
        keys = sorted(node.keys())
        if key not in keys:
            return (f"unknown config field {path}; valid {f'{where} keys' if where else 'sections'}"
                    f": {', '.join(keys)}")
        node = node[key]
    return None
