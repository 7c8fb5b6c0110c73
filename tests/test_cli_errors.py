"""Every CLI answers a user error with one `error: ...` line and exit code 2, and a torch-free
install prints no transformers advice about PyTorch."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# runs `code` with torch invisible to importlib (as on an install without it)
HIDE_TORCH = ("import importlib.util as u; real = u.find_spec; "
              "u.find_spec = lambda name, *a: None if name == 'torch' else real(name, *a); ")


def run(*args, env_extra=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    env.pop("TRANSFORMERS_NO_ADVISORY_WARNINGS", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["-m", "ssp_jax.main", "--config", "configs/tiny.py", "--workdir", "/tmp/unused",
      "--config.nosuch=1"],
     "error: unknown config field nosuch; valid sections: benign_data, ckpt, data, eval, judge, "
     "mesh, model, replay, rl, selfplay, train"),
    (["-m", "ssp_jax.main", "--config", "configs/tiny.py", "--workdir", "/tmp/unused",
      "--config.judge.nosuch=1"],
     "error: unknown config field judge.nosuch; valid judge keys: api_key_env, batch_size, "),
    (["-m", "ssp_jax.main", "--config", "configs/tiny.py", "--workdir", "/tmp/unused",
      "--config.judge.name=oracle"], "error: config field judge.name='oracle'; valid: "),
    (["-m", "ssp_jax.main", "--config", "configs/tiny.py"],
     "error: flag --workdir=None: Flag --workdir must have a value other than None"),
    (["-m", "ssp_jax.evaluate", "--model", "tiny-random", "--benchmark", "hb=x.csv", "--out",
      "/tmp/unused", "--judge", "llama_guard"], "error: --judge llama_guard needs a fixed judge"),
    (["-m", "ssp_jax.export", "--checkpoint", "/nonexistent/7", "--out", "/tmp/unused"],
     "error: /nonexistent/7 is not a checkpoint step folder"),
    (["-m", "ssp_jax.generate", "--model", "/nonexistent/model", "--prompt", "hi"],
     "error: unknown model '/nonexistent/model'"),
])
def test_a_user_error_is_one_line_and_exit_code_2(args, message):
    proc = run(*args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), proc.stderr[-2000:]
    assert proc.stderr.endswith(errors[0] + "\n") and "Traceback" not in proc.stderr


def test_no_pytorch_advice_on_a_torch_free_install():
    quiet = run("-c", HIDE_TORCH + "import ssp_jax.models.tokenizer")
    assert quiet.returncode == 0 and "PyTorch" not in quiet.stderr, quiet.stderr
    # the same import without our setting does print it: the test can see the line
    loud = run("-c", HIDE_TORCH + "import transformers")
    assert "PyTorch was not found" in loud.stderr
