"""SentencePiece tokenizers of GGUF files (`tokenizer.ggml.model = llama`: Llama 2, Mistral,
and many community GGUFs), rebuilt from the metadata.

llama.cpp stores a SentencePiece BPE model as parallel lists: `tokenizer.ggml.tokens` (the
pieces, "▁" for a space, "<0x41>" for a byte), `tokenizer.ggml.scores` (merge priority: the
adjacent pair whose merged piece scores highest merges first) and `tokenizer.ggml.token_type`
(SentencePiece's own piece types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
6 byte). `sentencepiece_proto` turns them back into a SentencePiece `ModelProto`, which the
`sentencepiece` library loads (and so validates); `sentencepiece_tokenizer` then builds the
equivalent `tokenizers` BPE (byte fallback, merges ranked by score, the "▁" prefix) with the
file's special tokens and chat template, so the result behaves like every other tokenizer here
(chat templates, `save_pretrained`). Token ids equal transformers' own GGUF loader's; they
equal `sentencepiece`'s too, except that a text already starting with whitespace gets no
extra "▁" prefix (sentencepiece always adds one), as in transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import sentencepiece
import tokenizers
import transformers
from sentencepiece import sentencepiece_model_pb2

from ssp_jax.models.tokenizer import Tokenizer

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def sentencepiece_proto(meta: dict[str, Any], path: Path) -> sentencepiece_model_pb2.ModelProto:
    """The SentencePiece BPE model described by GGUF metadata (`meta`: key -> value, with
    `tokenizer.ggml.tokens` present)."""
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    scores: list[float] = meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    if not len(tokens) == len(scores) == len(types):
        raise ValueError(f"{path}: tokenizer.ggml.tokens, scores and token_type have "
                         f"{len(tokens)}, {len(scores)} and {len(types)} entries")
    proto = sentencepiece_model_pb2.ModelProto()
    for i, (piece, score, kind) in enumerate(zip(tokens, scores, types)):
        if kind not in (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE):
            raise ValueError(f"{path}: tokenizer.ggml.token_type[{i}] = {kind}; valid: 1 to 6")
        proto.pieces.add(piece=piece, score=float(score), type=kind)
    spec = proto.trainer_spec
    spec.model_type = sentencepiece_model_pb2.TrainerSpec.BPE
    spec.vocab_size = len(tokens)
    spec.byte_fallback = BYTE in types
    for field, key in (("unk_id", "unknown_token_id"), ("bos_id", "bos_token_id"),
                       ("eos_id", "eos_token_id"), ("pad_id", "padding_token_id")):
        setattr(spec, field, int(meta.get(f"tokenizer.ggml.{key}", -1)))
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    return proto


def bpe_merges(pieces: Sequence[str], scores: Sequence[float], types: Sequence[int]
               ) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's score-driven merging: every split (left, right)
    of a normal piece into two normal pieces, ranked by the merged piece's score (highest
    first; ties by piece id, then by the longer left part)."""
    normal = {p: i for i, (p, t) in enumerate(zip(pieces, types)) if t == NORMAL}
    ranked = []
    for piece, i in normal.items():
        for cut in range(len(piece) - 1, 0, -1):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-scores[i], i, -cut, left, right))
    return [(left, right) for *_, left, right in sorted(ranked)]


def sentencepiece_tokenizer(meta: dict[str, Any], path: Path) -> Tokenizer:
    """The tokenizer of a GGUF whose `tokenizer.ggml.model` is `llama` (SentencePiece BPE)."""
    proto = sentencepiece_proto(meta, path)
    try:
        sp = sentencepiece.SentencePieceProcessor(model_proto=proto.SerializeToString())
    except RuntimeError as e:
        raise ValueError(f"{path}: the SentencePiece model in the metadata is invalid ({e})") \
            from None
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    scores = [sp.get_score(i) for i in range(len(pieces))]
    types = [p.type for p in proto.pieces]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    if len(vocab) != len(pieces):
        raise ValueError(f"{path}: tokenizer.ggml.tokens lists a piece twice")

    def token(index: int) -> str | None:
        return pieces[index] if 0 <= index < len(pieces) else None

    add_prefix = proto.normalizer_spec.add_dummy_prefix
    hf = transformers.LlamaTokenizer(
        vocab=vocab, merges=bpe_merges(pieces, scores, types), add_prefix_space=add_prefix,
        legacy=False, unk_token=token(sp.unk_id()), bos_token=token(sp.bos_id()),
        eos_token=token(sp.eos_id()), pad_token=token(sp.pad_id()),
        # llama.cpp adds BOS to a SentencePiece vocabulary unless the file says otherwise
        add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", True)),
        add_eos_token=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        chat_template=meta.get("tokenizer.chat_template"))
    hf.add_special_tokens({"additional_special_tokens": [
        tokenizers.AddedToken(p, special=True, normalized=False)
        for p, t in zip(pieces, types) if t == CONTROL]}, replace_extra_special_tokens=False)
    hf.add_tokens([tokenizers.AddedToken(p, special=False, normalized=False)
                   for p, t in zip(pieces, types) if t == USER_DEFINED])
    extra_eos = [meta[f"tokenizer.ggml.{k}"] for k in ("eot_token_id", "eom_token_id")
                 if f"tokenizer.ggml.{k}" in meta]
    return Tokenizer(hf, extra_eos)
