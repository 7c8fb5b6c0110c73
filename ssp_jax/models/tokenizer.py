"""Tokenizer wrapper shared by the Hugging Face folder and GGUF loading paths."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import transformers

# Files of which at least one must be in a folder for transformers to build a tokenizer from it.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
# End-of-turn markers of common chat formats (ChatML, Llama 3, Gemma); stop tokens if in the vocab.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_turn|>", "<end_of_turn>")
GENERATION_CONFIG = "generation_config.json"


def _read_generation_eos_ids(path: Path) -> tuple[int, ...]:
    """EOS ids listed as `eos_token_id` (an int or a list of ints) in a `generation_config.json`."""
    if not path.is_file():
        return ()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    value = data.get("eos_token_id") if isinstance(data, dict) else None
    if value is None:
        return ()
    ids = [value] if isinstance(value, int) else value
    if not isinstance(ids, list) or not all(type(i) is int for i in ids):
        raise ValueError(
            f"{path}: field eos_token_id must be an int or a list of ints, got {value!r}"
        )
    return tuple(ids)


class Tokenizer:
    """A transformers tokenizer plus the stop ids generation needs.

    `hf` is the wrapped transformers tokenizer; `extra_eos_ids` are ids that also end generation
    (from `generation_config.json` or GGUF metadata).
    """

    def __init__(self, hf: Any, extra_eos_ids: Sequence[int] = ()) -> None:
        self.hf = hf
        self._extra_eos_ids = tuple(int(i) for i in extra_eos_ids)
        eos = hf.eos_token_id
        if eos is None:
            if not self._extra_eos_ids:
                raise ValueError(
                    f"tokenizer {hf.name_or_path!r} has no eos_token and no generation_config "
                    "eos_token_id; generation needs an end-of-sequence token"
                )
            eos = self._extra_eos_ids[0]
        self._eos_id = int(eos)
        vocab = hf.get_vocab()
        turn_ends = [vocab[token] for token in END_OF_TURN_TOKENS if token in vocab]
        self._stop_ids = tuple(dict.fromkeys([self._eos_id, *self._extra_eos_ids, *turn_ends]))
        with_specials = hf.encode("a", add_special_tokens=True)
        plain = hf.encode("a", add_special_tokens=False)
        bos = hf.bos_token_id
        self._prepends_bos = (
            bos is not None and len(with_specials) > len(plain) and with_specials[0] == bos
        )

    @classmethod
    def from_hf_dir(cls, path: str | os.PathLike[str]) -> "Tokenizer":
        """Loads the tokenizer of a local Hugging Face model folder (offline)."""
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"tokenizer folder not found: {folder}")
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise FileNotFoundError(
                f"no tokenizer files in {folder}: expected one of {', '.join(TOKENIZER_FILES)}"
            )
        hf = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        return cls(hf, _read_generation_eos_ids(folder / GENERATION_CONFIG))

    @property
    def eos_id(self) -> int:
        return self._eos_id

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """EOS, generation-config EOS ids and end-of-turn tokens; any of them ends a reply."""
        return self._stop_ids

    @property
    def pad_id(self) -> int:
        """The pad token id, or the EOS id when the tokenizer has no pad token."""
        pad = self.hf.pad_token_id
        return self._eos_id if pad is None else int(pad)

    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer can produce (added tokens included)."""
        return len(self.hf)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; special-token strings in `text` map to their ids."""
        return list(self.hf.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def batch_decode(
        self, rows: Iterable[Iterable[int]], skip_special_tokens: bool = True
    ) -> list[str]:
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in rows]

    def apply_chat_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The chat template rendered for `messages` (dicts with `role` and `content`)."""
        if not self.hf.chat_template:
            raise ValueError(
                f"tokenizer {self.hf.name_or_path!r} has no chat template; use a chat/instruct "
                "model or a tokenizer whose tokenizer_config.json or chat_template.jinja has one"
            )
        return self.hf.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def encode_chat(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of the rendered chat; BOS is prepended only if the tokenizer normally adds
        one and the template did not already write it."""
        return self.encode_prompt(self.apply_chat_template(messages, add_generation_prompt))

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a rendered prompt (special-token strings parsed); BOS is prepended only
        if the tokenizer normally adds one and `text` does not already start with it, leading
        white space aside (Llama Guard 3's template writes one before `<|begin_of_text|>`)."""
        ids = self.encode(text)
        bos = self.hf.bos_token_id
        starts_with_bos = bool(ids) and ids[0] == bos or (
            self.hf.bos_token is not None and text.lstrip().startswith(self.hf.bos_token))
        if self._prepends_bos and not starts_with_bos:
            ids = [int(bos), *ids]
        return ids

    def chat_prompt(self, user: str, system: str | None = None) -> list[int]:
        """Prompt ids for one user turn, with a system turn first when `system` is given
        (None leaves the template's own default)."""
        messages = [] if system is None else [{"role": "system", "content": system}]
        messages.append({"role": "user", "content": user})
        return self.encode_chat(messages)

    def save(self, out_dir: str | os.PathLike[str]) -> None:
        """Writes the tokenizer files (`save_pretrained`) to `out_dir`; extra EOS ids go into
        `generation_config.json` (merged into an existing one) so `from_hf_dir` restores them."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.hf.save_pretrained(str(out))
        if self._extra_eos_ids:
            path = out / GENERATION_CONFIG
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            data["eos_token_id"] = list(dict.fromkeys([self._eos_id, *self._extra_eos_ids]))
            path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
