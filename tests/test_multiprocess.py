"""Two local processes form one JAX job (gloo on 127.0.0.1): train, stop, resume, and match a
single-process run on the same number of devices; a SIGTERM to one process stops both at one
step."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ssp_jax.metrics import read_metrics
from tests.serve_helpers import free_port
from tests.test_resume import read_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
ARGS = ["--config", "configs/tiny.py", "--config.selfplay.goals_per_step=4",
        "--config.selfplay.responses_per_attack=2", "--config.ckpt.every_steps=0"]


def base_env(devices: int) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    for key in ("SSP_COORDINATOR", "SSP_NUM_PROCESSES", "SSP_PROCESS_ID"):
        env.pop(key, None)
    return env


def start_two_processes(workdir, steps) -> list[subprocess.Popen]:
    port = free_port()
    procs = []
    for pid in range(2):
        env = dict(base_env(1), SSP_COORDINATOR=f"127.0.0.1:{port}", SSP_NUM_PROCESSES="2",
                   SSP_PROCESS_ID=str(pid))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "ssp_jax.main", *ARGS, "--workdir", str(workdir),
             f"--config.train.num_steps={steps}"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def run_two_processes(workdir, steps):
    procs = start_two_processes(workdir, steps)
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    return outputs


def test_two_processes_train_resume_and_match_one_process(tmp_path):
    run_two_processes(tmp_path / "multi", 2)
    outputs = run_two_processes(tmp_path / "multi", 4)  # a new job resumes at step 2
    assert "process 1 of 2" in outputs[1]
    single = subprocess.run([sys.executable, "-m", "ssp_jax.main", *ARGS, "--workdir",
                             str(tmp_path / "single"), "--config.train.num_steps=4"],
                            cwd=ROOT, env=base_env(2), capture_output=True, text=True,
                            timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    multi_state, multi_replay = read_checkpoint(tmp_path / "multi", 4)
    single_state, single_replay = read_checkpoint(tmp_path / "single", 4)
    for key in single_state:
        np.testing.assert_allclose(multi_state[key], single_state[key], atol=1e-5,
                                   err_msg=key)
    assert multi_replay["items"] == single_replay["items"]
    steps = [r["step"] for r in read_metrics(tmp_path / "multi" / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]  # process 0 alone writes the log, once per step


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
    workdir = tmp_path / "run"
    procs = start_two_processes(workdir, 1000)  # far more steps than run before the signal
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + 600  # a guard against a hang, not a timing check
    try:
        while not (metrics.exists() and metrics.read_text().strip()):
            assert all(p.poll() is None for p in procs), "a process exited before step 1 ended"
            assert time.monotonic() < deadline, "no step finished"
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGTERM)  # process 0 never receives it
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    saved = [int(p.name) for p in (workdir / "checkpoints").iterdir()]
    assert len(saved) == 1 and 0 < saved[0] < 1000
    for out in outputs:
        assert f"preempted: saved the checkpoint of step {saved[0]}" in out
    assert [r["step"] for r in read_metrics(metrics)] == list(range(1, saved[0] + 1))
