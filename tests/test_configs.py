"""Every shipped config validates and names its data (never the working folder's), and the
memory estimate adds up."""

import dataclasses
import pathlib
import subprocess
import sys
import typing

import pytest
from ml_collections.config_flags import config_flags

from ssp_jax import default_config, sections
from ssp_jax.config import ConfigError, TrainConfig, validate
from ssp_jax.memory import estimate, format_table, model_shape
from ssp_jax.sections import (StepLayout, judge_section, plain_data, replay_section,
                              rl_section)

CONFIG_DIR = pathlib.Path(__file__).parents[1] / "configs"
CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.py") if p.name != "__init__.py")


def load_config(path):
    return config_flags.ConfigFileFlagParser(name="config").parse(str(path))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_validates(path):
    cfg = validate(load_config(path))
    assert cfg.train.num_steps > 0
    layout = StepLayout.of(cfg, row_shards=1)
    assert all(groups % cfg.rl.micro_batches == 0 for groups in layout.num_groups)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_memory_table_total_is_the_sum_of_the_parts(path):
    cfg = validate(load_config(path))
    parts = estimate(cfg, model_shape(cfg.model.spec))
    assert all(v > 0 for v in parts.values())
    total = float(format_table(parts, 8).splitlines()[-1].split()[1])
    assert total == pytest.approx(sum(parts.values()) / 2**30, abs=0.01)


