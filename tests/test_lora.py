"""LoRA adapters: the forward against a NumPy merged-weight reference, the update trains only
adapters, sampling, sharding, PEFT export checked by peft itself, and exact resume."""

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from ssp_jax import sharding
from ssp_jax.config import ConfigError, validate
from ssp_jax.default_config import get_config
from ssp_jax.checkpoint import Policy
from ssp_jax.export import write_peft
from ssp_jax.models import forward, load, lora, model_from_params, save_hf
from ssp_jax.models.config import LORA_TARGETS, LoraConfig
from ssp_jax.models.hf_io import params_to_hf
from ssp_jax.rl.batch import pack_groups
from ssp_jax.rl.update import init_train_state, make_train_step
from ssp_jax.sections import rl_section
from ssp_jax.rollout import generate
from ssp_jax.rollout.sampler import generate_with_params

LORA = LoraConfig(rank=4, alpha=8.0)
TOKENS = jnp.asarray(np.arange(1, 30)[None] % 90 + 4)


@pytest.fixture(scope="module")
def tiny():
    model, tok = load("tiny-random", seed=3)
    return model.config.replace(lora=LORA), model.params(), tok


def random_adapters(cfg, seed=0, scale=0.3):
    """Adapters with non-zero B (a trained adapter)."""
    adapters = lora.init_adapters(cfg, jax.random.key(seed))
    return jax.tree.map(lambda x: x + scale * jax.random.normal(jax.random.key(seed + 1),
                                                                x.shape), adapters)


def numpy_merge(cfg, params):
    """W + (alpha / r) A @ B per layer in float64, independent of `lora.merge`."""
    layers = {k: np.asarray(v, np.float64) for k, v in params["layers"].items()}
    for name, ad in params["lora"].items():
        a, b = np.asarray(ad["a"], np.float64), np.asarray(ad["b"], np.float64)
        for i in range(cfg.num_layers):
            w = layers[name][i]
            delta = a[i].reshape(-1, cfg.lora.rank) @ b[i].reshape(cfg.lora.rank, -1)
            layers[name][i] = w + cfg.lora.alpha / cfg.lora.rank * delta.reshape(w.shape)
    return {**{k: v for k, v in params.items() if k != "lora"},
            "layers": {k: v.astype(np.float32) for k, v in layers.items()}}


def test_fresh_adapters_leave_logits_unchanged(tiny):
    cfg, base, _ = tiny
    adapters = lora.init_adapters(cfg, jax.random.key(0))
    assert all(float(jnp.abs(ad["a"]).max()) > 0 for ad in adapters.values())
    np.testing.assert_array_equal(forward(lora.with_adapters(base, adapters), cfg, TOKENS),
                                  forward(base, cfg, TOKENS))


def test_adapter_forward_matches_numpy_merged_weights(tiny):
    cfg, base, _ = tiny
    params = lora.with_adapters(base, random_adapters(cfg))
    ours = np.asarray(forward(params, cfg, TOKENS))
    reference = np.asarray(forward(numpy_merge(cfg, params), cfg, TOKENS))
    assert np.abs(ours - np.asarray(forward(base, cfg, TOKENS))).max() > 1e-2  # adapters act
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    merged = lora.merge(cfg, params)
    assert "lora" not in merged
    for name, w in numpy_merge(cfg, params)["layers"].items():
        np.testing.assert_allclose(merged["layers"][name], w, atol=1e-6, err_msg=name)


def test_targets_choose_the_wrapped_projections(tiny):
    cfg, base, _ = tiny
    mlp_only = cfg.replace(lora=dataclasses.replace(LORA, targets=("up_proj", "down_proj")))
    adapters = random_adapters(mlp_only)
    assert sorted(adapters) == ["down_proj", "up_proj"]
    params = lora.with_adapters(base, adapters)
    np.testing.assert_allclose(forward(params, mlp_only, TOKENS),
                               forward(numpy_merge(mlp_only, params), mlp_only, TOKENS),
                               atol=2e-5)


def test_greedy_sampling_with_adapters_matches_merged_weights(tiny):
    cfg, base, tok = tiny
    params = lora.with_adapters(base, random_adapters(cfg, scale=0.1))
    prompts = [tok.chat_prompt(t) for t in ("Tell me a story", "Write code please")]
    kw = dict(temperature=0.0, stop_ids=tok.stop_ids, pad_id=tok.pad_id, max_cache_len=128)
    adapted = generate_with_params(cfg, params, prompts, 12, **kw)
    merged = generate_with_params(cfg, lora.merge(cfg, params), prompts, 12, **kw)
    unadapted = generate_with_params(cfg, base, prompts, 12, **kw)
    assert adapted.tokens == merged.tokens
    assert adapted.tokens != unadapted.tokens
    for a, b in zip(adapted.logprobs, merged.logprobs):
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.fixture(scope="module")
def lora_batch(tiny):
    cfg, base, tok = tiny
    model = model_from_params(cfg.replace(lora=LoraConfig()), base)
    prompts = [tok.chat_prompt(t) for t in ("Tell me a story", "Write code please",
                                            "Imagine a world", "Explain why")]
    out = generate(model, prompts, 10, temperature=0.8, num_samples=2, seed=4,
                   stop_ids=tok.stop_ids, pad_id=tok.pad_id)
    adv = np.random.default_rng(0).normal(size=len(out.tokens)).astype(np.float32)
    batch = pack_groups(prompts, out.tokens, out.logprobs, adv,
                        np.ones(len(out.tokens), np.float32), group_size=2, num_groups=4,
                        prompt_length=32, completion_length=10, pad_id=tok.pad_id)
    return jax.tree.map(jnp.asarray, batch)


