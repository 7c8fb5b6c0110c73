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
     "mesh, model, replay, rl, selfplay, sft, train"),
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
     "error: --checkpoint /nonexistent/7: does not exist"),
    (["-m", "ssp_jax.generate", "--model", "/nonexistent/model", "--prompt", "hi"],
     "error: --model /nonexistent/model: not a built-in model"),
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


MAIN = ["-m", "ssp_jax.main", "--config", "configs/tiny.py", "--workdir", "/tmp/unused"]


@pytest.mark.parametrize("args, message", [
    (["-m", "ssp_jax.main", "--config", "configs/smollm2_135.py", "--workdir", "/tmp/unused"],
     "error: --config configs/smollm2_135.py: no such config file; did you mean "
     "configs/smollm2_135m.py, configs/smollm2_135m_lora.py?"),
    (["-m", "ssp_jax.main", "--config", "configs/smollm2_135m.py:recipes", "--workdir",
      "/tmp/unused"], "error: --config: configs/smollm2_135m.py: unknown argument 'recipes'"),
    (["-m", "ssp_jax.main", "--config", "configs/tiny.py", "--workdir", "setup.py"],
     "error: --workdir setup.py: is a file, not a folder"),
    (["-m", "ssp_jax.main", "--config", "configs/smollm2_135m.py:recipe=/nonexistent",
      "--workdir", "/tmp/unused"], "error: data.sources[0] ('advbench'): no file "
     "/nonexistent/advbench/harmful_behaviors.csv; fetch it with `python -m "
     "ssp_jax.data.fetch advbench --dir /nonexistent`"),
    ([*MAIN, "--config.model.spec=/nonexistent/model"],
     "error: model.spec /nonexistent/model: not a built-in model"),
    ([*MAIN, "--config.judge.name=llama_guard", "--config.judge.model=/nonexistent/guard"],
     "error: judge.model /nonexistent/guard: not a built-in model"),
    ([*MAIN, "--config.judge.name=llama_guard", "--config.judge.url=http://127.0.0.1:9/v1",
      "--config.judge.remote_model=guard", "--config.judge.timeout_s=5.0"],
     "error: judge server http://127.0.0.1:9/v1 cannot be reached"),
    ([*MAIN, "--config.ckpt.restore_from=/nonexistent/3"],
     "error: ckpt.restore_from /nonexistent/3: does not exist"),
    (["-m", "ssp_jax.experiment", "--config", "configs/smollm2_135.py", "--out", "/tmp/unused"],
     "error: --config configs/smollm2_135.py: no such config file"),
    (["-m", "ssp_jax.experiment", "--config", "configs/smollm2_135m.py:recipe=/nonexistent",
      "--out", "/tmp/unused"], "error: data.sources[0] ('advbench'): no file /nonexistent/"),
    (["-m", "ssp_jax.experiment", "--config", "configs/tiny.py", "--out", "setup.py"],
     "error: --out setup.py: is a file, not a folder"),
    (["-m", "ssp_jax.generate", "--checkpoint", "/nonexistent/7", "--prompt", "hi"],
     "error: --checkpoint /nonexistent/7: does not exist"),
    (["-m", "ssp_jax.evaluate", "--checkpoint", "configs", "--benchmark", "xs=x.csv", "--out",
      "/tmp/unused"], "error: --checkpoint configs: is not a checkpoint step folder of ssp_jax"),
    (["-m", "ssp_jax.evaluate", "--model", "tiny-random", "--benchmark", "xs=x.csv", "--out",
      "setup.py"], f"error: --out {ROOT / 'setup.py'}: is a file, not a folder"),
    (["-m", "ssp_jax.export", "--checkpoint", "configs", "--out", "/tmp/unused"],
     "error: --checkpoint configs: is not a checkpoint step folder of ssp_jax"),
])
def test_a_bad_path_or_server_is_one_line_before_any_model_loads(args, message):
    """The checks of ssp_jax/preflight.py through each command line: the error is the only
    line on stderr (no model-loading log, no traceback)."""
    proc = run(*args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [proc.stderr.splitlines()[-1]], proc.stderr[-2000:]
    assert proc.stderr.startswith(message), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_resuming_a_workdir_of_another_model_is_one_line_before_any_model_loads(tmp_path):
    import json

    step = tmp_path / "checkpoints" / "2"
    (step / "state").mkdir(parents=True)
    (step / "meta").mkdir()
    config = {"model": {"spec": "smollm2-135m-instruct", "dtype": "float32", "seed": 0}}
    (step / "meta" / "metadata").write_text(json.dumps({"config": config}))
    proc = run("-m", "ssp_jax.main", "--config", "configs/tiny.py", "--workdir", str(tmp_path))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith(
        f"error: --workdir {tmp_path}: cannot resume from the checkpoint of step 2 with a "
        "changed ")
    assert "model.spec ('smollm2-135m-instruct' -> 'tiny-random')" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
