"""Checkpointing: exact resumption in a new process, SIGTERM, SIGKILL, restore_from, export."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ssp_jax.metrics import read_metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAST = ["--config.selfplay.goals_per_step=4", "--config.selfplay.responses_per_attack=2"]
VOLATILE = ("time/", "tokens_per_second")  # wall-clock metrics differ between runs


def command(workdir, *overrides):
    return [sys.executable, "-m", "ssp_jax.main", "--config", "configs/tiny.py", "--workdir",
            str(workdir), *FAST, *overrides]


def env():
    e = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    e.pop("XLA_FLAGS", None)
    return e


def run(workdir, *overrides):
    proc = subprocess.run(command(workdir, *overrides), cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def read_checkpoint(workdir, step):
    """(state arrays as a flat dict of numpy, replay JSON) of a saved checkpoint."""
    path = pathlib.Path(workdir) / "checkpoints" / str(step) / "state"
    checkpointer = ocp.PyTreeCheckpointer()
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                            checkpointer.metadata(path).item_metadata.tree)
    state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    replay = json.loads((path.parent / "replay" / "metadata").read_text())
    flat = {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_flatten_with_path(state)[0]}
    return flat, replay


def stable_metrics(workdir):
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)}
            for r in read_metrics(pathlib.Path(workdir) / "metrics.jsonl")]


def test_resume_in_a_new_process_continues_bit_exactly(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    run(straight, "--config.train.num_steps=6", "--config.ckpt.every_steps=0")
    run(split, "--config.train.num_steps=3", "--config.ckpt.every_steps=0")
    run(split, "--config.train.num_steps=6", "--config.ckpt.every_steps=0")
    state_a, replay_a = read_checkpoint(straight, 6)
    state_b, replay_b = read_checkpoint(split, 6)
    assert state_a.keys() == state_b.keys()
    for key in state_a:  # parameters, optimizer moments and step, bitwise
        np.testing.assert_array_equal(state_a[key], state_b[key], err_msg=key)
    assert replay_a == replay_b and replay_a["items"]
    assert stable_metrics(straight) == stable_metrics(split)


def wait_for_steps(workdir, n, proc, timeout=300):
    path = pathlib.Path(workdir) / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stderr.read()[-3000:]}")
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"no {n} steps within {timeout} s")


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    proc = subprocess.Popen(command(tmp_path, "--config.train.num_steps=100000",
                                    "--config.ckpt.every_steps=0"),
                            cwd=ROOT, env=env(), stderr=subprocess.PIPE, text=True)
    wait_for_steps(tmp_path, 3, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    saved = ocp.CheckpointManager(tmp_path / "checkpoints").all_steps()
    done = len(read_metrics(tmp_path / "metrics.jsonl"))
    assert saved == [done] and done >= 3


def test_sigkill_during_saves_restarts_from_last_complete_checkpoint(tmp_path):
    proc = subprocess.Popen(command(tmp_path, "--config.train.num_steps=100000",
                                    "--config.ckpt.every_steps=1", "--config.ckpt.keep=3"),
                            cwd=ROOT, env=env(), stderr=subprocess.PIPE, text=True)
    wait_for_steps(tmp_path, 6, proc)
    proc.kill()  # with a checkpoint every step, very likely while one is being written
    proc.wait(timeout=60)
    complete = ocp.CheckpointManager(tmp_path / "checkpoints").all_steps()
    assert complete, "no complete checkpoint survived"
    target = max(complete) + 3
    run(tmp_path, f"--config.train.num_steps={target}", "--config.ckpt.every_steps=1")
    steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert steps == list(range(1, target + 1))  # no gap, no duplicate, nothing half-read
    assert max(ocp.CheckpointManager(tmp_path / "checkpoints").all_steps()) == target


def test_restore_from_starts_a_new_workdir_from_a_given_checkpoint(tmp_path):
    run(tmp_path / "a", "--config.train.num_steps=2")
    proc = run(tmp_path / "b", "--config.train.num_steps=3",
               f"--config.ckpt.restore_from={tmp_path / 'a' / 'checkpoints' / '2'}")
    assert [r["step"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")] == [3]
    assert "summary (step 3 -> step 3)" in proc.stdout


def test_unreadable_checkpoint_is_skipped_with_a_warning(tmp_path):
    run(tmp_path, "--config.train.num_steps=2", "--config.ckpt.every_steps=1")
    for f in (tmp_path / "checkpoints" / "2" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    proc = run(tmp_path, "--config.train.num_steps=3", "--config.ckpt.every_steps=1")
    assert "skipping unreadable checkpoint" in proc.stderr
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]


def test_export_writes_a_folder_transformers_loads_with_the_trained_weights(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from ssp_jax.export import export
    from ssp_jax.models import load

    run(tmp_path / "run", "--config.train.num_steps=2")
    export(str(tmp_path / "run" / "checkpoints" / "2"), str(tmp_path / "hf"))
    ours, _ = load(tmp_path / "hf")
    initial, _ = load("tiny-random")
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tokens = np.arange(1, 30)[None]
    with torch.no_grad():
        ref = reference(torch.tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours(tokens)), ref, atol=1e-4)
    assert np.abs(np.asarray(initial(tokens)) - ref).max() > 1e-3  # trained, not initial
