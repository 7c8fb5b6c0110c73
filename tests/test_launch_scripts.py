"""Launch scripts: syntax, usage errors, and a real 2-process run of the local launcher."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from ssp_jax.metrics import read_metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "launch").iterdir())


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", "-s", "bash", str(script)], check=True)


@pytest.mark.parametrize("args", [[], ["2"], ["two", "--"], ["2", "--config", "x"]])
def test_local_launcher_rejects_bad_arguments(args):
    proc = subprocess.run(["bash", str(ROOT / "launch" / "local_multiprocess.sh"), *args],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "usage:" in proc.stderr


@pytest.mark.slow
def test_local_launcher_runs_a_two_process_job(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", LOG_DIR=str(tmp_path / "logs"),
               PYTHON=sys.executable)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        ["bash", "launch/local_multiprocess.sh", "2", "--", "--config", "configs/tiny.py",
         "--workdir", str(tmp_path / "run"), "--config.train.num_steps=2",
         "--config.selfplay.goals_per_step=4", "--config.selfplay.responses_per_attack=2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert proc.returncode == 0, logs[-3000:]
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2]
    assert "process 1 of 2" in (tmp_path / "logs" / "process_1.log").read_text()
