"""The policy update: one jitted, donated step over both roles' tokens.

Gradients of the summed loss are accumulated over `micro_batches` slices with `lax.scan` and
divided once by the summed (role-weighted) denominator of every micro-batch of every role's
batch, so accumulation is exact and the update is the weighted mean of `rl.losses`.
Micro-batches are strided (`split_micro_batches`): each keeps its groups spread over the
data-parallel shards. With `rl.rank_weight` > 0 the step also takes a decline-ranking batch and
adds that weight times its loss (`rl.rank`, one slice, not accumulated). A step whose loss or
gradients are not finite leaves parameters and optimizer state unchanged and says so in its
metrics (`update_skipped`).

With LoRA (`model_cfg.lora.rank > 0`) the train state holds only the adapters and their
optimizer state; the frozen base weights come in as the step's second argument, which is
both the base of the policy and, without adapters, the KL reference (one copy of the
weights).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssp_jax.models import lora
from ssp_jax.models.config import ModelConfig
from ssp_jax.models.transformer import (Params, completion_hidden_states, lm_logits,
                                        rms_norm)
from ssp_jax.rl import losses
from ssp_jax.rl.batch import TrainBatch
from ssp_jax.rl.rank import (RankBatch, calibration_loss, decline_scores, rank_terms,
                             state_drift)
from ssp_jax.sections import RlSection


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # scalar int32: updates applied or skipped so far
    params: Params
    opt_state: Any


def init_train_state(params: Params, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.int32(0), params=params, opt_state=optimizer.init(params))


def train_state_shardings(params: Params, optimizer: optax.GradientTransformation) -> Any:
    """Shardings of `init_train_state(params)` for parameters placed on a mesh: optimizer
    moments like their parameters, everything else replicated. (Left to XLA, a jitted init
    replicates the moments.)"""
    param_shardings = jax.tree.map(lambda x: x.sharding, params)
    replicated = NamedSharding(jax.tree.leaves(param_shardings)[0].mesh, P())
    abstract = jax.eval_shape(lambda p: init_train_state(p, optimizer), params)
    opt_state = optax.tree_map_params(optimizer, lambda _, s: s, abstract.opt_state,
                                      param_shardings,
                                      transform_non_params=lambda _: replicated)
    return TrainState(step=replicated, params=param_shardings, opt_state=opt_state)


def completion_logprobs(params: Params, model_cfg: ModelConfig, prompt_tokens: jax.Array,
                        prompt_mask: jax.Array, tokens: jax.Array, temperature: float,
                        dropout_key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Log-probs `[N * S, C]` f32 of the completion tokens of a grouped batch (see
    `rl.batch`) and their logits `[N * S, C, V]`; only completion positions go through the LM
    head. `dropout_key` turns on LoRA dropout."""
    hidden = completion_hidden_states(params, model_cfg, prompt_tokens, prompt_mask, tokens,
                                      dropout_key)
    logits = lm_logits(params, model_cfg, hidden)
    return losses.token_logprobs(logits, tokens, temperature), logits


