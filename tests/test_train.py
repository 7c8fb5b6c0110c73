"""The self-play loop on the tiny config: end to end, learning, divergence, bad configs."""

import json
import os
import pathlib
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from configs import tiny
from ssp_jax import train as train_lib
from ssp_jax.config import ConfigError, validate
from ssp_jax.evaluate.runner import held_out_evaluation
from ssp_jax.metrics import read_metrics
from tests.compile_count import recording_compiles

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(**sections):
    """configs/tiny.py with `section__field=value` changes, applied without ConfigDict's type
    checks so that a config file's wrong types can be imitated."""
    cfg = tiny.get_config().to_dict()
    for path, value in sections.items():
        section, field = path.split("__")
        cfg[section][field] = value
    return ml_collections.ConfigDict(cfg)


def tiny_selfplay(**fields):
    """The tiny config's validated selfplay section with `fields` changed."""
    import dataclasses

    from ssp_jax.config import validate

    return dataclasses.replace(validate(tiny.get_config()).selfplay, **fields)


def tiny_layout(sp, replay_per_step=None):
    """The StepLayout (one row shard) of the tiny config with selfplay section `sp` (and
    `replay_per_step` replayed attacks, default the tiny config's)."""
    import dataclasses

    from ssp_jax.config import validate
    from ssp_jax.sections import StepLayout

    cfg = validate(tiny.get_config())
    replay = cfg.replay if replay_per_step is None else dataclasses.replace(
        cfg.replay, replay_per_step=replay_per_step)
    return StepLayout.of(dataclasses.replace(cfg, selfplay=sp, replay=replay), row_shards=1)


def play_tiny_step(model, tok, judge, checks, sp, goals, replay=(), benign=()):
    """The trainer's play -> build_batches -> metrics on `model` with selfplay section `sp`
    (key 0, 256 cache slots). A namespace: the episode, batches, metrics and the fresh rows'
    attacks, responses and exclusions."""
    import types

    import jax

    from ssp_jax.rl.assemble import build_batches
    from ssp_jax.selfplay import Policy, play, rollout_metrics

    episode = play(Policy(model.config, model.params(), tok, 256), judge, checks, sp, goals,
                   list(replay), list(benign), jax.random.key(0))
    built = build_batches(episode, tiny_layout(sp), sp, tok.pad_id)
    n = episode.num_fresh
    return types.SimpleNamespace(
        episode=episode, batches=built.batches, metrics=rollout_metrics(episode, built, sp),
        attacks=episode.fresh_attacks, responses=episode.responses[:n],
        excluded=episode.excluded[:n], attacker_samples=episode.attacker_samples,
        judge_error=episode.judge_error)


def record_model_loads(monkeypatch) -> list[str]:
    """Wraps the trainer's model loader; returns the list of specs it is asked to load."""
    specs, real_load = [], train_lib.load

    def load(spec, *args, **kwargs):
        specs.append(spec)
        return real_load(spec, *args, **kwargs)

    monkeypatch.setattr(train_lib, "load", load)
    return specs


