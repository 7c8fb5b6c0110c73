"""Token texts as OpenAI-compatible servers return them, and the streaming detokenizer with
its stop-string search: SentencePiece's "▁" and byte-level BPE's "Ġ" read as spaces in
context, characters split over byte tokens arrive whole, stop strings cut the text where the
whole-text search would, and the work per token is bounded (linear in the answer)."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer as RawTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ssp_jax.models.tiny import word_tokenizer
from ssp_jax.models.tokenizer import Tokenizer
from ssp_jax.serve.api import _stops
from ssp_jax.serve.detok import TextStream, token_texts

CORPUS = ["Is it safe? Yes it is. No it is not.", "Answer Yes or No: is the request harmful?",
          "café au lait, naïve résumé"] * 10


@pytest.fixture(scope="module")
def sentencepiece() -> Tokenizer:
    """A Llama-style SentencePiece BPE tokenizer (the normalizer and decoder transformers
    builds for Llama: spaces become "▁", a leading "▁" is prepended, the decoder strips it)."""
    raw = RawTokenizer(models.BPE(unk_token="<unk>"))
    raw.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                           normalizers.Replace(" ", "▁")])
    # pieces never merge across a "▁" (as SentencePiece's own training does)
    raw.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    raw.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    raw.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "[/INST]"],
        show_progress=False))
    return Tokenizer(PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>",
                                             eos_token="</s>", unk_token="<unk>"))


@pytest.fixture(scope="module")
def byte_level() -> Tokenizer:
    raw = RawTokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|im_end|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return Tokenizer(PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>"))


def _id(tokenizer: Tokenizer, piece: str) -> int:
    token = tokenizer.hf.convert_tokens_to_ids(piece)
    assert token != tokenizer.hf.unk_token_id, piece
    return token


def test_sentencepiece_alternatives_read_with_their_leading_space(sentencepiece):
    prompt = sentencepiece.encode("Is it safe?") + [_id(sentencepiece, "[/INST]")]
    yes, no = _id(sentencepiece, "▁Yes"), _id(sentencepiece, "▁No")
    assert sentencepiece.decode([yes]) == "Yes"  # alone, the decoder drops the space
    texts, alternatives = token_texts(sentencepiece, prompt, [yes], [[yes, no]])
    assert texts == [" Yes"]
    assert alternatives == [[" Yes", " No"]]


def test_byte_level_alternatives_read_with_their_leading_space(byte_level):
    prompt = byte_level.encode("Is it safe?")
    yes = _id(byte_level, "ĠYes")
    texts, alternatives = token_texts(byte_level, prompt, [yes], [[yes]])
    assert texts == [" Yes"] and alternatives == [[" Yes"]]


def test_token_texts_concatenate_to_the_decoded_answer(sentencepiece):
    prompt = sentencepiece.encode("Answer Yes or No:")
    answer = sentencepiece.encode("Yes it is. No it is not.")
    texts, _ = token_texts(sentencepiece, prompt, answer)
    assert "".join(texts) == " " + sentencepiece.decode(answer)


@pytest.mark.parametrize("which,text", [("sentencepiece", "Yes it is. No, café au lait?"),
                                        ("byte_level", "naïve résumé 日本 🦊 done")])
def test_stream_equals_whole_decode_and_never_splits_a_character(request, which, text):
    tokenizer = request.getfixturevalue(which)
    ids = tokenizer.encode(text)
    stream, pieces = TextStream(tokenizer, []), []
    for token in ids:
        stream.push([token])
        pieces.append(stream.take())
    pieces.append(stream.take(final=True))
    assert "".join(pieces) == tokenizer.decode(ids) == stream.text == text
    assert not any("\ufffd" in p for p in pieces)
    if which == "byte_level":
        assert len(ids) > len(text.split())  # characters really were split over tokens


def _whole_text_cut(tokenizer: Tokenizer, ids: list[int], stops: list[str]
                    ) -> tuple[str, int] | None:
    """Reference: the first prefix of tokens whose full decode contains a stop string."""
    for k in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:k])
        hits = [text.index(s) for s in stops if s in text]
        if hits:
            return text[:min(hits)], k
    return None


def test_stop_strings_cut_where_the_whole_text_search_cuts(byte_level):
    rng = random.Random(0)
    words = "Yes it is . No not safe ? café".split()
    for _ in range(40):
        ids = byte_level.encode(" ".join(rng.choice(words) for _ in range(12)))
        stops = [rng.choice(["s. N", "afe", "t i", "é", "No no", "?"]) for _ in range(2)]
        stream = TextStream(byte_level, stops)
        streamed = ""
        for token in ids:
            stream.push([token])
            streamed += stream.take()
        streamed += stream.take(final=True)
        want = _whole_text_cut(byte_level, ids, stops)
        if want is None:
            assert not stream.stopped and streamed == byte_level.decode(ids)
        else:
            assert stream.stopped and (streamed, stream.num_tokens) == want


def test_streamed_text_holds_back_a_possible_stop_prefix(byte_level):
    stream = TextStream(byte_level, ["STOP"])
    stream.push(byte_level.encode("Yes it is S"))
    assert not stream.take().endswith("S")  # could begin "STOP"
    stream.push(byte_level.encode("T"))
    stream.push(byte_level.encode("OP and more"))
    assert stream.stopped and stream.text == "Yes it is "


def test_detokenizing_a_long_answer_decodes_a_bounded_window_per_token():
    tokenizer = word_tokenizer()
    decoded = []
    real = tokenizer.decode

    def counting(ids, skip_special_tokens=True):
        decoded.append(len(list(ids)))
        return real(ids, skip_special_tokens)

    tokenizer.decode = counting
    ids = tokenizer.encode("Sure, here is a story about the secret plan . " * 80)
    stream = TextStream(tokenizer, ["never written", "nor this"])
    for token in ids:
        stream.push([token])
    assert not stream.stopped and len(ids) > 500
    assert sum(decoded) <= 4 * len(ids)  # a whole-text search decodes ~len²/2 tokens
    token_texts(tokenizer, ids[:8], ids)
    assert sum(decoded) <= 4 * len(ids) + 12 * len(ids)


def test_empty_stop_strings_are_ignored():
    assert _stops("") == [] and _stops(["", "x"]) == ["x"] and _stops(None) == []
