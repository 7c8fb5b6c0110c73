"""Run paths as `etils.epath.Path`: a local folder, `gs://bucket/...` (through gcsfs) or any
other URL whose fsspec filesystem is installed. Every file the trainer reads or writes (workdir,
checkpoints, data files, exports, evaluation outputs) goes through `as_path`."""

from __future__ import annotations

import io
import os
import shutil
import tempfile

from etils import epath

PathLike = str | os.PathLike


def is_local(path: PathLike) -> bool:
    """True for a path on this machine's file system (no `scheme://` prefix)."""
    return "://" not in os.fspath(path)


def as_path(path: PathLike) -> epath.Path:
    """An `epath.Path`; local paths are user-expanded and made absolute, URLs kept as given."""
    p = epath.Path(path)
    return p.expanduser().absolute() if is_local(path) else p


def open_text(path: epath.Path) -> io.StringIO:
    """The whole file as text with line endings untouched (what `csv` wants, and what
    `open(..., newline="")` gives on local files); a leading UTF-8 BOM is dropped."""
    return io.StringIO(path.read_bytes().decode("utf-8-sig"), newline="")


def copy_tree(src: epath.Path, dst: epath.Path) -> None:
    """Copies the files under `src` into `dst` (created), overwriting files of the same name."""
    for root, _, files in src.walk():
        target = dst / root.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            (root / name).copy(target / name, overwrite=True)


class LocalStaging:
    """A local folder standing in for `target` when it is remote: writers append there, and
    `sync()` copies it over. For a local `target` it is the target itself."""

    def __init__(self, target: epath.Path):
        self.target = target
        self._tmp = None if is_local(target) else tempfile.mkdtemp(prefix="ssp_jax_staging_")
        self.local = epath.Path(self._tmp) if self._tmp else target
        self.local.mkdir(parents=True, exist_ok=True)

    def sync(self) -> None:
        if self._tmp:
            copy_tree(self.local, self.target)

    def close(self) -> None:
        self.sync()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
