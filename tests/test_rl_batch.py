"""Packing groups of (shared prompt, sampled completions) into the training layout."""

import numpy as np
import pytest

from ssp_jax.rl.batch import pack_groups


def pack(prompts, completions, logps=None, **kw):
    logps = logps or [np.zeros(len(c)) for c in completions]
    n = len(completions)
    args = dict(group_size=2, num_groups=3, prompt_length=4, completion_length=3, pad_id=0)
    args.update(kw)
    return pack_groups(prompts, completions, logps, np.arange(n, dtype=np.float32),
                       np.full(n, 0.5, np.float32), **args)


def test_groups_store_each_prompt_once_and_rows_group_major():
    batch = pack([[7, 8, 9], [5]], [[1, 2], [3], [4, 6, 2], []],
                 [np.array([-0.1, -0.2]), np.array([-0.3]), np.array([-0.4, -0.5, -0.6]),
                  np.zeros(0)])
    np.testing.assert_array_equal(batch.prompt_tokens, [[7, 8, 9, 0], [5, 0, 0, 0], [0] * 4])
    np.testing.assert_array_equal(batch.prompt_mask.sum(axis=1), [3, 1, 0])
    np.testing.assert_array_equal(batch.tokens, [[1, 2, 0], [3, 0, 0], [4, 6, 2], [0, 0, 0],
                                                 [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(batch.loss_mask, [[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0],
                                                    [0, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(batch.old_logp[:3], [[-0.1, -0.2, 0], [-0.3, 0, 0],
                                                    [-0.4, -0.5, -0.6]])
    np.testing.assert_allclose(batch.advantages, [0, 1, 2, 3, 0, 0])
    np.testing.assert_allclose(batch.role_weight, [0.5] * 4 + [0, 0])


def test_inputs_that_do_not_fit_are_errors():
    with pytest.raises(ValueError, match="1 to 4"):
        pack([[1, 2, 3, 4, 5]], [[1], [2]])
    with pytest.raises(ValueError, match="1 to 4"):
        pack([[]], [[1], [2]])
    with pytest.raises(ValueError, match="more than 3"):
        pack([[1]], [[1, 2, 3, 4], [2]])
    with pytest.raises(ValueError, match="do not fit"):
        pack([[1]] * 4, [[1]] * 8)
    with pytest.raises(ValueError, match="need 4 completions"):
        pack([[1], [2]], [[1]] * 3)
    with pytest.raises(ValueError, match="log-probs"):
        pack([[1]], [[1, 2], [3]], [np.zeros(1), np.zeros(1)])
