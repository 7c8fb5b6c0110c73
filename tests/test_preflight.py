"""Checks before work (ssp_jax/preflight.py): each bad path or server is one UserError line
naming the flag or field, raised before anything is loaded."""

import json
import os
import pathlib

import pytest

from ssp_jax import preflight
from ssp_jax.cli import UserError
from ssp_jax.config import validate
from ssp_jax.sections import judge_section

ROOT = pathlib.Path(__file__).resolve().parents[1]


def fake_step(folder: pathlib.Path, spec: str = "tiny-random") -> pathlib.Path:
    """A step folder with the files a finished ssp_jax checkpoint has (no arrays)."""
    (folder / "state").mkdir(parents=True)
    (folder / "meta").mkdir()
    (folder / "meta" / "metadata").write_text(json.dumps({"config": {"model": {"spec": spec}}}))
    return folder


def touch(path: pathlib.Path) -> pathlib.Path:
    path.write_text("")
    return path


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_complete_checkpoint_step_folder_passes(tmp_path):
    step = fake_step(tmp_path / "checkpoints" / "3")
    assert preflight.check_checkpoint(step) == step


@pytest.mark.parametrize("make, expected", [
    (lambda d: d / "checkpoints" / "9", "does not exist"),
    (lambda d: touch(d / "f.txt"), "is a file"),
    (lambda d: fake_step(d / "checkpoints" / "3.orbax-checkpoint-tmp-1765000000"),
     "is an incomplete checkpoint (a save that did not finish)"),
    (lambda d: fake_step(d / "checkpoints" / "3").parent,
     "is a checkpoints folder, not a step folder; give one of "),
    (lambda d: (d / "checkpoints" / "4").mkdir(parents=True) or d / "checkpoints" / "4",
     "is not a checkpoint step folder of ssp_jax (no meta/metadata or state/)"),
    (lambda d: fake_step(d / "checkpoints" / "3", spec=str(d / "gone")),
     "its base model"),
])
def test_a_bad_checkpoint_path_is_one_line_naming_the_problem(tmp_path, make, expected):
    path = make(tmp_path)
    message = one_line_error(preflight.check_checkpoint, path)
    assert message.startswith(f"--checkpoint {path}: ") and expected in message


def test_a_checkpoints_folder_message_lists_its_step_folders(tmp_path):
    fake_step(tmp_path / "checkpoints" / "2")
    fake_step(tmp_path / "checkpoints" / "4")
    message = one_line_error(preflight.check_checkpoint, tmp_path / "checkpoints")
    assert message.endswith(f"{tmp_path}/checkpoints/2, {tmp_path}/checkpoints/4")


def test_restore_from_accepts_a_checkpoints_folder_with_a_complete_step(tmp_path):
    fake_step(tmp_path / "checkpoints" / "2")
    preflight.check_restore_from(str(tmp_path / "checkpoints"))
    message = one_line_error(preflight.check_restore_from, str(tmp_path))
    assert "ckpt.restore_from" in message and "holds no complete checkpoint" in message


def test_config_file_typo_names_the_similar_files():
    message = one_line_error(preflight.check_config_file, "configs/smollm2_135.py")
    assert message == ("--config configs/smollm2_135.py: no such config file; did you mean "
                       "configs/smollm2_135m.py, configs/smollm2_135m_lora.py?")


def test_config_file_with_an_argument_checks_the_file_part():
    assert preflight.check_config_file("configs/tiny.py:whatever") == pathlib.Path(
        "configs/tiny.py")
    assert "not a Python config file" in one_line_error(preflight.check_config_file, "configs")


def test_workdir_naming_a_file_or_unwritable_place_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    assert one_line_error(preflight.check_workdir, tmp_path / "file").endswith(
        "is a file, not a folder")
    assert "cannot be created" in one_line_error(preflight.check_workdir,
                                                 tmp_path / "file" / "run")
    preflight.check_workdir(tmp_path / "new" / "run")  # creatable: passes, creates nothing
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_workdir_in_a_read_only_folder_is_refused(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o500)
    assert "not writable" in one_line_error(preflight.check_workdir, tmp_path / "ro" / "run")


@pytest.mark.parametrize("make, expected", [
    (lambda d: str(d / "nope"), "not a built-in model"),
    (lambda d: (d / "m").mkdir() or str(d / "m"), "no config.json"),
    (lambda d: str(touch(d / "m.bin")), "expected a .gguf file"),
])
def test_a_model_spec_that_cannot_load_is_refused(tmp_path, make, expected):
    message = one_line_error(preflight.check_model_spec, make(tmp_path), "model.spec")
    assert message.startswith("model.spec ") and expected in message


def test_built_in_model_names_pass():
    preflight.check_model_spec("tiny-random", "--model")


def test_a_missing_data_file_names_the_source_and_the_fetch_command(tmp_path):
    from configs import tiny

    config = tiny.get_config()
    config.data.sources = [dict(name="advbench", kind="advbench",
                                path=str(tmp_path / "advbench" / "harmful_behaviors.csv"))]
    message = one_line_error(preflight.check_training, validate(config), tmp_path / "run")
    assert message == (f"data.sources[0] ('advbench'): no file {tmp_path}/advbench/"
                       f"harmful_behaviors.csv; fetch it with `python -m ssp_jax.data.fetch "
                       f"advbench --dir {tmp_path}`")


def test_a_judge_model_path_that_does_not_exist_is_refused(tmp_path):
    c = judge_section(name="llama_guard", model=str(tmp_path / "guard"))
    assert one_line_error(preflight.check_judge, c).startswith(f"judge.model {tmp_path}/guard: ")


def test_a_judge_url_that_does_not_answer_is_refused():
    c = judge_section(name="llama_guard", url="http://127.0.0.1:9/v1", remote_model="guard",
                    timeout_s=2.0)
    assert one_line_error(preflight.check_judge, c).startswith(
        "judge server http://127.0.0.1:9/v1 cannot be reached")


def test_a_workdir_checkpoint_of_another_model_is_refused_before_loading(tmp_path):
    from configs import tiny
    from ssp_jax.config import to_json

    cfg = validate(tiny.get_config())
    saved = json.loads(json.dumps(to_json(cfg)))
    step = fake_step(tmp_path / "checkpoints" / "2")
    saved["model"]["spec"] = "smollm2-135m-instruct"
    (step / "meta" / "metadata").write_text(json.dumps({"config": saved}))
    message = one_line_error(preflight.check_training, cfg, tmp_path)
    assert message.startswith(
        f"--workdir {tmp_path}: cannot resume from the checkpoint of step 2 with a changed "
        "model.spec ('smollm2-135m-instruct' -> 'tiny-random'): ")
    saved["model"]["spec"] = "tiny-random"  # the same model: the run may resume
    saved["train"]["num_steps"] = 99  # other fields may change
    (step / "meta" / "metadata").write_text(json.dumps({"config": saved}))
    preflight.check_training(cfg, tmp_path)
