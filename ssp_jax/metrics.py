"""Training logs: `metrics.jsonl`, TensorBoard event files and readable `samples.jsonl`.

The writers append to files in a local folder: the workdir itself, or, when the workdir is
remote (`gs://...`, where objects cannot be appended to), a local staging folder whose files
`sync()` copies over. The trainer syncs at every checkpoint and at the end, so a remote log
holds at least every step up to the newest checkpoint.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

from etils import epath
from tensorboardX import SummaryWriter

from ssp_jax.paths import LocalStaging, PathLike, as_path

LOG_FILES = ("metrics.jsonl", "samples.jsonl", "eval.jsonl")


def _truncated_jsonl(path: epath.Path, start_step: int) -> str:
    """The records of `path` with step ≤ start_step, the step of the checkpoint we resume from
    (records of the steps after it are dropped)."""
    return "".join(line + "\n" for line in path.read_text().splitlines()
                   if line.strip() and json.loads(line)["step"] <= start_step)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class MetricsWriter:
    """Appends one JSON record per step, under the step's number (1 for the first step, the
    number its checkpoint folder has); mirrors scalars to TensorBoard. On resume from the
    checkpoint of step `start_step` (0 for a new run), records of later steps (from a run that
    died after its last checkpoint) are dropped so the log reads as one uninterrupted run."""

    def __init__(self, workdir: PathLike, start_step: int, enabled: bool = True):
        self.enabled = enabled
        workdir = as_path(workdir)
        self.metrics_path = workdir / "metrics.jsonl"
        self._staging: LocalStaging | None = None
        self._tb = None
        if enabled:
            self._staging = LocalStaging(workdir)
            for name in LOG_FILES:
                if (workdir / name).exists():
                    kept = _truncated_jsonl(workdir / name, start_step)
                    (self._staging.local / name).write_text(kept)
            self._tb = SummaryWriter(str(self._staging.local / "tensorboard"))

    def _append(self, name: str, lines: list[str]) -> None:
        with (self._staging.local / name).open("a") as f:
            f.write("".join(line + "\n" for line in lines))

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: _finite(float(v)) for k, v in sorted(metrics.items())}}
        self._append("metrics.jsonl", [json.dumps(record)])
        for k, v in metrics.items():
            if math.isfinite(float(v)):
                self._tb.add_scalar(k, float(v), step)

    def write_eval(self, step: int, metrics: Mapping[str, float]) -> None:
        """Held-out evaluation metrics: `eval.jsonl` and TensorBoard."""
        if not self.enabled:
            return
        self._append("eval.jsonl", [json.dumps({"step": step, **metrics})])
        for k, v in metrics.items():
            self._tb.add_scalar(k, float(v), step)

    def write_samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        if not self.enabled:
            return
        self._append("samples.jsonl",
                     [json.dumps({"step": step, **row}, ensure_ascii=False) for row in rows])

    def sync(self) -> None:
        """Makes the workdir's logs current (a copy from the staging folder when remote)."""
        if self.enabled:
            self._tb.flush()
            self._staging.sync()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._staging.close()
            self._tb = None


def read_metrics(path: PathLike) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file."""
    return [json.loads(line) for line in as_path(path).read_text().splitlines() if line.strip()]
