"""The decline-ranking loss: harmful prompts must make a decline more likely than benign ones.

The group-relative advantage compares answers to one prompt, never a harmful prompt with a
harmless one, so it can move how often the policy declines but not which prompts it declines:
on SmolLM2 every self-play and SFT arm kept the base model's ranking of held-out harmful goals
above benign imperatives by the log-probability of a decline (AUROC 0.64-0.72) while a linear
probe on the same model's features separated them at 0.96 (benchmarks/RESULTS.md, "Can the
model tell harm from form?"). This loss trains that ranking directly.

Per prompt m (a defender prompt of a harmful goal or of a benign request), teacher-forced:

    s_m = (1 / K) Σ_k log p(decline_k | prompt_m)       (K fixed decline texts, summed tokens)

(log-probabilities of logits / the update's temperature, as the policy-gradient terms'),

and over every (harmful h, benign b) pair of the batch, the pairwise logistic (RankNet) loss

    L = mean_{h, b} softplus(s_b - s_h)

which only ranks: adding a constant to every s leaves L unchanged, so how often the policy
declines stays the reward's business. The batch is a `RankBatch` in the grouped layout of
`rl.batch` (each prompt once, its K declines as the group's rows).

Trained alone, the ranking was learned from the prompts' form: after it, a probe on the
policy's own last prompt states flagged 37-47% of benign imperatives as harmful (6% on the base
model). The anchor (`rl.rank_anchor`, weight μ) adds

    μ · mean_m ||h_m - h_ref,m||² / ||h_ref,m||²          (`state_drift`)

over the batch's prompts, h the final-norm state at the prompt's last token (the state that
picks the answer's first token, where the probe reads) under the policy and under the frozen KL
reference: the features that hold the harm distinction stay, and the ranking has to be learned
as a read-out of them.

The ranking saturates (every pair of the step in order) long before greedy answers decline most
held-out harm, and it cannot move the rate. The calibration term (`rl.rank_calibration`, weight
ν) adds, over the valid prompts,

    ν · mean_m [ y_m softplus(log ½ − s_m) + (1 − y_m) softplus(s_m − log ½) ]
                                                        (`calibration_loss`; y_m = 1 if harmful)

which lifts each harmful goal's s above log ½ and pushes each benign prompt's below: with one
one-token decline, p > ½ makes it the greedy answer's first token.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ssp_jax.rl.batch import pad_prompts

DECLINE_TOKENS = 32  # every decline is padded to this many tokens (one compiled shape)


def rank_batch_prompts(per_side: int, row_shards: int) -> int:
    """Prompts M of a ranking batch: 2 x `per_side`, rounded up to a multiple of the row
    shards so that the batch splits evenly over the mesh's batch axes."""
    return -(-2 * per_side // row_shards) * row_shards


class RankBatch(NamedTuple):
    """M prompts, each with the same K decline texts as its group of rows. Padding prompts
    (`valid` 0) are neither harmful nor benign."""

    prompt_tokens: np.ndarray  # [M, P] int32, right-padded
    prompt_mask: np.ndarray  # [M, P] bool
    tokens: np.ndarray  # [M * K, C] int32: the K declines after each prompt
    loss_mask: np.ndarray  # [M * K, C] f32, 1 on decline tokens
    harmful: np.ndarray  # [M] f32: 1 for a harmful seed, 0 for a benign prompt
    valid: np.ndarray  # [M] f32: 1 for a real prompt, 0 for padding


class RankTerms(NamedTuple):
    """Scalars f32 of one ranking batch."""

    loss: jax.Array  # mean pairwise logistic loss (0 without a pair)
    accuracy: jax.Array  # share of (harmful, benign) pairs with s_h > s_b
    gap: jax.Array  # mean s over harmful prompts minus mean s over benign ones


def pack_rank_batch(harmful: Sequence[Sequence[int]], benign: Sequence[Sequence[int]],
                    declines: Sequence[Sequence[int]], *, num_prompts: int, prompt_length: int,
                    pad_id: int) -> RankBatch:
    """Packs harmful then benign prompt token ids, padded to `num_prompts` prompts of
    `prompt_length` tokens, each followed by every decline of `declines` (token ids, padded to
    `DECLINE_TOKENS`). Too many prompts, an empty or too long prompt or decline, or no decline
    is an error."""
    prompts = [*harmful, *benign]
    if len(prompts) > num_prompts:
        raise ValueError(f"pack_rank_batch: {len(prompts)} prompts do not fit in "
                         f"{num_prompts}")
    if not declines or not all(0 < len(d) <= DECLINE_TOKENS for d in declines):
        raise ValueError(f"pack_rank_batch: need one or more declines of 1 to {DECLINE_TOKENS} "
                         f"tokens, got lengths {[len(d) for d in declines]}")
    k, c = len(declines), DECLINE_TOKENS
    prompt_tokens, prompt_mask = pad_prompts(prompts, num=num_prompts, length=prompt_length,
                                             pad_id=pad_id, caller="pack_rank_batch")
    one = np.full((k, c), pad_id, np.int32)
    one_mask = np.zeros((k, c), np.float32)
    for i, ids in enumerate(declines):
        one[i, :len(ids)] = ids
        one_mask[i, :len(ids)] = 1.0
    valid = np.zeros((num_prompts,), np.float32)
    valid[:len(prompts)] = 1.0
    is_harmful = np.zeros((num_prompts,), np.float32)
    is_harmful[:len(harmful)] = 1.0
    return RankBatch(prompt_tokens, prompt_mask, np.tile(one, (num_prompts, 1)),
                     np.tile(one_mask, (num_prompts, 1)), is_harmful, valid)


def decline_scores(logp: jax.Array, loss_mask: jax.Array, declines: int) -> jax.Array:
    """s `[M]` f32: the mean over each prompt's `declines` rows of the row's summed masked
    log-probabilities. logp, loss_mask: `[M * declines, C]`."""
    per_row = jnp.sum(jnp.where(loss_mask > 0, logp.astype(jnp.float32), 0.0), axis=-1)
    return per_row.reshape(-1, declines).mean(axis=-1)


def _weighted_mean(x: jax.Array, w: jax.Array) -> jax.Array:
    """Σ x·w / Σ w (f32 scalar; 0 when every weight is 0). x, w: `[M]`."""
    return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)


