"""Packs groups of (shared prompt, S sampled completions) into fixed-shape training arrays.

GRPO samples S completions of each prompt, so the batch stores each prompt once and lets the
S completions attend to it (`models.transformer.completion_hidden_states`): the prompt's tokens
go through the model once per group instead of once per row.

Layout, for N groups of S completions (rows are group-major: row r = n * S + s belongs to
group n = r // S):
- `prompt_tokens [N, P]`, right-padded, with `prompt_mask`;
- `tokens [N * S, C]`: the completions, right-padded to C, the role's generation limit.
Window entry k of row r is about the completion token `tokens[r, k]`: entry 0 is predicted
from the prompt's last token, entry k > 0 from completion token k - 1.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class TrainBatch(NamedTuple):
    """One update's data. N groups of S rows; padding groups and rows have zero weight and
    mask."""

    prompt_tokens: np.ndarray  # [N, P] int32
    prompt_mask: np.ndarray  # [N, P] bool, True on real prompt tokens
    tokens: np.ndarray  # [N * S, C] int32 completions
    loss_mask: np.ndarray  # [N * S, C] f32, 1 on completion tokens
    old_logp: np.ndarray  # [N * S, C] f32, sampler log-prob of each token (0 off the mask)
    advantages: np.ndarray  # [N * S] f32
    role_weight: np.ndarray  # [N * S] f32, per-role loss weight (0 for padding rows)


def pad_prompts(prompts: Sequence[Sequence[int]], *, num: int, length: int, pad_id: int,
                caller: str) -> tuple[np.ndarray, np.ndarray]:
    """`[num, length]` int32 right-padded prompt tokens and their bool mask; rows past
    `len(prompts)` are padding. An empty prompt or one longer than `length` is an error that
    names `caller`."""
    tokens = np.full((num, length), pad_id, np.int32)
    mask = np.zeros((num, length), bool)
    for i, prompt in enumerate(prompts):
        if not 0 < len(prompt) <= length:
            raise ValueError(f"{caller}: prompt {i} has {len(prompt)} tokens; it must have 1 to "
                             f"{length}")
        tokens[i, :len(prompt)] = prompt
        mask[i, :len(prompt)] = True
    return tokens, mask


def pack_groups(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                completion_logps: Sequence[np.ndarray], advantages: np.ndarray,
                role_weight: np.ndarray, *, group_size: int, num_groups: int,
                prompt_length: int, completion_length: int, pad_id: int) -> TrainBatch:
    """Packs `len(prompts)` groups; group n's rows are
    `completions[n * group_size:(n + 1) * group_size]` (and so are the log-probs, advantages
    and weights). Groups past `len(prompts)` are padding. An empty prompt, a prompt longer than
    `prompt_length` or a completion longer than `completion_length` is an error."""
    n, s = len(prompts), group_size
    rows = n * s
    if not (rows == len(completions) == len(completion_logps) == len(advantages)
            == len(role_weight)):
        raise ValueError(f"pack_groups: {n} prompts x group size {s} need {rows} completions, "
                         f"log-probs, advantages and weights; got {len(completions)}, "
                         f"{len(completion_logps)}, {len(advantages)}, {len(role_weight)}")
    if n > num_groups:
        raise ValueError(f"pack_groups: {n} groups do not fit in a batch of {num_groups}")
    prompt_tokens, prompt_mask = pad_prompts(prompts, num=num_groups, length=prompt_length,
                                             pad_id=pad_id, caller="pack_groups")
    tokens = np.full((num_groups * s, completion_length), pad_id, np.int32)
    loss_mask = np.zeros((num_groups * s, completion_length), np.float32)
    old_logp = np.zeros((num_groups * s, completion_length), np.float32)
    for r, (completion, logp) in enumerate(zip(completions, completion_logps)):
        c = len(completion)
        if c > completion_length:
            raise ValueError(f"pack_groups: completion {r} has {c} tokens, more than "
                             f"{completion_length}")
        if len(logp) != c:
            raise ValueError(f"pack_groups: completion {r} has {c} tokens but {len(logp)} "
                             "log-probs")
        tokens[r, :c] = completion
        loss_mask[r, :c] = 1.0
        old_logp[r, :c] = logp
    adv = np.zeros((num_groups * s,), np.float32)
    weight = np.zeros((num_groups * s,), np.float32)
    adv[:rows] = advantages
    weight[:rows] = role_weight
    return TrainBatch(prompt_tokens, prompt_mask, tokens, loss_mask, old_logp, adv, weight)
