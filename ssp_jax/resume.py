"""What a resumed run may change against the config saved in its checkpoint.

A checkpoint fixes what its arrays were made from: the model (`model.spec`, `model.dtype`,
`model.seed`, the adapters' `model.lora.rank` and `model.lora.targets`: the reference
policy and the judge's frozen copy are rebuilt from them, the trained weights come from the
checkpoint) and the replay pool's random generator
(`replay.seed`: its state is in the checkpoint, so a new seed could not take effect). A
change to any of them stops the run with the fields named. `ckpt.restore_from` is consulted
only before the workdir has a checkpoint, so it is not compared.

Every other field is honoured from the resumed step on, and each change is logged against
the checkpoint's value: the `selfplay`, `rl` (the optimizer state's structure does not
depend on its hyper-parameters; the schedule reads the restored step), `judge`, `train`,
`ckpt`, `eval` and `mesh` sections are read afresh, `data` and `benign_data` draw from the
new mixture at the restored step, and the replay pool is rebuilt with the new `replay`
settings (items beyond a smaller capacity are evicted by the pool's own rule).

A supervised warm start (`sft.warm_start_steps`, ssp_jax/sft.py) does not resume: a workdir
whose newest checkpoint comes before the warm start's end (an SFT stopped between its
checkpoints, whose optimizer state is SFT's own) stops the run (`warm_start_error`).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

from ssp_jax.config import ConfigError

REFERENCE_DIR = "reference"  # workdir folder of a warm start's weights as the KL reference

log = logging.getLogger(__name__)

FIXED_ON_RESUME = ("model.spec", "model.dtype", "model.seed", "model.lora.rank",
                   "model.lora.targets", "replay.seed")
NOT_COMPARED = ("ckpt.restore_from",)
_MISSING = "<absent>"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {"section.field": value}; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]
                   ) -> dict[str, tuple[Any, Any]]:
    """{dotted field: (saved value, current value)} for every field that differs (a field on
    one side only shows `<absent>` on the other), sorted by field. Both sides are compared as
    JSON data, the form the checkpoint stores (a tuple equals the list it is saved as)."""
    old, new = (flatten(json.loads(json.dumps(tree))) for tree in (saved, current))
    return {k: (old.get(k, _MISSING), new.get(k, _MISSING)) for k in sorted(old.keys() | new.keys())
            if k not in NOT_COMPARED and old.get(k, _MISSING) != new.get(k, _MISSING)}


def fixed_change_error(changes: Mapping[str, tuple[Any, Any]], step: int) -> str | None:
    """The error naming every field of `changes` in FIXED_ON_RESUME, or None."""
    fixed = {k: v for k, v in changes.items() if k in FIXED_ON_RESUME}
    if not fixed:
        return None
    listed = ", ".join(f"{k} ({old!r} -> {new!r})" for k, (old, new) in fixed.items())
    return (f"cannot resume from the checkpoint of step {step} with a changed {listed}: "
            f"{', '.join(FIXED_ON_RESUME)} are fixed by the checkpoint. Set them back to the "
            "checkpoint's values, or start a new workdir.")


def check_resume_config(saved: Mapping[str, Any] | None, current: Mapping[str, Any],
                        step: int) -> dict[str, tuple[Any, Any]]:
    """The honoured changes of a resume from the checkpoint of `step` (each logged), or a
    ConfigError naming every changed field in FIXED_ON_RESUME. `saved` None (a checkpoint
    without a config) compares nothing."""
    if saved is None:
        log.warning("the checkpoint of step %d records no config; changes are not checked", step)
        return {}
    changes = config_changes(saved, current)
    if message := fixed_change_error(changes, step):
        raise ConfigError(message)
    for k, (old, new) in changes.items():
        log.warning("resuming from step %d with %s = %r (the checkpoint had %r)", step, k, new,
                    old)
    return changes


def warm_start_error(newest_step: int, warm_start_steps: int) -> str | None:
    """The error for resuming a workdir whose newest checkpoint is at `newest_step` under a
    config with `sft.warm_start_steps` = `warm_start_steps`, or None when the run may resume
    (no warm start, or the warm start is done)."""
    if newest_step >= warm_start_steps:
        return None
    return (f"the newest checkpoint is step {newest_step}, before the end of the supervised warm "
            f"start (sft.warm_start_steps={warm_start_steps}): SFT stopped between its "
            "checkpoints, and it does not resume (or the workdir was trained without a warm "
            "start). Start a new workdir.")
