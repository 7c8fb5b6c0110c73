"""Tokenizer wrapper on a tiny byte-level BPE trained here and saved as a Hugging Face folder."""

import json

import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from ssp_jax.models.tokenizer import Tokenizer

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! Hello tokenizer, hello chat.",
    "Numbers like 12345 and 2024, café, naïve, 日本語.",
    "def f(x):\n    return x * 2\n",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>"]  # ids 0, 1, 2, 3
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TEXTS = ["Hello world!", "x = 12345 * 2  \n\n  end", "café 日本語 🦊 naïve", "   spaces", ""]


@pytest.fixture(scope="module")
def backend() -> tokenizers.Tokenizer:
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES * 3, trainer)
    return tok


def _save_folder(folder, backend, *, chat_template=CHATML, pad_token=None, bos_token=None,
                 generation_config=None):
    hf = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>",
                                 pad_token=pad_token, bos_token=bos_token,
                                 chat_template=chat_template)
    hf.save_pretrained(str(folder))
    if generation_config is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation_config))
    return folder


def test_encode_decode_round_trip(tmp_path, backend):
    tok = Tokenizer.from_hf_dir(_save_folder(tmp_path, backend))
    for text in TEXTS:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    assert tok.encode("<|im_end|>") == [2]
    assert tok.decode([2, *tok.encode("hi")], skip_special_tokens=False) == "<|im_end|>hi"
    assert tok.decode([2, *tok.encode("hi")]) == "hi"
    assert tok.batch_decode([tok.encode(t) for t in TEXTS]) == TEXTS
    assert tok.vocab_size == backend.get_vocab_size()


def test_chat_template_renders_chatml(tmp_path, backend):
    tok = Tokenizer.from_hf_dir(_save_folder(tmp_path, backend))
    messages = [{"role": "system", "content": "Be safe."}, {"role": "user", "content": "Hi 1+1?"}]
    expected = ("<|im_start|>system\nBe safe.<|im_end|>\n<|im_start|>user\nHi 1+1?<|im_end|>\n"
                "<|im_start|>assistant\n")
    assert tok.apply_chat_template(messages) == expected
    assert tok.apply_chat_template(messages, add_generation_prompt=False) == expected[:-len(
        "<|im_start|>assistant\n")]
    assert tok.encode_chat(messages) == tok.encode(expected)
    assert tok.encode_chat(messages)[0] == 1  # <|im_start|>, no BOS added
    assert tok.chat_prompt("Hi 1+1?", system="Be safe.") == tok.encode(expected)
    assert tok.chat_prompt("Hi 1+1?") == tok.encode(expected[expected.index("<|im_start|>user"):])


def test_encode_chat_has_exactly_one_bos(tmp_path, backend):
    with_bos = tokenizers.Tokenizer.from_str(backend.to_str())
    with_bos.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", 3)])
    plain = Tokenizer.from_hf_dir(_save_folder(tmp_path / "a", with_bos, bos_token="<s>"))
    in_template = Tokenizer.from_hf_dir(_save_folder(
        tmp_path / "b", with_bos, bos_token="<s>", chat_template="{{ bos_token }}" + CHATML))
    assert plain.encode("hi", add_special_tokens=True) == [3, *plain.encode("hi")]
    body = plain.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert plain.chat_prompt("hi") == [3, *body]
    assert in_template.chat_prompt("hi") == [3, *body]
    spaced = Tokenizer.from_hf_dir(_save_folder(
        tmp_path / "c", with_bos, bos_token="<s>", chat_template=" {{ bos_token }}" + CHATML))
    assert spaced.chat_prompt("hi").count(3) == 1  # white space before the template's BOS


def test_stop_ids_include_generation_config_and_end_of_turn(tmp_path, backend):
    tok = Tokenizer.from_hf_dir(_save_folder(
        tmp_path, backend, generation_config={"eos_token_id": [0, 2]}))
    assert tok.eos_id == 2
    assert tok.stop_ids == (2, 0)
    single = Tokenizer.from_hf_dir(_save_folder(
        tmp_path / "int", backend, generation_config={"eos_token_id": 0}))
    assert single.stop_ids == (2, 0)


def test_pad_falls_back_to_eos(tmp_path, backend):
    assert Tokenizer.from_hf_dir(_save_folder(tmp_path / "a", backend)).pad_id == 2
    padded = Tokenizer.from_hf_dir(_save_folder(tmp_path / "b", backend, pad_token="<|endoftext|>"))
    assert padded.pad_id == 0


def test_save_round_trip_keeps_encoding_template_and_stops(tmp_path, backend):
    tok = Tokenizer.from_hf_dir(_save_folder(
        tmp_path / "src", backend, generation_config={"eos_token_id": [0]}))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    tok.save(tmp_path / "out")
    again = Tokenizer.from_hf_dir(tmp_path / "out")
    for text in TEXTS:
        assert again.encode(text) == tok.encode(text)
    messages = [{"role": "user", "content": "hello"}]
    assert again.apply_chat_template(messages) == tok.apply_chat_template(messages)
    assert again.stop_ids == tok.stop_ids == (2, 0)
    saved = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert saved == {"do_sample": False, "eos_token_id": [2, 0]}


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer files in .*empty"):
        (tmp_path / "empty").mkdir()
        Tokenizer.from_hf_dir(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="tokenizer folder not found: .*absent"):
        Tokenizer.from_hf_dir(tmp_path / "absent")


def test_missing_chat_template_is_a_clear_error(tmp_path, backend):
    tok = Tokenizer.from_hf_dir(_save_folder(tmp_path, backend, chat_template=None))
    with pytest.raises(ValueError, match="no chat template"):
        tok.chat_prompt("hi")


def test_bad_generation_config_eos_is_a_clear_error(tmp_path, backend):
    _save_folder(tmp_path, backend, generation_config={"eos_token_id": "</s>"})
    with pytest.raises(ValueError, match="generation_config.json: field eos_token_id .*'</s>'"):
        Tokenizer.from_hf_dir(tmp_path)