TEMPERATURE = 0.8  # sampling temperature the log-probs are of
NUM_STEPS = 100  # the run length the learning rate schedule is built for


def train_step(cfg, update_cfg):
    """The jitted update of `update_cfg` (an rl section) on model `cfg`, with its optimizer."""
    opt = update_cfg.optimizer(NUM_STEPS)
    return opt, make_train_step(cfg, update_cfg, opt, temperature=TEMPERATURE,
                                num_steps=NUM_STEPS)


def lora_step(cfg, base, batch, update_cfg, adapters=None):
    opt, step = train_step(cfg, update_cfg)
    adapters = adapters or lora.init_adapters(cfg, jax.random.key(0))
    state = init_train_state(jax.tree.map(jnp.copy, adapters), opt)
    return step(state, base, (batch,), None)


def test_update_trains_only_the_adapters(tiny, lora_batch):
    cfg, base, _ = tiny
    base_before = jax.tree.map(np.array, base)
    update_cfg = rl_section(learning_rate=1e-2, beta=0.1)
    adapters = lora.init_adapters(cfg, jax.random.key(0))
    state, metrics = lora_step(cfg, base, lora_batch, update_cfg, adapters)
    assert float(metrics["update_skipped"]) == 0.0
    # a fresh adapter is the base model: on-policy ratio 1 and zero KL to the reference
    assert float(metrics["ratio_mean"]) == pytest.approx(1.0, abs=1e-4)
    assert float(metrics["kl"]) == pytest.approx(0.0, abs=1e-7)
    assert jax.tree.structure(state.params) == jax.tree.structure(adapters)
    for name in LORA.targets:  # B moves off zero at once; A follows from B's gradient later
        assert float(jnp.abs(state.params[name]["b"]).max()) > 0, name
    optimizer_leaves = {x.shape for x in jax.tree.leaves(state.opt_state) if x.ndim}
    assert optimizer_leaves <= {x.shape for x in jax.tree.leaves(adapters)}
    for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(base_before)):
        np.testing.assert_array_equal(a, b)
    second, _ = train_step(cfg, update_cfg)[1](state, base, (lora_batch,), None)
    assert all(float(jnp.abs(second.params[n]["a"] - adapters[n]["a"]).max()) > 0
               for n in LORA.targets)