def split_micro_batches(batch: TrainBatch, n: int,
                        shardings: TrainBatch | None = None) -> TrainBatch:
    """Stacks `batch` into `n` micro-batches `[n, ...]`, strided: micro-batch m holds groups
    m, m + n, m + 2n, ... (each group's prompt and its S rows together). When the groups are
    sharded contiguously over D devices and N / n is divisible by D, every device holds
    N / (n D) groups of every micro-batch (a contiguous split would put each micro-batch on
    D / n devices, or one). `shardings` (the batch's NamedShardings) pins that layout."""
    groups = batch.prompt_tokens.shape[0]

    def split(x, s):
        per_group = x.shape[0] // groups  # 1 for prompt arrays, S for row arrays
        micro = x.reshape(groups // n, n, per_group, *x.shape[1:]).swapaxes(0, 1)
        micro = micro.reshape(n, (groups // n) * per_group, *x.shape[1:])
        if isinstance(s, NamedSharding):
            spec = (*s.spec, *[None] * (x.ndim - len(s.spec)))
            rows = spec[0] if isinstance(spec[0], tuple) else (spec[0],) if spec[0] else ()
            if micro.shape[1] % math.prod(s.mesh.shape[a] for a in rows) == 0:
                micro = jax.lax.with_sharding_constraint(
                    micro, NamedSharding(s.mesh, P(None, *spec)))
        return micro

    if shardings is None:
        return jax.tree.map(lambda x: split(x, None), batch)
    return jax.tree.map(split, batch, shardings)


def _tree_add(a: Any, b: Any) -> Any:
    return jax.tree.map(jnp.add, a, b)


def _micro_terms(params: Params, ref_params: Params | None, mb: TrainBatch,
                 key: jax.Array | None, *, model_cfg: ModelConfig, cfg: RlSection,
                 temperature: float) -> tuple[Params, tuple[losses.LossTerms, dict]]:
    """Float32 gradients of one micro-batch's summed loss, and its loss terms (sums with
    their denominators) plus entropy and log-prob drift sums. With adapters `params` are the
    adapters over the base `ref_params`; `key` turns on LoRA dropout."""
    adapters = model_cfg.lora.enabled

    def loss_fn(p):
        policy = lora.with_adapters(ref_params, p) if adapters else p
        logp, logits = completion_logprobs(policy, model_cfg, mb.prompt_tokens,
                                           mb.prompt_mask, mb.tokens, temperature, key)
        ref_logp = None
        if cfg.beta > 0:
            ref_logp, _ = completion_logprobs(jax.lax.stop_gradient(ref_params), model_cfg,
                                              mb.prompt_tokens, mb.prompt_mask, mb.tokens,
                                              temperature)
        terms = losses.policy_loss_terms(
            logp, mb.old_logp, ref_logp, mb.advantages, mb.loss_mask, mb.role_weight,
            clip_eps_low=cfg.clip_eps_low, clip_eps_high=cfg.clip_eps_high, beta=cfg.beta,
            aggregation=cfg.aggregation)
        entropy = losses.entropy_from_logits(jax.lax.stop_gradient(logits), temperature)
        extra = {"entropy_sum": jnp.sum(entropy * mb.loss_mask),
                 "logp_diff_sum": jnp.sum(jnp.abs(jax.lax.stop_gradient(logp) - mb.old_logp)
                                          * mb.loss_mask)}
        return terms.loss_sum, (terms, extra)

    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return jax.tree.map(lambda g: g.astype(jnp.float32), grads), aux


def _rank_grads(params: Params, ref_params: Params | None, rank: RankBatch, *,
                model_cfg: ModelConfig, weight: float, anchor: float, calibration: float,
                temperature: float) -> tuple[Params, dict[str, jax.Array]]:
    """Float32 gradients of `weight` x the decline-ranking loss (`rl.rank`) of one ranking
    batch, plus `anchor` x the drift of its last prompt states from `ref_params`' when
    `anchor` > 0 and `calibration` x its calibration loss when `calibration` > 0, and the
    metrics (`rank_loss`, `rank_accuracy`, `rank_gap`; `rank_drift`; `rank_calibration`)."""
    prompts = rank.prompt_tokens.shape[0]
    declines = rank.tokens.shape[0] // prompts
    if anchor > 0:
        # the reference's state at each prompt's last token: one completion token suffices
        ref_hidden = completion_hidden_states(ref_params, model_cfg, rank.prompt_tokens,
                                              rank.prompt_mask, rank.tokens[::declines, :1])
        ref_states = jax.lax.stop_gradient(rms_norm(ref_hidden[:, 0], ref_params["final_norm"],
                                                    model_cfg.rms_norm_eps))

    def loss_fn(p):
        policy = lora.with_adapters(ref_params, p) if model_cfg.lora.enabled else p
        hidden = completion_hidden_states(policy, model_cfg, rank.prompt_tokens,
                                          rank.prompt_mask, rank.tokens)
        logp = losses.token_logprobs(lm_logits(policy, model_cfg, hidden), rank.tokens,
                                     temperature)
        scores = decline_scores(logp, rank.loss_mask, declines)
        terms = rank_terms(scores, rank.harmful, rank.valid)
        metrics = {"rank_loss": terms.loss, "rank_accuracy": terms.accuracy,
                   "rank_gap": terms.gap}
        loss = weight * terms.loss
        if anchor > 0:
            first = hidden.reshape(prompts, declines, *hidden.shape[1:])[:, 0, 0]  # [M, D]
            states = rms_norm(first, policy["final_norm"], model_cfg.rms_norm_eps)
            metrics["rank_drift"] = state_drift(states, ref_states, rank.valid)
            loss = loss + anchor * metrics["rank_drift"]
        if calibration > 0:
            metrics["rank_calibration"] = calibration_loss(scores, rank.harmful, rank.valid)
            loss = loss + calibration * metrics["rank_calibration"]
        return loss, metrics

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return jax.tree.map(lambda g: g.astype(jnp.float32), grads), metrics


def apply_if_finite(state: TrainState, grads: Params, loss_sum: jax.Array,
                    optimizer: optax.GradientTransformation) -> tuple[TrainState, jax.Array,
                                                                      jax.Array]:
    """One optimizer step from mean `grads`, kept only when `loss_sum` and the gradient norm
    are finite (else the state comes back unchanged but for its step count). Returns
    (new state, gradient global norm f32, finite bool)."""
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss_sum) & jnp.isfinite(grad_norm)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(  # noqa: E731
        lambda a, b: jnp.where(finite, a, b), new, old)
    return (TrainState(step=state.step + 1, params=keep(params, state.params),
                       opt_state=keep(opt_state, state.opt_state)), grad_norm, finite)


def make_train_step(model_cfg: ModelConfig, cfg: RlSection,
                    optimizer: optax.GradientTransformation, *, temperature: float,
                    num_steps: int, state_shardings: Any = None, batch_shardings: Any = None,
                    ref_shardings: Any = None, rank_shardings: Any = None
                    ) -> Callable[[TrainState, Params | None, tuple[TrainBatch, ...],
                                   RankBatch | None], tuple[TrainState, dict]]:
    """Builds `train_step(state, ref_params, batches, rank) -> (state, metrics)`, jitted with
    the state donated. `batches` is a tuple of grouped TrainBatches (e.g. one per role, each with
    its own shapes) that make one update: their summed losses are divided by their summed
    denominators. `ref_params` is the frozen reference; it may be None when `cfg.beta == 0`,
    except with LoRA, where it is the base model the adapters (`state.params`) apply to.
    Each batch's groups must divide evenly into `cfg.micro_batches` (a micro-batch is a
    slice of whole groups). Log-probs are of logits / `temperature` (the sampling one);
    `optimizer` is `cfg.optimizer(num_steps)`, whose learning rate the metrics report.
    With `cfg.rank_weight` > 0, `rank` (a `rl.rank.RankBatch`, placed by `rank_shardings`)
    adds `rank_weight` x the decline-ranking loss to the update's mean loss; otherwise it is
    None."""
    schedule = cfg.learning_rate_schedule(num_steps)
    adapters = model_cfg.lora.enabled
    dropout = adapters and model_cfg.lora.dropout > 0

    micro_terms = functools.partial(_micro_terms, model_cfg=model_cfg, cfg=cfg,
                                    temperature=temperature)

    def batch_terms(params: Params, ref_params: Params | None, batch: TrainBatch,
                    shardings: TrainBatch | None, key: jax.Array | None):
        """Summed gradients and loss terms of one batch, over its micro-batches."""
        n = cfg.micro_batches
        micro = split_micro_batches(batch, n, shardings)
        keys = None if key is None else jax.random.split(key, n)
        grads, aux = micro_terms(params, ref_params, jax.tree.map(lambda x: x[0], micro),
                                 None if keys is None else keys[0])
        if n > 1:
            def body(carry, xs):
                g, a = micro_terms(params, ref_params, *xs)
                return (_tree_add(carry[0], g), _tree_add(carry[1], a)), None

            (grads, aux), _ = jax.lax.scan(
                body, (grads, aux),
                (jax.tree.map(lambda x: x[1:], micro), None if keys is None else keys[1:]))
        return grads, aux

    def train_step(state: TrainState, ref_params: Params | None,
                   batches: tuple[TrainBatch, ...], rank: RankBatch | None):
        shardings = batch_shardings or (None,) * len(batches)
        # LoRA dropout masks: a pure function of the step, so a resumed run draws the same
        keys = (jax.random.split(jax.random.fold_in(jax.random.key(0), state.step), len(batches))
                if dropout else [None] * len(batches))
        grads, aux = batch_terms(state.params, ref_params, batches[0], shardings[0], keys[0])
        for batch, batch_sharding, key in zip(batches[1:], shardings[1:], keys[1:]):
            g, a = batch_terms(state.params, ref_params, batch, batch_sharding, key)
            grads, aux = _tree_add(grads, g), _tree_add(aux, a)
        terms, extra = aux
        denom = losses.safe_denominator(terms.denom)  # summed over micro-batches and roles
        grads = jax.tree.map(lambda g: g / denom, grads)
        loss_sum, rank_metrics = terms.loss_sum, {}
        if cfg.rank_weight > 0:
            rank_g, rank_metrics = _rank_grads(state.params, ref_params, rank,
                                               model_cfg=model_cfg, weight=cfg.rank_weight,
                                               anchor=cfg.rank_anchor,
                                               calibration=cfg.rank_calibration,
                                               temperature=temperature)
            grads = _tree_add(grads, rank_g)
            loss_sum = loss_sum + rank_metrics["rank_loss"]
        new_state, grad_norm, finite = apply_if_finite(state, grads, loss_sum, optimizer)
        tokens = jnp.maximum(terms.token_count, 1.0)
        metrics = dict(losses.finalize(terms), **rank_metrics)
        metrics.update(grad_norm=grad_norm, learning_rate=schedule(state.step),
                       entropy=extra["entropy_sum"] / tokens,
                       logp_diff=extra["logp_diff_sum"] / tokens,
                       update_skipped=(~finite).astype(jnp.float32))
        return new_state, metrics

    if state_shardings is None:
        return jax.jit(train_step, donate_argnums=0)
    return jax.jit(train_step, donate_argnums=0,
                   in_shardings=(state_shardings, ref_shardings, batch_shardings,
                                 rank_shardings),
                   out_shardings=(state_shardings, None))
