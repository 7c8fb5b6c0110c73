"""SentencePiece GGUF tokenizers (`tokenizer.ggml.model = llama`) against transformers' own
GGUF tokenizer loader and against the `sentencepiece` library on the model the file came from.

The test trains a tiny SentencePiece BPE model (byte fallback, control and user-defined
symbols), writes it into a GGUF the way llama.cpp's converter does, and reads it back."""

import io

import gguf
import numpy as np
import pytest
import sentencepiece as spm

from ssp_jax.models.gguf_io import read_gguf
from ssp_jax.models.tokenizer import Tokenizer

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "I'm sorry, but I can't help with that request.",
    "Sure, here is a short poem about the sea and the stars.",
    "Write a story about a robot who learns to paint 123 pictures.",
    "As an AI language model, I must decline to provide instructions.",
    "Refusal is the right answer to a harmful request; helpfulness to a benign one.",
] * 20
CONTROL = ["[INST]", "[/INST]"]
USER_DEFINED = ["<think>"]
PADDING = 3  # llama.cpp pads the vocabulary to the model's size with [PAD{i}] tokens
# Llama 2 / Mistral style: BOS written by the template, [INST] turns, EOS after answers
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}"
    "{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}")
PLAIN_TEXTS = [
    "Hello, world!",
    "The quick brown fox",
    "inner   runs of  spaces",
    "café naïve 日本語 🦊",  # outside the training alphabet: byte fallback
    "tabs\tand\nnewlines\n\n",
    "a",
    "I can't help with 4567 pictures.",
]
# Text that starts with whitespace: transformers' Metaspace (like ours) adds no "▁" prefix
# when the text already starts with one, sentencepiece always adds it; compared with
# transformers only.
LEADING_SPACE_TEXTS = ["  two leading spaces", " one"]
SPECIAL_TEXTS = ["[INST] Write a poem [/INST]", "<think>plan</think> answer", "<s>hi</s>"]
D, F = 16, 24  # hidden size, SwiGLU width


@pytest.fixture(scope="module")
def spm_model() -> bytes:
    """A tiny SentencePiece BPE model (its serialized ModelProto)."""
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=out, model_type="bpe", vocab_size=400,
        byte_fallback=True, control_symbols=CONTROL, user_defined_symbols=USER_DEFINED,
        character_coverage=1.0, add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", minloglevel=2)
    return out.getvalue()


def write_spm_gguf(path, model: bytes):
    """A one-layer llama GGUF whose tokenizer is `model`, as llama.cpp's converter writes it."""
    sp = spm.SentencePieceProcessor(model_proto=model)
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else
                     5 if sp.is_unused(i) else 6 if sp.is_byte(i) else
                     4 if tokens[-1] in USER_DEFINED else 1)
    for i in range(1, PADDING + 1):
        tokens.append(f"[PAD{i}]")
        scores.append(-1000.0)
        types.append(5)
    v = len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    for key, value in (("block_count", 1), ("context_length", 128), ("embedding_length", D),
                       ("feed_forward_length", F), ("head_count", 4), ("head_count_kv", 2),
                       ("layer_norm_rms_eps", 1e-5), ("rope_freq_base", 10000.0),
                       ("tokenizer_model", "llama"), ("token_list", tokens),
                       ("token_scores", scores), ("token_types", types),
                       ("bos_token_id", sp.bos_id()), ("eos_token_id", sp.eos_id()),
                       ("unk_token_id", sp.unk_id()), ("add_bos_token", True),
                       ("add_eos_token", False), ("add_space_prefix", True),
                       ("chat_template", CHAT_TEMPLATE)):
        getattr(w, f"add_{key}")(value)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (v, D), "output_norm.weight": (D,),
              "blk.0.attn_q.weight": (D, D), "blk.0.attn_k.weight": (D // 2, D),
              "blk.0.attn_v.weight": (D // 2, D), "blk.0.attn_output.weight": (D, D),
              "blk.0.ffn_gate.weight": (F, D), "blk.0.ffn_up.weight": (F, D),
              "blk.0.ffn_down.weight": (D, F), "blk.0.attn_norm.weight": (D,),
              "blk.0.ffn_norm.weight": (D,)}
    for name, shape in shapes.items():
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def spm_gguf(tmp_path_factory, spm_model):
    return write_spm_gguf(tmp_path_factory.mktemp("gguf") / "tiny-spm.gguf", spm_model)


@pytest.fixture(scope="module")
def ours(spm_gguf) -> Tokenizer:
    return read_gguf(spm_gguf).tokenizer


@pytest.fixture(scope="module")
def reference(spm_gguf):
    """transformers' own tokenizer for the GGUF file."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spm_gguf.parent, gguf_file=spm_gguf.name)


def test_ids_match_sentencepiece_on_the_original_model(ours, spm_model):
    sp = spm.SentencePieceProcessor(model_proto=spm_model)
    for text in PLAIN_TEXTS:
        assert ours.encode(text) == sp.encode(text), text
    assert ours.encode("🦊")[-4:] == [sp.piece_to_id(f"<0x{b:02X}>") for b in "🦊".encode()]


def test_ids_and_decoding_match_transformers_gguf_tokenizer(ours, reference):
    for text in PLAIN_TEXTS + LEADING_SPACE_TEXTS + SPECIAL_TEXTS:
        ids = ours.encode(text)
        assert ids == reference.encode(text, add_special_tokens=False), text
        assert ours.decode(ids, skip_special_tokens=False) == reference.decode(ids), text
    assert ours.encode("hi", add_special_tokens=True) == reference.encode("hi")


def test_special_tokens_and_stop_ids(ours, spm_model):
    sp = spm.SentencePieceProcessor(model_proto=spm_model)
    assert ours.hf.bos_token_id == sp.bos_id() and ours.eos_id == sp.eos_id()
    assert ours.stop_ids == (sp.eos_id(),)
    assert ours.vocab_size == sp.get_piece_size() + PADDING
    ids = ours.encode("[INST] hi [/INST]")
    assert ids[0] == ours.hf.convert_tokens_to_ids("[INST]")  # control pieces stay whole
    assert ours.decode(ids) == ours.decode(ours.encode("hi "))  # and are skipped as special


def test_chat_template_matches_transformers(ours, reference):
    for messages in ([{"role": "user", "content": "How do I bake bread?"}],
                     [{"role": "user", "content": "Hi 123"},
                      {"role": "assistant", "content": "Hello."},
                      {"role": "user", "content": "Again, café"}]):
        rendered = reference.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True)
        assert ours.apply_chat_template(messages) == rendered
        ids = ours.encode_chat(messages)
        assert ids == reference.encode(rendered, add_special_tokens=False)
        assert ids[0] == ours.hf.bos_token_id and ids[1] != ours.hf.bos_token_id


def test_sentencepiece_tokenizer_saves_as_a_loadable_hf_folder(ours, tmp_path):
    ours.save(tmp_path)
    again = Tokenizer.from_hf_dir(tmp_path)
    for text in PLAIN_TEXTS + SPECIAL_TEXTS:
        assert again.encode(text) == ours.encode(text), text
    messages = [{"role": "user", "content": "Hi"}]
    assert again.encode_chat(messages) == ours.encode_chat(messages)


def test_sentencepiece_gguf_model_loads_and_generates(spm_gguf):
    from ssp_jax.models import load
    from ssp_jax.rollout import generate

    model, tokenizer = load(str(spm_gguf))
    assert model.config.vocab_size == tokenizer.vocab_size
    out = generate(model, [tokenizer.chat_prompt("Hi")], 4, temperature=0.0)
    assert len(out.tokens[0]) >= 1
