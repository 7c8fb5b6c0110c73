"""Orbax checkpoints of a self-play run: train state, replay pool, run metadata.

A checkpoint holds `state` (params, optimizer state, step; arrays), `replay` (the UCB pool,
JSON) and `meta` (step, bad-step counter, the resolved config; JSON). The RNG key and the
data position are pure functions of (seed, step), so the step restores them. Orbax writes
each checkpoint to a temporary folder and renames it when complete, so a run killed while
saving never leaves a half-written checkpoint that looks finished; a checkpoint that still
fails to read is skipped with a warning and the next older one is tried. Directories are
`epath` paths: local or `gs://` (Orbax writes arrays through tensorstore, metadata through
epath).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp
from etils import epath

from ssp_jax.config import lora_config
from ssp_jax.models import ModelConfig, Tokenizer, Transformer, load, lora, model_from_params
from ssp_jax.models.config import LoraConfig
from ssp_jax.models.transformer import Params
from ssp_jax.paths import PathLike, as_path
from ssp_jax.rl.update import init_train_state
from ssp_jax.sections import rl_section

log = logging.getLogger(__name__)


class Checkpointer:
    """Saves every `every_steps` (and on demand), keeps the latest `keep`."""

    def __init__(self, directory: PathLike, *, keep: int, async_save: bool = True):
        self.directory = as_path(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=async_save))

    def save(self, step: int, state: Any, replay: dict, meta: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), replay=ocp.args.JsonSave(replay),
            meta=ocp.args.JsonSave(meta)), force=True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict, dict] | None:
        """(step, state, replay, meta) of the newest readable checkpoint, or None. Unreadable
        ones are moved to `<workdir>/unreadable_checkpoints/` so the run can save that step
        again."""
        return restore_newest(self.manager, self.manager.all_steps(), abstract_state,
                              quarantine=self.directory.parent / "unreadable_checkpoints")


def restore_newest(manager: ocp.CheckpointManager, steps: list[int], abstract_state: Any,
                   quarantine: epath.Path | None = None) -> tuple[int, Any, dict, dict] | None:
    """Tries `steps` newest first; skips (and optionally moves away) unreadable ones."""
    for step in sorted(steps, reverse=True):
        path = epath.Path(manager.directory) / str(step)
        try:
            out = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), replay=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped
            log.warning("skipping unreadable checkpoint %s: %s", path, e)
            if quarantine is not None:
                quarantine.mkdir(parents=True, exist_ok=True)
                path.rename(quarantine / f"{step}-{int(time.time())}")
                manager.reload()
            continue
        return step, out.state, out.replay, out.meta
    return None


def restore_from_path(path: PathLike, abstract_state: Any) -> tuple[int, Any, dict, dict]:
    """Restores a given checkpoint: a step folder (`.../checkpoints/120`) or a checkpoints
    folder (its newest readable step)."""
    p = as_path(path)
    if not p.exists():
        raise FileNotFoundError(f"ckpt.restore_from: {p} does not exist")
    if p.name.isdigit() and (p / "state").exists():
        manager, steps = ocp.CheckpointManager(p.parent), [int(p.name)]
    else:
        manager = ocp.CheckpointManager(p)
        steps = manager.all_steps()
    found = restore_newest(manager, steps, abstract_state)
    manager.close()
    if found is None:
        raise FileNotFoundError(f"ckpt.restore_from: no readable checkpoint in {p}")
    return found


def save_reference(directory: PathLike, step: int, params: Params) -> None:
    """Writes `params` as the KL reference of the run (`directory/<step>`, one kept): the
    weights of a warm start, which `Checkpointer`'s `keep` would otherwise delete while
    self-play still needs them."""
    manager = ocp.CheckpointManager(as_path(directory),
                                    options=ocp.CheckpointManagerOptions(max_to_keep=1,
                                                                         create=True))
    try:
        manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)),
                     force=True)
    finally:
        manager.wait_until_finished()
        manager.close()


def restore_reference(directory: PathLike, abstract_params: Any) -> tuple[int, Params]:
    """(step, params) written by `save_reference`, restored into `abstract_params`; a
    FileNotFoundError saying so when there is none."""
    directory = as_path(directory)
    manager = ocp.CheckpointManager(directory)
    try:
        steps = manager.all_steps()
        if not steps:
            raise FileNotFoundError(f"no KL reference in {directory}: the warm start writes it "
                                    "when rl.reference='warm_start'; start a new workdir, or "
                                    "set rl.reference='base'")
        out = manager.restore(max(steps), args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_params)))
        return max(steps), out.params
    finally:
        manager.close()


def abstract_like(tree: Any) -> Any:
    """Shape/dtype/sharding structs of a pytree of arrays (restore targets)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        tree)


def read_saved_config(checkpoint: epath.Path) -> dict:
    """The resolved training config stored in a checkpoint's metadata."""
    meta_file = checkpoint / "meta" / "metadata"
    if not meta_file.exists():
        raise FileNotFoundError(f"{checkpoint} is not a checkpoint step folder of ssp_jax "
                                f"(no {meta_file.relative_to(checkpoint)})")
    return json.loads(meta_file.read_text())["config"]


class Policy(NamedTuple):
    """A checkpoint's trained policy."""

    config: ModelConfig  # with the run's LoRA settings
    params: Params  # full weights, or the base with its adapters under "lora"
    tokenizer: Tokenizer
    step: int
    base: str  # the base model's spec


def restore_policy(checkpoint: PathLike) -> Policy:
    """The policy of a checkpoint step folder: its base model rebuilt from the saved config,
    the trained parameters (or LoRA adapters) restored over it."""
    ckpt = as_path(checkpoint)
    saved = read_saved_config(ckpt)
    model_cfg = saved["model"]
    lora_cfg = lora_config(model_cfg.get("lora", {}))
    model, tokenizer = load(model_cfg["spec"], dtype=model_cfg["dtype"], seed=model_cfg["seed"])
    cfg = model.config.replace(lora=lora_cfg)
    base = model.params()
    trained = jax.eval_shape(lambda: lora.init_adapters(cfg, jax.random.key(0))) \
        if lora_cfg.enabled else base
    # the restore target: the train state the run saved, from its own optimizer settings
    # (older checkpoints also saved the derived rl.temperature and rl.total_steps)
    rl = rl_section(**{k: v for k, v in saved["rl"].items()
                       if k not in ("temperature", "total_steps")})
    optimizer = rl.optimizer(saved["train"]["num_steps"])
    state = jax.eval_shape(lambda p: init_train_state(p, optimizer), trained)
    # onto one device of this process, whatever mesh the run saved from
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), state)
    step, restored, _, _ = restore_from_path(ckpt, state)
    params = lora.with_adapters(base, restored.params) if lora_cfg.enabled else restored.params
    return Policy(cfg, params, tokenizer, step, model_cfg["spec"])


def merged_model(policy: Policy) -> Transformer:
    """The policy as a plain Transformer: adapters, if any, folded into the weights."""
    params = lora.merge(policy.config, policy.params) if "lora" in policy.params \
        else policy.params
    return model_from_params(policy.config.replace(lora=LoraConfig()), params)


def load_checkpoint(checkpoint: PathLike) -> tuple[Transformer, Tokenizer, int]:
    """The trained model of a checkpoint step folder (LoRA adapters merged), its tokenizer
    and the step."""
    policy = restore_policy(checkpoint)
    return merged_model(policy), policy.tokenizer, policy.step
