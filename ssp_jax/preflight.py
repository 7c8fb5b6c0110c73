"""Checks before work: every path and server a command needs, checked before any model loads.

Each check raises `cli.UserError` with one line naming the flag or config field, the value and
what is wrong, so that a typo costs a second instead of a model load and a traceback. Used by
`main`, `experiment`, `evaluate`, `generate`, `export` and `serve`:

* `check_config_file`: a `--config` file (`path.py` or `path.py:ARG`) exists;
* `check_workdir`: a run or output folder is a folder, or can be created, and is writable;
* `check_model_spec`: a model spec is a built-in name, a Hugging Face folder or a .gguf file;
* `check_checkpoint`: a checkpoint step folder exists, is complete and its base model exists;
* `check_training`: a validated training config's workdir (and the checkpoint it would resume
  from: same model, past the supervised warm start), data files, model, judge and
  `ckpt.restore_from`;
* `check_judge`: a judge model exists, or a judge server answers and serves its model.

Remote (`gs://...`) paths are not checked here; their errors come when they are read.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any

from etils import epath

from ssp_jax.cli import UserError
from ssp_jax.paths import PathLike, as_path, is_local

FILE_KINDS = ("harmbench", "advbench", "xstest", "csv", "jsonl")  # sources read from one file
TMP_MARK = ".orbax-checkpoint-tmp"  # in the name of a step folder Orbax is still writing


def check_config_file(spec: str, flag: str = "--config") -> pathlib.Path:
    """The config file of `spec` (`path.py`, or `path.py:ARG` for `get_config(ARG)`)."""
    path = pathlib.Path(spec.split(":", 1)[0]).expanduser()
    if not path.exists():
        hint = _similar_files(path)
        raise UserError(f"{flag} {path}: no such config file" + (f"; did you mean {hint}?"
                                                                  if hint else ""))
    if not path.is_file() or path.suffix != ".py":
        raise UserError(f"{flag} {path}: not a Python config file (configs/*.py)")
    return path


def last_line(message: str) -> str:
    """The last non-empty line of a multi-line error message (ml_collections puts a config
    file's whole traceback in the message of an error its `get_config` raised), without the
    exception's class name."""
    lines = [line for line in message.splitlines() if line.strip()] or [""]
    return re.sub(r"^[\w.]*(Error|Exception): ", "", lines[-1].strip())


def _similar_files(path: pathlib.Path) -> str:
    """The .py files next to `path` whose names share its first three letters, or ""."""
    folder = path.parent
    if not folder.is_dir():
        return ""
    near = sorted(str(p) for p in folder.glob("*.py") if p.name[:3] == path.name[:3])
    return ", ".join(near[:4])


def check_workdir(path: PathLike, flag: str = "--workdir") -> None:
    """`path` is a writable folder, or does not exist and can be created (nothing is made)."""
    if not is_local(path):
        return
    p = pathlib.Path(os.fspath(path)).expanduser().absolute()
    if p.exists():
        if not p.is_dir():
            raise UserError(f"{flag} {path}: is a file, not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise UserError(f"{flag} {path}: the folder is not writable")
        return
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: cannot be created, {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: cannot be created, {parent} is not writable")


def check_model_spec(spec: str, what: str) -> None:
    """`spec` names a model `load` can open: a built-in name, tiny-random, a Hugging Face folder
    (with config.json) or a .gguf file; `what` names the flag or field in the message."""
    from ssp_jax.models.loading import BUILTIN_MODELS, TINY_RANDOM, builtin_path

    if spec == TINY_RANDOM:
        return
    if spec in BUILTIN_MODELS:
        try:
            builtin_path(spec)
        except FileNotFoundError as e:
            raise UserError(f"{what} {spec}: {e}") from None
        return
    if not is_local(spec):
        return
    path = pathlib.Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{what} {spec}: the folder has no config.json (not a Hugging Face "
                            "model folder)")
    elif path.is_file():
        if path.suffix != ".gguf":
            raise UserError(f"{what} {spec}: expected a .gguf file or a Hugging Face folder")
    else:
        raise UserError(f"{what} {spec}: not a built-in model "
                        f"({', '.join([*BUILTIN_MODELS, TINY_RANDOM])}), a folder or a .gguf file")


def check_checkpoint(path: PathLike, flag: str = "--checkpoint") -> epath.Path:
    """`path` is a complete checkpoint step folder of ssp_jax (`.../checkpoints/N`) whose base
    model can be loaded; returns it as a path."""
    p = as_path(path)
    if not p.exists():
        raise UserError(f"{flag} {path}: does not exist")
    if not p.is_dir():
        raise UserError(f"{flag} {path}: is a file, not a checkpoint step folder")
    incomplete = UserError(f"{flag} {path}: is an incomplete checkpoint (a save that did not "
                           "finish); use another step")
    if TMP_MARK in p.name:
        raise incomplete
    steps = _finished_steps(p)
    if steps:  # a checkpoints folder: say which step folders it holds
        raise UserError(f"{flag} {path}: is a checkpoints folder, not a step folder; give one of "
                        + ", ".join(str(p / str(s)) for s in steps))
    if not (p / "meta" / "metadata").exists() or not (p / "state").exists():
        raise UserError(f"{flag} {path}: is not a checkpoint step folder of ssp_jax (no "
                        "meta/metadata or state/)")
    if not _finalized(p):
        raise incomplete
    try:
        saved = json.loads((p / "meta" / "metadata").read_text())["config"]
        spec = saved["model"]["spec"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{flag} {path}: its meta/metadata holds no training config") from None
    check_model_spec(spec, f"{flag} {path}: its base model")
    return p


def _finalized(step_dir: epath.Path) -> bool:
    """Orbax's own test that a step folder was fully written (renamed from its temporary
    name, or marked committed on object stores)."""
    import orbax.checkpoint as ocp

    return ocp.step.is_checkpoint_finalized(step_dir)


def _finished_steps(folder: epath.Path) -> list[int]:
    """The complete step folders directly inside `folder`, oldest first."""
    return sorted(int(c.name) for c in folder.iterdir()
                  if c.name.isdigit() and c.is_dir() and _finalized(c))


def check_restore_from(path: str) -> None:
    """`ckpt.restore_from`: a complete step folder, or a checkpoints folder holding one."""
    p = as_path(path)
    if p.is_dir() and TMP_MARK not in p.name and not (p / "meta").exists():
        if not _finished_steps(p):
            raise UserError(f"ckpt.restore_from {path}: holds no complete checkpoint step folder")
        return
    check_checkpoint(path, flag="ckpt.restore_from")


def check_data_files(section: str, data: dict) -> None:
    """Every file source of a `data`-shaped section (plain dicts) names an existing file."""
    from ssp_jax.data.fetch import fetch_hint

    for n, src in enumerate(data.get("sources") or []):
        if not isinstance(src, dict) or src.get("kind") not in FILE_KINDS or not src.get("path"):
            continue  # malformed entries are the mixture's to report
        path = src["path"]
        if is_local(path) and not pathlib.Path(path).expanduser().is_file():
            hint = fetch_hint(path)
            raise UserError(f"{section}.sources[{n}] ({src.get('name')!r}): no file {path}"
                            + (f"; {hint}" if hint else ""))


def check_judge(c: Any, prefix: str = "judge.") -> None:
    """A judge's model exists (`judge.model`) or its server answers and serves
    `judge.remote_model` (`judge.url`); `prefix` names the fields in messages."""
    if c.model:
        check_model_spec(c.model, f"{prefix}model")
    if c.url:
        from ssp_jax.judge.remote import RemoteBackend

        api_key = os.environ.get(c.api_key_env) if c.api_key_env else None
        if c.api_key_env and not api_key:
            raise UserError(f"{prefix}api_key_env names the environment variable "
                            f"{c.api_key_env}, which is not set")
        try:
            backend = RemoteBackend(c.url, c.remote_model, api_key=api_key,
                                    timeout_s=c.timeout_s, max_concurrency=1, max_retries=0)
        except ValueError as e:
            raise UserError(f"{prefix}url: {e}") from None
        try:
            backend.check()
        finally:
            backend.close()


def check_resumable(cfg: Any, workdir: PathLike) -> None:
    """The newest complete checkpoint in `workdir`, if any, was made with the model and replay
    seed of `cfg` (the fields a resume cannot change) and is not before the end of `cfg`'s
    supervised warm start (which does not resume; ssp_jax/resume.py), and has the warm start's
    weights where `cfg` takes them as the KL reference."""
    from ssp_jax.config import to_json
    from ssp_jax.resume import (REFERENCE_DIR, config_changes, fixed_change_error,
                                warm_start_error)

    folder = as_path(workdir) / "checkpoints"
    steps = _finished_steps(folder) if folder.is_dir() else []
    if not steps:
        return
    if message := warm_start_error(steps[-1], cfg.sft.warm_start_steps):
        raise UserError(f"--workdir {workdir}: {message}")
    if cfg.warm_start_reference and not (as_path(workdir) / REFERENCE_DIR).is_dir():
        raise UserError(f"--workdir {workdir}: rl.reference='warm_start' needs the warm start's "
                        f"weights in {REFERENCE_DIR}/, which this workdir's warm start did not "
                        "save; set rl.reference='base' to resume it, or start a new workdir")
    try:
        meta = json.loads((folder / str(steps[-1]) / "meta" / "metadata").read_text())
        saved = meta["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # an unreadable checkpoint is skipped by the trainer, with a warning
    if saved is not None and (message := fixed_change_error(
            config_changes(saved, to_json(cfg)), steps[-1])):
        raise UserError(f"--workdir {workdir}: {message}")


def check_training(cfg: Any, workdir: PathLike | None) -> None:
    """Everything a training run of the validated config `cfg` reads: the workdir (and the
    checkpoint it would resume from), the goal and benign data files, the model, the judge and
    `ckpt.restore_from`."""
    from ssp_jax.sections import plain_data

    if workdir is not None:
        check_workdir(workdir)
        check_resumable(cfg, workdir)
    check_data_files("data", plain_data(cfg.data))
    if cfg.selfplay.benign_per_step:
        check_data_files("benign_data", plain_data(cfg.benign_data))
    check_model_spec(cfg.model.spec, "model.spec")
    check_judge(cfg.judge)
    if cfg.ckpt.restore_from:
        check_restore_from(cfg.ckpt.restore_from)