def state_drift(states: jax.Array, ref_states: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean over valid prompts of ||h - h_ref||² / ||h_ref||² (f32 scalar; 0 without one):
    how far `states` `[M, D]` moved from `ref_states` `[M, D]`. valid: `[M]` f32."""
    h, ref = states.astype(jnp.float32), ref_states.astype(jnp.float32)
    per_prompt = jnp.sum((h - ref) ** 2, axis=-1) / jnp.maximum(jnp.sum(ref ** 2, axis=-1), 1e-6)
    return _weighted_mean(per_prompt, valid)


LEVEL = float(np.log(0.5))  # the calibration's boundary for s


def calibration_loss(scores: jax.Array, harmful: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean over valid prompts of softplus(LEVEL − s) for a harmful one and softplus(s − LEVEL)
    for a benign one (f32 scalar; 0 without a prompt). scores, harmful, valid: `[M]` f32."""
    side = jnp.where(harmful > 0, LEVEL - scores, scores - LEVEL)
    return _weighted_mean(jax.nn.softplus(side), valid)


def rank_terms(scores: jax.Array, harmful: jax.Array, valid: jax.Array) -> RankTerms:
    """The pairwise logistic loss over every (harmful, benign) pair of valid prompts, with its
    pair accuracy and score gap. scores, harmful, valid: `[M]` f32."""
    h = harmful * valid
    b = (1.0 - harmful) * valid
    pairs = h[:, None] * b[None, :]  # [M, M]: row harmful, column benign
    n_pairs = jnp.sum(pairs)
    diff = scores[:, None] - scores[None, :]  # s_h - s_b
    per_pair = jnp.where(pairs > 0, jax.nn.softplus(-diff), 0.0)
    safe = jnp.maximum(n_pairs, 1.0)
    return RankTerms(loss=jnp.sum(per_pair) / safe,
                     accuracy=jnp.sum(jnp.where(diff > 0, pairs, 0.0)) / safe,
                     gap=_weighted_mean(scores, h) - _weighted_mean(scores, b))
