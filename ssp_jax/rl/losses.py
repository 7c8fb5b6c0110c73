"""The clipped policy-gradient loss and its pieces, in `jax.numpy` (jit-friendly).

Per-position arrays are target-aligned `[B, T]`: entry `t` is about the token at `t + 1`
(see `ssp_jax.rl.batch`). `loss_mask` is 1 on completion tokens and 0 on prompt and padding;
masked positions contribute nothing to any sum or gradient, whatever values they hold (they
are replaced by zeros before any arithmetic, so even inf/NaN there is harmless).

`policy_loss_terms` returns sums together with their denominators. Summing the terms of
several micro-batches and dividing once (`finalize`) gives exactly the full-batch result.
The denominators are role-weighted, so the loss is a weighted mean: a row of weight 0 (an
excluded row, a direct slot's attacker sample, a dropped group, padding) adds nothing to
the numerator or the denominator and does not dilute the update.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

AGGREGATIONS = ("token", "sequence")


class LossTerms(NamedTuple):
    """Scalar f32 sums of one (micro-)batch; add them across micro-batches, then `finalize`."""

    loss_sum: jax.Array  # objective summed per the aggregation (role-weighted)
    denom: jax.Array  # role-weighted masked tokens ("token") or rows with a token ("sequence")
    kl_sum: jax.Array  # k3 KL to the reference over masked tokens (0 without a reference)
    clip_count: jax.Array  # masked tokens whose ratio clip was active
    ratio_sum: jax.Array  # ratio exp(logp - old_logp) over masked tokens
    token_count: jax.Array  # masked tokens


def _check_temperature(temperature: float) -> None:
    if isinstance(temperature, (int, float)) and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def token_logprobs(logits: jax.Array, targets: jax.Array, temperature: float) -> jax.Array:
    """Log-probability of each target under softmax(logits / temperature), in f32.

        logp[b, t] = z[b, t, y] - logsumexp_v z[b, t, v],   z = logits / temperature,
        y = targets[b, t]

    logits: `[B, T, V]` any float dtype; targets: `[B, T]` int. Returns `[B, T]` f32.
    """
    _check_temperature(temperature)
    z = logits.astype(jnp.float32) / temperature
    picked = jnp.take_along_axis(z, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(z, axis=-1)


def entropy_from_logits(logits: jax.Array, temperature: float) -> jax.Array:
    """Entropy of softmax(logits / temperature) at each position, in f32.

        H[b, t] = -sum_v p_v log p_v,   p = softmax(logits[b, t] / temperature)

    Vocabulary entries with zero probability (logit -inf) contribute 0.
    logits: `[B, T, V]`. Returns `[B, T]` f32.
    """
    _check_temperature(temperature)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
    p = jnp.exp(logp)
    return -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1)


def kl_k3(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """Schulman's k3 estimator of KL(policy || reference) per sampled token, always >= 0.

        d = ref_logp - logp,   k3 = exp(d) - d - 1

    Evaluated as `expm1(d) - d` for precision near d = 0 and clamped at 0 against rounding.
    logp, ref_logp: `[B, T]` f32 log-probs of the sampled tokens. Returns `[B, T]` f32.
    """
    d = ref_logp.astype(jnp.float32) - logp.astype(jnp.float32)
    return jnp.maximum(jnp.expm1(d) - d, 0.0)


def clipped_surrogate(ratio: jax.Array, advantages: jax.Array, clip_eps_low: float,
                      clip_eps_high: float) -> tuple[jax.Array, jax.Array]:
    """PPO's clipped objective, negated for minimisation, and where the clip bites.

        loss = -min(ρ A, clip(ρ, 1 - ε_low, 1 + ε_high) A)

    The min picks the clipped term, and the gradient is zero, exactly when A > 0 and
    ρ > 1 + ε_high, or A < 0 and ρ < 1 - ε_low; everywhere else it is -ρ A. The code selects
    on that condition instead of calling `min`, so a ratio sitting on the boundary gets the
    full unclipped gradient (not half of it, as a tie in `min` would give).
    ratio: `[B, T]`; advantages: `[B, T]` or broadcastable.
    Returns `(loss [B, T] f32, clipped [B, T] bool)`.
    """
    clipped = ((advantages > 0) & (ratio > 1.0 + clip_eps_high)) | (
        (advantages < 0) & (ratio < 1.0 - clip_eps_low))
    clipped_ratio = jnp.clip(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high)
    loss = -jnp.where(clipped, clipped_ratio * advantages, ratio * advantages)
    return loss, clipped


def policy_loss_terms(logp: jax.Array, old_logp: jax.Array, ref_logp: jax.Array | None,
                      advantages: jax.Array, loss_mask: jax.Array, role_weight: jax.Array, *,
                      clip_eps_low: float, clip_eps_high: float, beta: float,
                      aggregation: str) -> LossTerms:
    """Sums of the clipped policy-gradient loss of one (micro-)batch, with denominators.

    Per token (ρ = exp(logp - old_logp), A = the row's advantage, w = the row's role weight):

        ℓ[b, t] = w_b · ( -min(ρ A, clip(ρ, 1 - ε_low, 1 + ε_high) A) + β · k3(logp, ref_logp) )

    The KL term is present only when beta > 0 (then `ref_logp` is required). With m the mask:
    - "token":    loss_sum = Σ_{b,t} m ℓ,                  denom = Σ_{b,t} m w_b
    - "sequence": loss_sum = Σ_b Σ_t m ℓ / max(Σ_t m, 1),  denom = Σ_{b: Σ_t m > 0} w_b
    so loss_sum / denom is the mean over weighted tokens (rows): weights [1, 0] give the
    first row's loss alone, not half of it.

    logp, old_logp, ref_logp: `[B, T]` f32 log-probs of the sampled tokens (policy, sampler,
    frozen reference); advantages: `[B]` f32; loss_mask: `[B, T]` f32 (0/1);
    role_weight: `[B]` f32. Metric sums (kl_sum, clip_count, ratio_sum, token_count) are over
    masked tokens and not role-weighted; kl_sum is filled whenever `ref_logp` is given.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (log-probs under the reference policy)")
    mask = loss_mask.astype(jnp.float32)
    on = mask > 0

    def masked(x: jax.Array) -> jax.Array:  # zero off the mask, before any arithmetic
        return jnp.where(on, x.astype(jnp.float32), 0.0)

    logp = masked(logp)
    ratio = jnp.exp(logp - masked(old_logp))
    adv = advantages.astype(jnp.float32)[:, None]
    per_token, clipped = clipped_surrogate(ratio, adv, clip_eps_low, clip_eps_high)
    kl_sum = jnp.float32(0.0)
    if ref_logp is not None:
        kl = kl_k3(logp, masked(ref_logp))
        kl_sum = jnp.sum(kl * mask)
        if beta > 0:
            per_token = per_token + beta * kl
    weight = role_weight.astype(jnp.float32)
    per_token = per_token * mask * weight[:, None]
    row_tokens = jnp.sum(mask, axis=1)
    if aggregation == "token":
        loss_sum = jnp.sum(per_token)
        denom = jnp.sum(row_tokens * weight)
    else:
        loss_sum = jnp.sum(jnp.sum(per_token, axis=1) / jnp.maximum(row_tokens, 1.0))
        denom = jnp.sum(jnp.where(row_tokens > 0, weight, 0.0))
    return LossTerms(
        loss_sum=loss_sum,
        denom=denom,
        kl_sum=kl_sum,
        clip_count=jnp.sum(jnp.where(clipped & on, mask, 0.0)),
        ratio_sum=jnp.sum(ratio * mask),
        token_count=jnp.sum(row_tokens),
    )


def safe_denominator(denom: jax.Array) -> jax.Array:
    """`denom` where it is > 0, else 1: an all-zero-weight or fully masked batch gives a loss
    (and gradient) of 0, not NaN. A weighted denominator may lie in (0, 1) (weights below 1)
    and is used as it is."""
    return jnp.where(denom > 0, denom, 1.0)


def finalize(terms: LossTerms) -> dict[str, jax.Array]:
    """Means from (accumulated) sums: `loss` = loss_sum / denom (`safe_denominator`); `kl`,
    `clip_fraction` and `ratio_mean` per masked token; `token_count`. Empty counts count as
    1, so a fully masked batch reports 0, not NaN."""
    tokens = jnp.maximum(terms.token_count, 1.0)
    return {
        "loss": terms.loss_sum / safe_denominator(terms.denom),
        "kl": terms.kl_sum / tokens,
        "clip_fraction": terms.clip_count / tokens,
        "ratio_mean": terms.ratio_sum / tokens,
        "token_count": terms.token_count,
    }
