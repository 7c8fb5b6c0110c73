"""Resuming with a changed config: honoured fields take effect and are logged against the
checkpoint's config; fields the checkpoint fixes stop the run with their names."""

import json
import logging

import pytest

from ssp_jax import train as train_lib
from ssp_jax.config import ConfigError
from ssp_jax.metrics import read_metrics
from ssp_jax.resume import config_changes
from tests.test_train import tiny_config

FAST = dict(selfplay__goals_per_step=4, selfplay__responses_per_attack=2, ckpt__every_steps=0)


def saved_replay(workdir, step):
    return json.loads((workdir / "checkpoints" / str(step) / "replay" / "metadata").read_text())


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
    """A workdir trained for 2 steps with the default replay settings (2 per step)."""
    workdir = tmp_path_factory.mktemp("run")
    train_lib.train(tiny_config(train__num_steps=2, **FAST), workdir)
    assert len(saved_replay(workdir, 2)["items"]) > 2  # the capacity cut below bites
    return workdir


def copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_resume_honours_new_replay_settings_and_logs_them(two_steps, tmp_path, caplog):
    workdir = copy_run(two_steps, tmp_path / "run")
    cfg = tiny_config(train__num_steps=4, replay__replay_per_step=1, replay__capacity=2,
                      replay__ucb_c=0.5, **FAST)
    with caplog.at_level(logging.WARNING, logger="ssp_jax.resume"):
        train_lib.train(cfg, workdir)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for line in ("replay.replay_per_step = 1 (the checkpoint had 2)",
                 "replay.capacity = 2 (the checkpoint had 64)",
                 "replay.ucb_c = 0.5 (the checkpoint had 1.4142135623730951)",
                 "train.num_steps = 4 (the checkpoint had 2)"):
        assert f"resuming from step 2 with {line}" in logged
    records = {r["step"]: r for r in read_metrics(workdir / "metrics.jsonl")}
    assert records[2]["replay/selected"] == 2.0  # before the resume: the old setting
    assert records[3]["replay/selected"] == 1.0 and records[4]["replay/selected"] == 1.0
    assert all(records[s]["replay/pool_size"] <= 2 for s in (3, 4))
    saved = saved_replay(workdir, 4)
    assert saved["config"] == {"capacity": 2, "replay_per_step": 1, "admit_score": 4.0,
                               "ucb_c": 0.5, "seed": 0}
    assert len(saved["items"]) <= 2


def test_resume_with_the_same_config_logs_no_change(two_steps, tmp_path, caplog):
    workdir = copy_run(two_steps, tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="ssp_jax.resume"):
        train_lib.Trainer(tiny_config(train__num_steps=2, **FAST), workdir)
    assert not [r for r in caplog.records if r.name == "ssp_jax.resume"]


@pytest.mark.parametrize("change, named", [
    ({"model__seed": 1}, "model.seed (0 -> 1)"),
    ({"replay__seed": 3, "model__dtype": "bfloat16"},
     "model.dtype ('float32' -> 'bfloat16'), replay.seed (0 -> 3)"),
])
def test_resume_with_a_field_the_checkpoint_fixes_stops_and_names_it(two_steps, tmp_path,
                                                                     change, named):
    workdir = copy_run(two_steps, tmp_path / "run")
    cfg = tiny_config(train__num_steps=4, **change, **FAST)
    with pytest.raises(ConfigError, match=f"step 2 with a changed {named.replace('(', '[(]')}"
                                          .replace(")", "[)]")):
        train_lib.train(cfg, workdir)
    assert [r["step"] for r in read_metrics(workdir / "metrics.jsonl")] == [1, 2]


def test_config_changes_compares_nested_sections_and_lists():
    saved = {"model": {"spec": "a"}, "data": {"sources": [{"name": "x"}]}, "ckpt":
             {"restore_from": "/old"}, "rl": {"beta": 0.0}}
    current = {"model": {"spec": "a"}, "data": {"sources": [{"name": "y"}]}, "ckpt":
               {"restore_from": ""}, "rl": {"beta": 0.1, "new": 1}}
    assert config_changes(saved, current) == {
        "data.sources": ([{"name": "x"}], [{"name": "y"}]), "rl.beta": (0.0, 0.1),
        "rl.new": ("<absent>", 1)}