def test_lora_micro_batches_accumulate_exactly(tiny, lora_batch):
    cfg, base, _ = tiny
    update_cfg = rl_section(learning_rate=1e-2)
    adapters = random_adapters(cfg, scale=0.05)
    one, m1 = lora_step(cfg, base, lora_batch, update_cfg, adapters)
    four, m4 = lora_step(cfg, base, lora_batch,
                         dataclasses.replace(update_cfg, micro_batches=4), adapters)
    np.testing.assert_allclose(float(m1["loss"]), float(m4["loss"]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(m1["grad_norm"]), float(m4["grad_norm"]), rtol=1e-4)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_lora_dropout_changes_the_update_and_is_a_function_of_the_step(tiny, lora_batch):
    cfg, base, _ = tiny
    update_cfg = rl_section(learning_rate=1e-2)
    adapters = random_adapters(cfg, scale=0.05)
    _, plain = lora_step(cfg, base, lora_batch, update_cfg, adapters)
    dropped = cfg.replace(lora=dataclasses.replace(LORA, dropout=0.5))
    _, m1 = lora_step(dropped, base, lora_batch, update_cfg, adapters)
    _, m2 = lora_step(dropped, base, lora_batch, update_cfg, adapters)
    assert float(m1["loss"]) == float(m2["loss"])
    assert float(m1["ratio_mean"]) != pytest.approx(float(plain["ratio_mean"]), abs=1e-6)


def test_adapters_shard_like_their_base_matrices(tiny):
    cfg, _, _ = tiny
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    shard = lora.shardings(cfg, mesh, sharding.TRAIN_RULES)
    spec = lambda name, ab: tuple(shard[name][ab].spec)  # noqa: E731
    assert spec("q_proj", "a") == (None, "fsdp", None)  # [L, D, r]: embed like W's input
    assert spec("q_proj", "b") == (None, None, "tensor", None)  # [L, r, H, Dh]: heads
    assert spec("o_proj", "a") == (None, "tensor", None, None)  # [L, H, Dh, r]
    assert spec("o_proj", "b") == (None, None, "fsdp")  # [L, r, D]
    assert spec("down_proj", "a") == (None, "tensor", None)  # [L, F, r]


def test_peft_folder_has_peft_names_shapes_and_config(tiny, tmp_path):
    cfg, base, tok = tiny
    adapters = random_adapters(cfg)
    write_peft(Policy(cfg, lora.with_adapters(base, adapters), tok, 3, "tiny-random"), tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"]) == (4, 8.0)
    assert sorted(config["target_modules"]) == sorted(LORA_TARGETS)
    assert config["base_model_name_or_path"] == "tiny-random"
    tensors = safetensors.numpy.load_file(str(tmp_path / "adapter_model.safetensors"))
    base_hf = params_to_hf(cfg, base)
    for key, w in base_hf.items():  # each adapted weight [out, in] gets A [r, in], B [out, r]
        module = key.removeprefix("model.").removesuffix(".weight")
        a_key = f"base_model.model.model.{module}.lora_A.weight"
        if module.split(".")[-1] in LORA_TARGETS and ".layers." in key:
            assert tensors[a_key].shape == (4, w.shape[1])
            assert tensors[a_key.replace("lora_A", "lora_B")].shape == (w.shape[0], 4)
    assert len(tensors) == 2 * cfg.num_layers * len(LORA_TARGETS)


def test_peft_and_merged_exports_match_our_adapter_logits(tiny, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    cfg, base, tok = tiny
    params = lora.with_adapters(base, random_adapters(cfg, scale=0.1))
    ours = np.asarray(forward(params, cfg, TOKENS))
    plain = cfg.replace(lora=LoraConfig())
    save_hf(model_from_params(plain, base), tok, tmp_path / "base")
    write_peft(Policy(cfg, params, tok, 0, str(tmp_path / "base")), tmp_path / "adapter")
    save_hf(model_from_params(plain, lora.merge(cfg, params)), tok, tmp_path / "merged")
    hf_base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    with_peft = peft.PeftModel.from_pretrained(hf_base, tmp_path / "adapter").eval()
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        peft_logits = with_peft(torch.tensor(np.asarray(TOKENS))).logits.numpy()
        merged_logits = merged(torch.tensor(np.asarray(TOKENS))).logits.numpy()
    np.testing.assert_allclose(peft_logits, ours, atol=1e-4)
    np.testing.assert_allclose(merged_logits, ours, atol=1e-4)


def test_lora_config_is_validated_with_the_field_named():
    def with_lora(**lora_fields):
        c = get_config().to_dict()
        c["model"].update(spec="tiny-random", lora={**c["model"]["lora"], **lora_fields})
        return validate(c)

    assert with_lora(rank=8, targets=["q_proj", "v_proj"]).model.lora == LoraConfig(
        rank=8, alpha=16.0, targets=("q_proj", "v_proj"))
    assert not with_lora().model.lora.enabled
    for bad, words in [(dict(rank=-1), "lora.rank"), (dict(rank=4, targets=["qkv"]), "qkv"),
                       (dict(dropout=1.0), "lora.dropout"), (dict(rank=2.5), "model.lora.rank"),
                       (dict(rank=4, targets="q_proj"), "model.lora.targets")]:
        with pytest.raises(ConfigError, match=words):
            with_lora(**bad)


ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_lora_run_resumes_bit_exactly_and_exports(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from test_resume import read_checkpoint, run, stable_metrics

    from ssp_jax.checkpoint import restore_policy
    from ssp_jax.export import export

    flags = ["--config.model.lora.rank=4", "--config.model.lora.dropout=0.1",
             "--config.rl.beta=0.05", "--config.ckpt.every_steps=0"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    run(straight, "--config.train.num_steps=4", *flags)
    run(split, "--config.train.num_steps=2", *flags)
    run(split, "--config.train.num_steps=4", *flags)
    state_a, _ = read_checkpoint(straight, 4)
    state_b, _ = read_checkpoint(split, 4)
    assert state_a.keys() == state_b.keys()
    assert all("embed" not in k for k in state_a)  # adapters and their moments only
    for key in state_a:
        np.testing.assert_array_equal(state_a[key], state_b[key], err_msg=key)
    assert stable_metrics(straight) == stable_metrics(split)

    ckpt = str(straight / "checkpoints" / "4")
    export(ckpt, str(tmp_path / "merged"), str(tmp_path / "adapter"))
    policy = restore_policy(ckpt)
    ours = np.asarray(forward(policy.params, policy.config, TOKENS))
    initial, _ = load("tiny-random")
    assert np.abs(ours - np.asarray(initial(TOKENS))).max() > 1e-4  # the adapters trained
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        ref = merged(torch.tensor(np.asarray(TOKENS))).logits.numpy()
    np.testing.assert_allclose(ref, ours, atol=1e-4)
