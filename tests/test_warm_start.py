"""The supervised warm start (`sft.warm_start_steps`) that `train.train` runs before self-play:
SFT's data and checkpoint, then self-play resumed from it; a resumed workdir does not run SFT
again; one whose SFT stopped between its checkpoints is a clear error. The SFT data checks are
faked: a random model never declines."""

import contextlib
import json
import logging
import shutil

import jax
import numpy as np
import pytest

from configs import tiny
from ssp_jax import preflight, sft
from ssp_jax import train as train_lib
from ssp_jax.checkpoint import restore_policy
from ssp_jax.cli import UserError
from ssp_jax.config import validate
from ssp_jax.models import load
from ssp_jax.sft import SftChecks, SftSettings, run_sft

ACCEPT_ALL = SftChecks(declines=lambda t: True, refuses=lambda t: False,
                       unreadable=lambda t: False, on_topic=None)


def warm_config(num_steps: int = 2, warm_start_steps: int = 1):
    """configs/tiny.py at a smaller step (4 goals, 2 responses), with a warm start of 4 goals
    and 4 benign prompts, 2 samples each."""
    config = tiny.get_config()
    config.train.num_steps = num_steps
    config.selfplay.goals_per_step = 4
    config.selfplay.responses_per_attack = 2
    config.sft.update(warm_start_steps=warm_start_steps, prompts=4, samples=2, batch_size=4)
    return config


@contextlib.contextmanager
def ssp_log_lines():
    """The messages ssp_jax logs at INFO and above inside the block."""
    lines, logger = [], logging.getLogger("ssp_jax")

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def metrics(workdir) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").open()]


@pytest.fixture(scope="module")
def warm_run(tmp_path_factory):
    """A 2-step run with a 1-step warm start: (workdir, train's result, log lines)."""
    workdir = tmp_path_factory.mktemp("warm") / "run"
    with ssp_log_lines() as lines:
        out = train_lib.train(warm_config(), workdir, sft_checks=ACCEPT_ALL)
    jax.set_mesh(None)
    return workdir, out, lines


def test_warm_start_trains_sft_then_self_play_from_its_checkpoint(warm_run):
    workdir, out, lines = warm_run
    assert len((workdir / "sft_data.jsonl").read_text().splitlines()) == 8  # 4 + 4 kept
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["1", "2"]
    records = metrics(workdir)
    assert [r["step"] for r in records] == [1, 2]
    assert "sft/loss" in records[0] and "defender/reward_mean" not in records[0]
    assert "defender/reward_mean" in records[1] and "sft/loss" not in records[1]
    assert out["warm_start"]["steps_done"] == 1 and out["steps_done"] == 2
    # the summary reads the self-play steps only
    assert out["summary"]["attack_success_rate"]["first"] is not None
    begin = next(i for i, x in enumerate(lines) if x.startswith("warm start: 1 SFT updates"))
    end = next(i for i, x in enumerate(lines) if x.startswith("warm start: done (SFT data"))
    resumed = lines.index("resumed from checkpoint at step 1")
    assert begin < end < resumed


def test_the_warm_start_checkpoint_is_what_run_sft_alone_writes(warm_run, tmp_path):
    workdir, _, _ = warm_run
    cfg = validate(warm_config())
    run_sft(warm_config(), tmp_path / "sft", SftSettings(cfg.sft, steps=1,
                                                        reset_optimizer=True), ACCEPT_ALL)
    jax.set_mesh(None)
    alone = jax.tree.leaves(restore_policy(tmp_path / "sft" / "checkpoints" / "1").params)
    warm = jax.tree.leaves(restore_policy(workdir / "checkpoints" / "1").params)
    for a, b in zip(alone, warm, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    base = jax.tree.leaves(load("tiny-random", seed=cfg.model.seed)[0].params())
    after = jax.tree.leaves(restore_policy(workdir / "checkpoints" / "2").params)
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(base, warm))
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(warm, after))


def test_resuming_a_finished_warm_start_runs_no_sft(warm_run, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    shutil.copytree(warm_run[0], workdir)
    data = (workdir / "sft_data.jsonl").read_text()

    def no_sft(*args, **kwargs):
        raise AssertionError("SFT ran again")

    monkeypatch.setattr(sft, "run_sft", no_sft)
    with ssp_log_lines() as lines:
        out = train_lib.train(warm_config(num_steps=3), workdir, sft_checks=ACCEPT_ALL)
    assert out["warm_start"] is None and out["steps_done"] == 3
    assert "warm start: done before (newest checkpoint: step 2)" in lines
    records = metrics(workdir)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert ["sft/loss" in r for r in records] == [True, False, False]
    assert (workdir / "sft_data.jsonl").read_text() == data


def test_a_warm_start_stopped_between_its_checkpoints_is_a_clear_error(warm_run, tmp_path,
                                                                        monkeypatch):
    # a run of warm_start_steps=2 that died after saving the SFT checkpoint of step 1
    workdir = tmp_path / "run"
    shutil.copytree(warm_run[0] / "checkpoints" / "1", workdir / "checkpoints" / "1")
    config = warm_config(num_steps=3, warm_start_steps=2)
    loads = []
    for module in (sft, train_lib):
        monkeypatch.setattr(module, "load", lambda *a, **k: loads.append(a) or load(*a, **k))
    message = (r"the newest checkpoint is step 1, before the end of the supervised warm start "
               r"\(sft.warm_start_steps=2\): SFT stopped between its checkpoints, and it does "
               r"not resume .* Start a new workdir.")
    with pytest.raises(ValueError, match=f"{workdir}: {message}"):
        train_lib.train(config, workdir, sft_checks=ACCEPT_ALL)
    assert loads == [] and sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["1"]
    with pytest.raises(UserError, match=f"--workdir {workdir}: {message}"):
        preflight.check_training(validate(config), workdir)
    # the finished warm start of 1 step resumes
    preflight.check_training(validate(warm_config(num_steps=3)), workdir)


def test_the_kl_reference_after_a_warm_start_is_its_weights(tmp_path):
    config = warm_config()
    config.rl.update(beta=0.04, reference="warm_start")
    workdir = tmp_path / "run"
    train_lib.train(config, workdir, sft_checks=ACCEPT_ALL)
    jax.set_mesh(None)
    # outside checkpoints/, which ckpt.keep prunes
    assert [p.name for p in (workdir / "reference").iterdir()] == ["1"]
    with ssp_log_lines() as lines:
        trainer = train_lib.Trainer(config, workdir)  # resumes at the end
    reference = jax.tree.leaves(trainer.ref_params)
    trainer.run()
    jax.set_mesh(None)
    assert "KL reference: the warm start's weights (step 1)" in lines
    warm = jax.tree.leaves(restore_policy(workdir / "checkpoints" / "1").params)
    for a, b in zip(reference, warm, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    base = jax.tree.leaves(load("tiny-random", seed=config.model.seed)[0].params())
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(base, warm))


def test_a_warm_start_reference_missing_from_the_workdir_is_a_preflight_error(warm_run,
                                                                             tmp_path):
    # warm_run trained without a KL term, so its warm start saved no reference
    workdir = tmp_path / "run"
    shutil.copytree(warm_run[0], workdir)
    config = warm_config(num_steps=3)
    config.rl.update(beta=0.04, reference="warm_start")
    with pytest.raises(UserError, match=f"--workdir {workdir}: rl.reference='warm_start' needs "
                       r"the warm start's weights in reference/.*set rl.reference='base'"):
        preflight.check_training(validate(config), workdir)
    config.rl.reference = "base"
    preflight.check_training(validate(config), workdir)