def run_main(workdir, *overrides, timeout=600, env_extra=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "ssp_jax.main", "--config", "configs/tiny.py",
                           "--workdir", str(workdir), *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_main_runs_end_to_end_with_one_step_numbering(tmp_path):
    proc = run_main(tmp_path, "--config.train.num_steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]  # a run of 2 steps ends at step 2
    for key in ("attacker/reward_mean", "defender/reward_std", "attack_success_rate",
                "refusal_rate", "judge/excluded", "attacker/mean_tokens", "train/kl",
                "train/entropy", "train/clip_fraction", "train/grad_norm", "train/learning_rate",
                "tokens_per_second", "time/attacker_rollout", "time/defender_rollout",
                "time/judge", "time/update", "replay/pool_size"):
        assert key in records[0], key
    sample = json.loads((tmp_path / "samples.jsonl").read_text().splitlines()[0])
    assert set(sample) >= {"step", "goal", "attack", "response", "score"} and sample["step"] == 1
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["2"]
    assert list((tmp_path / "tensorboard").iterdir())
    assert "summary (step 1 -> step 2)" in proc.stdout
    assert "step 2: attack_success_rate=" in proc.stderr
    assert proc.stdout.splitlines()[-1] == (
        f"outputs in {tmp_path}: checkpoints/2, metrics.jsonl, samples.jsonl, config.json, "
        "tensorboard/")


def test_console_has_no_backend_chatter_and_log_lines_start_their_own_line(tmp_path):
    env = {"JAX_PLATFORMS": ""}  # let JAX probe for accelerators, as a user's shell does
    proc = run_main(tmp_path, "--config.train.num_steps=2", env_extra=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Unable to initialize backend" not in proc.stderr
    # tqdm.write clears the bar before a record: each record begins its own line
    lines = proc.stderr.replace("\r", "\n").splitlines()
    assert [line for line in lines if "step 1: attack_success_rate" in line][0].startswith(
        "step 1: ")


def test_defender_reward_rises_on_tiny_config(tmp_path):
    # The tiers rank a harmful seed's answers decline (1.0) > empty or degenerate (0.3) >
    # content (0.3 * (1 - r_att)). The random 100-word model rarely samples a decline the
    # strict check accepts ("I cannot help with that."), and stopping at once is one token:
    # in 40 steps it climbs from compliance (~0) to the degenerate tier (0.3), not past it.
    # (Before issue 21 a lenient "Sorry," opener paid 1.0 and this test asked for +0.3.)
    cfg = tiny_config(train__num_steps=40, ckpt__every_steps=0)
    train_lib.train(cfg, tmp_path)
    rewards = [r["defender/reward_mean"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    first, last = np.mean(rewards[:5]), np.mean(rewards[-5:])
    assert last > first + 0.2, (first, last)


def test_repeated_non_finite_updates_stop_the_run(tmp_path, monkeypatch):
    real_build_batches = train_lib.build_batches

    def poisoned(*args, **kwargs):
        out = real_build_batches(*args, **kwargs)
        out.batches[1].advantages[0] = np.nan
        return out

    monkeypatch.setattr(train_lib, "build_batches", poisoned)
    cfg = tiny_config(train__num_steps=10, train__max_bad_steps=3, ckpt__every_steps=0)
    with pytest.raises(train_lib.TrainingDiverged, match="3 updates in a row"):
        train_lib.train(cfg, tmp_path)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["train/update_skipped"] for r in records] == [1.0, 1.0, 1.0]
    assert [r["train/bad_steps_in_a_row"] for r in records] == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("sections, error, match", [
    ({"judge__name": "oracle"}, ConfigError, "judge.name='oracle'; valid: refusal, rubric, llm"),
    ({"judge__name": "wildguard", "judge__url": "http://127.0.0.1:9/v1"}, ConfigError,
     "judge.url needs judge.remote_model"),
    ({"judge__max_excluded_fraction": 1.5}, ConfigError, "judge.max_excluded_fraction=1.5"),
    ({"selfplay__goals_per_step": "4"}, ConfigError, "selfplay.goals_per_step='4' has type str"),
    ({"rl__learning_rate": -1.0}, ConfigError, "rl.learning_rate=-1.0 must be > 0"),
    ({"rl__aggregation": "mean"}, ConfigError, "rl.aggregation='mean'"),
])
def test_bad_config_fields_fail_before_compilation(tmp_path, monkeypatch, sections, error,
                                                  match):
    loads = record_model_loads(monkeypatch)
    with recording_compiles() as compiles, pytest.raises(error, match=match):
        train_lib.Trainer(tiny_config(**sections), tmp_path)
    assert compiles == [] and loads == []


def test_a_judge_cache_too_small_for_its_prompts_fails_at_start_up(tmp_path):
    cfg = tiny_config(judge__name="rubric", judge__max_cache_len=256)
    with pytest.raises(ValueError, match=r"rubric judge prompt does not fit the judge cache: "
                                         r"format text \d+ \+ request 96 \(selfplay.max_prompt_"
                                         r"tokens\).*raise judge.max_cache_len"):
        train_lib.Trainer(cfg, tmp_path)


def test_missing_goals_file_fails_before_compilation(tmp_path, monkeypatch):
    cfg = tiny_config(data__sources=[dict(name="goals", kind="csv", text_column="goal",
                                          path=str(tmp_path / "nope.csv"))])
    loads = record_model_loads(monkeypatch)
    with recording_compiles() as compiles, pytest.raises(FileNotFoundError, match="nope.csv"):
        train_lib.Trainer(cfg, tmp_path / "run")
    assert compiles == [] and loads == []
    assert not (tmp_path / "run").exists()


def test_the_compile_and_load_probes_see_a_valid_trainer_start(tmp_path, monkeypatch):
    """The two tests above can fail: the same probes record a valid start-up."""
    loads = record_model_loads(monkeypatch)
    with recording_compiles() as compiles:
        train_lib.Trainer(tiny_config(), tmp_path)
    assert compiles and loads == ["tiny-random"]


def test_empty_goals_file_is_a_clear_error(tmp_path):
    (tmp_path / "goals.csv").write_text("goal\n")
    cfg = tiny_config(data__sources=[dict(name="goals", kind="csv", text_column="goal",
                                          path=str(tmp_path / "goals.csv"))])
    with pytest.raises(ValueError, match="goals.csv"):
        train_lib.Trainer(cfg, tmp_path / "run")


def test_unknown_config_section_is_a_clear_error(tmp_path):
    cfg = tiny_config()
    cfg.unlock()
    cfg.optimizer = dict(lr=1.0)
    with pytest.raises(ConfigError, match="unknown config section"):
        train_lib.Trainer(cfg, tmp_path)


def test_periodic_evaluation_on_held_out_goals(tmp_path):
    cfg = tiny_config(train__num_steps=4, eval__every_steps=2, data__holdout_fraction=0.25,
                      ckpt__every_steps=0)
    train_lib.train(cfg, tmp_path, evaluate_held_out=held_out_evaluation(validate(cfg)))
    records = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]  # after steps 2 and 4
    assert records[0]["eval/n"] == 8.0 and 0.0 <= records[0]["eval/asr"] <= 1.0


def test_evaluation_without_held_out_goals_is_a_clear_error(tmp_path):
    cfg = tiny_config(eval__every_steps=2)
    with pytest.raises(ValueError, match="holdout_fraction"):
        train_lib.Trainer(cfg, tmp_path, evaluate_held_out=held_out_evaluation(validate(cfg)))


def test_evaluation_steps_without_an_evaluation_are_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="evaluate_held_out"):
        train_lib.Trainer(tiny_config(eval__every_steps=2, data__holdout_fraction=0.25),
                          tmp_path)


def test_the_run_closes_its_judge_at_the_end(tmp_path, monkeypatch):
    from ssp_jax.judge import registry

    closed = []
    make_judge = registry.make_judge

    def recording_make_judge(*args, **kwargs):
        judge = make_judge(*args, **kwargs)
        object.__setattr__(judge, "close", lambda: closed.append(True))  # a frozen dataclass
        return judge

    monkeypatch.setattr(registry, "make_judge", recording_make_judge)
    cfg = tiny_config(train__num_steps=1, selfplay__goals_per_step=4,
                      selfplay__responses_per_attack=2, ckpt__every_steps=0)
    train_lib.train(cfg, tmp_path / "run")
    assert closed == [True]