def compiled_update_memory(cfg, shape):
    """XLA's memory analysis of the real update step compiled for `cfg` on `shape` (abstract
    inputs: nothing is allocated), and the bytes of its train-state argument."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ssp_jax.models import Transformer
    from ssp_jax.rl.batch import TrainBatch
    from ssp_jax.rl.update import init_train_state, make_train_step

    sp, model_cfg = cfg.selfplay, shape.replace(remat=cfg.model.remat)
    layout = StepLayout.of(cfg, row_shards=1)
    optimizer = cfg.rl.optimizer(cfg.train.num_steps)
    state = jax.eval_shape(
        lambda: init_train_state(Transformer(model_cfg, rngs=nnx.Rngs(0)).params(), optimizer))

    def batch(groups, size, length):
        s = jax.ShapeDtypeStruct
        prompt, rows = (groups, sp.max_prompt_tokens), (groups * size, length)
        return TrainBatch(s(prompt, jnp.int32), s(prompt, bool), s(rows, jnp.int32),
                          s(rows, jnp.float32), s(rows, jnp.float32),
                          s(rows[:1], jnp.float32), s(rows[:1], jnp.float32))

    batches = tuple(batch(*a) for a in zip(layout.num_groups, layout.group_sizes,
                                           (sp.attacker_max_tokens, sp.defender_max_tokens)))
    step = make_train_step(model_cfg, cfg.rl, optimizer, temperature=sp.update_temperature,
                           num_steps=cfg.train.num_steps)
    analysis = step.lower(state, None, batches, None).compile().memory_analysis()
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    return analysis, state_bytes


@pytest.mark.slow
@pytest.mark.parametrize("remat", [False, True])
def test_memory_estimate_agrees_with_xla_compiled_memory_analysis(remat):
    """Parameters + optimizer match the compiled step's state argument to 1%; gradients +
    activations match its temporary buffers within a factor of 2 (XLA's CPU scheduler here;
    measured 1.8x under the compiled figure without remat, 1.02x with it)."""
    import jax

    from ssp_jax.models import ModelConfig
    from ssp_jax.models.transformer import init_cache

    shape = ModelConfig("llama", vocab_size=4096, hidden_size=256, intermediate_size=768,
                        num_layers=4, num_heads=4, num_kv_heads=2, head_dim=64,
                        max_position_embeddings=1024)
    config = load_config(pathlib.Path(__file__).parents[1] / "configs" / "tiny.py")
    config.selfplay.update(attacker_max_tokens=64, defender_max_tokens=64, max_prompt_tokens=128)
    config.model.update(max_cache_len=256, remat=remat)
    cfg = validate(config)
    parts = estimate(cfg, shape)
    analysis, state_bytes = compiled_update_memory(cfg, shape)
    assert parts["parameters"] + parts["optimizer"] == pytest.approx(state_bytes, rel=0.01)
    assert state_bytes <= analysis.argument_size_in_bytes
    ratio = analysis.temp_size_in_bytes / (parts["gradients"] + parts["activations"])
    assert 0.5 <= ratio <= 2.0, ratio
    sp = cfg.selfplay
    rows = (sp.goals_per_step * sp.attacks_per_goal + cfg.replay.replay_per_step
            + sp.benign_per_step) * sp.responses_per_attack
    cache = jax.eval_shape(lambda: init_cache(shape, rows, cfg.model.max_cache_len))
    assert parts["kv_cache"] == sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(cache))


def test_model_shape_of_a_folder_reads_its_config(tmp_path):
    (tmp_path / "config.json").write_text(
        '{"model_type": "qwen2", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, '
        '"num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1}')
    shape = model_shape(str(tmp_path))
    assert shape.architecture == "qwen2" and shape.attention_bias and shape.head_dim == 4
    with pytest.raises(ValueError, match="cannot tell the shape"):
        model_shape(str(tmp_path / "missing"))


@pytest.mark.parametrize("overrides", [{}, {"tie_word_embeddings": False},
                                       {"architecture": "qwen2", "attention_bias": True},
                                       {"architecture": "qwen3", "qk_norm": True}])
def test_num_params_counts_every_parameter(overrides):
    import jax
    from flax import nnx

    from ssp_jax.models import Transformer
    from ssp_jax.models.tiny import tiny_config

    cfg = tiny_config(**overrides)
    state = nnx.state(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    assert cfg.num_params == sum(x.size for x in jax.tree.leaves(state))


def _section_classes():
    """Every section dataclass of TrainConfig (model.lora's LoraConfig aside: its defaults are
    the model's "no adapters", see ssp_jax.sections.LoraConfig)."""
    return {name: cls for name, cls in typing.get_type_hints(TrainConfig).items()
            if dataclasses.is_dataclass(cls)}


def test_no_section_dataclass_field_has_a_default():
    for name, cls in _section_classes().items():
        for field in dataclasses.fields(cls):
            assert field.default is dataclasses.MISSING, f"{name}.{field.name}"
            assert field.default_factory is dataclasses.MISSING, f"{name}.{field.name}"


def test_every_section_field_comes_from_the_default_config():
    defaults = plain_data(default_config.get_config())
    for name, cls in _section_classes().items():
        assert {f.name for f in dataclasses.fields(cls)} == set(defaults[name]), name


def test_sections_build_from_the_default_config_with_overrides():
    assert judge_section(name="wildguard").name == "wildguard"
    assert rl_section().learning_rate == default_config.get_config().rl.learning_rate
    assert replay_section(capacity=3).ucb_c == default_config.get_config().replay.ucb_c
    with pytest.raises(ConfigError, match="unknown config field.*rl.temperature"):
        rl_section(temperature=1.0)


def test_judge_names_and_scorings_match_the_judge_registry():
    from ssp_jax.judge.model_judge import SCORINGS
    from ssp_jax.judge.registry import FORMATS

    assert set(sections.JUDGE_NAMES) == {"refusal", *FORMATS}
    assert sections.JUDGE_SCORINGS == SCORINGS


def test_config_layer_imports_no_module_that_reads_a_section():
    code = ("import sys, ssp_jax.config; bad = [m for m in sys.modules if m.startswith(("
            "'ssp_jax.selfplay', 'ssp_jax.rl', 'ssp_jax.replay', 'ssp_jax.judge', "
            "'ssp_jax.models', 'ssp_jax.data', 'ssp_jax.train', 'ssp_jax.rollout'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=pathlib.Path(__file__).parents[1])
    assert out.returncode == 0, out.stdout + out.stderr


def test_step_layout_pads_groups_to_micro_batches_times_row_shards():
    cfg = validate(load_config(CONFIG_DIR / "tiny.py"))
    layout = StepLayout.of(dataclasses.replace(
        cfg, rl=dataclasses.replace(cfg.rl, micro_batches=2)), row_shards=4)
    sp = cfg.selfplay
    defender = (sp.goals_per_step * sp.attacks_per_goal + cfg.replay.replay_per_step
                + sp.benign_per_step)
    assert layout.num_groups == (-(-sp.goals_per_step // 8) * 8, -(-defender // 8) * 8)
    assert layout.group_sizes == (sp.attacks_per_goal, sp.responses_per_attack)


@pytest.mark.parametrize("field, home", [("temperature", "selfplay.temperature"),
                                         ("total_steps", "train.num_steps")])
def test_derived_update_fields_name_where_they_are_set(field, home):
    raw = plain_data(default_config.get_config())
    raw["rl"][field] = 1
    with pytest.raises(ConfigError, match=f"rl.{field} is set from {home}"):
        validate(raw)


@pytest.mark.parametrize("attacks, direct", [(2, 1), (3, 2), (4, 3), (2, 3)])
def test_direct_slots_must_leave_the_attacker_two_rows_per_goal(attacks, direct):
    # one attacker row per group has advantage 0: the attacker would not be trained
    raw = plain_data(default_config.get_config())
    raw["selfplay"].update(attacks_per_goal=attacks, direct_attacks_per_goal=direct)
    with pytest.raises(ConfigError, match=(
            f"selfplay.direct_attacks_per_goal={direct} leaves {max(attacks - direct, 0)} "
            f"attacker rows? per goal.*valid: 0 or at most selfplay.attacks_per_goal - 2 = "
            f"{attacks - 2}")):
        validate(raw)


@pytest.mark.parametrize("attacks, direct", [(2, 0), (3, 1), (4, 2)])
def test_direct_slots_that_leave_two_attacker_rows_validate(attacks, direct):
    raw = plain_data(default_config.get_config())
    raw["selfplay"].update(attacks_per_goal=attacks, direct_attacks_per_goal=direct)
    assert validate(raw).selfplay.direct_attacks_per_goal == direct


@pytest.mark.parametrize("responses, greedy", [(2, 2), (4, 4), (4, 5), (2, -1)])
def test_greedy_responses_must_leave_each_defender_group_a_sampled_answer(responses, greedy):
    # greedy answers to one prompt are one text: a group of only those has advantage 0
    raw = plain_data(default_config.get_config())
    raw["selfplay"].update(responses_per_attack=responses, greedy_responses=greedy)
    with pytest.raises(ConfigError, match=(
            rf"selfplay.greedy_responses={greedy} must be in \[0, selfplay.responses_per_attack"
            rf" - 1 = {responses - 1}\].*at least one sampled answer")):
        validate(raw)


@pytest.mark.parametrize("responses, greedy, temperature", [
    (2, 0, 0.7), (2, 1, 0.7), (4, 3, 1.0),
    (2, 1, 0.0)])  # at temperature 0 every answer is greedy already: allowed, changes nothing
def test_greedy_responses_below_the_group_size_validate(responses, greedy, temperature):
    raw = plain_data(default_config.get_config())
    raw["selfplay"].update(responses_per_attack=responses, greedy_responses=greedy,
                           temperature=temperature)
    assert validate(raw).selfplay.greedy_responses == greedy


@pytest.mark.parametrize("fields, match", [
    ({"sft": {"warm_start_steps": -1}}, r"sft.warm_start_steps=-1 must be ≥ 0"),
    ({"sft": {"warm_start_steps": 20}},
     r"sft.warm_start_steps=20 must be < train.num_steps=20 .*or 0 for no warm start"),
    ({"sft": {"warm_start_steps": 25}}, r"sft.warm_start_steps=25 must be < train.num_steps=20"),
    ({"sft": {"warm_start_steps": 2}, "ckpt": {"restore_from": "old/checkpoints"}},
     r"sft.warm_start_steps=2 trains from the base model and ckpt.restore_from='old/"),
    ({"sft": {"prompts": 0}}, r"sft.prompts=0 must be > 0"),
    ({"sft": {"samples": 0}}, r"sft.samples=0 must be > 0"),
    ({"sft": {"batch_size": -4}}, r"sft.batch_size=-4 must be > 0"),
    ({"sft": {"on_topic_threshold": 1.5}}, r"sft.on_topic_threshold=1.5 must be a cosine in"),
    ({"sft": {"warm_start_steps": 1.5}}, r"sft.warm_start_steps=1.5 has type float"),
    ({"sft": {"declines": "own"}}, r"sft.declines='own'; valid: sampled, written"),
    ({"sft": {"answer_share": 1.0}}, r"sft.answer_share=1.0 must be in \[0, 1\)"),
    ({"sft": {"answer_share": -0.1}}, r"sft.answer_share=-0.1 must be in \[0, 1\)"),
    ({"rl": {"reference": "sft"}}, r"rl.reference='sft'; valid: warm_start, base"),
    ({"sft": {"declines": "written", "written_declines": ["No.", "  "]}},
     r"sft.declines='written' needs sft.written_declines: one or more non-blank texts"),
    ({"sft": {"declines": "written", "written_declines": []}}, r"needs sft.written_declines"),
    ({"sft": {"written_declines": ["No.", 3]}}, r"sft.written_declines\[1\]=3 has type int"),
    ({"sft": {"written_declines": "No."}}, r"sft.written_declines='No.' has type str; expected "
                                            "a sequence of str"),
])
def test_bad_sft_fields_are_rejected_naming_the_field(fields, match):
    raw = plain_data(default_config.get_config())  # train.num_steps = 20
    for section, values in fields.items():
        raw[section].update(values)
    with pytest.raises(ConfigError, match=match):
        validate(raw)


def test_a_warm_start_reference_needs_full_fine_tuning_only_where_it_applies():
    raw = plain_data(default_config.get_config())
    raw["rl"].update(beta=0.04, reference="warm_start")
    raw["model"]["lora"]["rank"] = 4
    assert validate(raw).rl.reference == "warm_start"  # no warm start: the base is the start
    raw["sft"]["warm_start_steps"] = 2
    with pytest.raises(ConfigError, match=r"rl.reference='warm_start' after a warm start "
                       r"\(sft.warm_start_steps=2\) is not supported with LoRA"):
        validate(raw)
    raw["rl"]["beta"] = 0.0  # no KL term
    assert validate(raw).sft.warm_start_steps == 2


def test_written_declines_validate_as_a_tuple_and_are_unused_with_sampled_declines():
    raw = plain_data(default_config.get_config())
    raw["sft"].update(declines="written", written_declines=["No.", "I can't."])
    assert validate(raw).sft.written_declines == ("No.", "I can't.")
    raw["sft"].update(declines="sampled", written_declines=[])
    assert validate(raw).sft.written_declines == ()


@pytest.mark.parametrize("steps", [0, 1, 19])
def test_a_warm_start_of_fewer_steps_than_the_run_validates(steps):
    raw = plain_data(default_config.get_config())
    raw["sft"]["warm_start_steps"] = steps
    assert validate(raw).sft.warm_start_steps == steps


def write_recipe_files(root: pathlib.Path) -> None:
    """The two files the SmolLM2 recipe trains on, under `root` (tiny but loadable)."""
    fixtures = pathlib.Path(__file__).parent / "fixtures" / "data"
    (root / "advbench").mkdir(parents=True)
    (root / "advbench" / "harmful_behaviors.csv").write_text("goal,target\nDo a bad thing,\n")
    (root / "harmbench").mkdir()
    (root / "harmbench" / "harmbench_behaviors_text_val.csv").write_bytes(
        (fixtures / "harmbench_small.csv").read_bytes())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_a_config_trains_on_the_same_data_whatever_the_working_folder_holds(
        path, tmp_path, monkeypatch):
    empty = plain_data(load_config(path).data)
    write_recipe_files(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SSP_DATA", str(tmp_path / "data"))
    assert plain_data(load_config(path).data) == empty


def test_smollm2_without_argument_trains_on_the_built_in_goals():
    cfg = load_config(CONFIG_DIR / "smollm2_135m.py")
    assert [s["kind"] for s in plain_data(cfg.data.sources)] == ["builtin"]


@pytest.mark.parametrize("arg, root", [("recipe", "data"), ("recipe=/srv/sets", "/srv/sets")])
def test_smollm2_recipe_argument_names_its_data_files(arg, root):
    cfg = load_config(f"{CONFIG_DIR / 'smollm2_135m.py'}:{arg}")
    sources = plain_data(cfg.data.sources)
    assert [(s["kind"], s["path"]) for s in sources] == [
        ("advbench", f"{root}/advbench/harmful_behaviors.csv"),
        ("harmbench", f"{root}/harmbench/harmbench_behaviors_text_val.csv")]
    assert sources[1]["include_contextual"] is False  # standard behaviours only
    # everything else is the same recipe, but the warm start (the built-in goals' demo has none)
    plain = plain_data(load_config(CONFIG_DIR / "smollm2_135m.py"))
    assert (cfg.sft.warm_start_steps, plain["sft"]["warm_start_steps"]) == (6, 0)
    plain["sft"]["warm_start_steps"] = 6
    assert {k: v for k, v in plain_data(cfg).items() if k != "data"} == {
        k: v for k, v in plain.items() if k != "data"}


def test_smollm2_recipe_loads_its_goals_from_the_named_folder(tmp_path):
    from ssp_jax.data.mixture import from_config

    write_recipe_files(tmp_path)
    cfg = load_config(f"{CONFIG_DIR / 'smollm2_135m.py'}:recipe={tmp_path}")
    mixture = from_config(cfg.data)
    assert {item.source for items in mixture.items for item in items} == {"advbench",
                                                                          "harmbench"}


@pytest.mark.parametrize("arg", ["recipes", "recipe=", "builtin"])
def test_smollm2_unknown_argument_is_a_clear_error(arg):
    with pytest.raises(ValueError, match=f"unknown argument '{arg}'; valid: none"):
        load_config(f"{CONFIG_DIR / 'smollm2_135m.py'}:{arg}")
