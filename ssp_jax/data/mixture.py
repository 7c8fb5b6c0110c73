"""Weighted mixture of goal sources with batches that are a pure function of the step.

Sampling scheme (no iterator state, so resuming at step k replays nothing):

* Global slot `g = step * batch_size + j` for batch position `j`.
* Weights are resolved to small integer counts `c_s` (exact for rational weights with a
  common denominator up to 1000, else rounded to 1/1000 shares). Slots are grouped in
  blocks of `L = sum(c_s)`; block `b` holds exactly `c_s` slots of source `s`, in an
  order shuffled with `(seed, b)`. Slot `r` of block `b` is then item number
  `b * c_s + (earlier slots of s in the block)` of source `s`'s stream.
* Source `s` (with `n_s` items) serves its stream in epochs: stream item `k` is
  `items[perm(seed, s, k // n_s)[k % n_s]]`, a fresh permutation per epoch.

Keep `batch_size` fixed over a run: the slot numbering depends on it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ssp_jax.data.builtin import builtin_items
from ssp_jax.data.loaders import (
    PromptItem,
    load_advbench,
    load_csv,
    load_harmbench,
    load_jsonl,
    load_xstest,
)
from ssp_jax.sections import plain_data

SOURCE_KINDS = ("harmbench", "advbench", "xstest", "csv", "jsonl", "builtin", "tfds")
MAX_BLOCK = 1000  # weights resolve to shares of at most this many slots
_SOURCE_KEYS = ("name", "kind", "path", "weight")
# Stream tags keep the random streams of the three uses apart for one seed.
_TAG_BLOCK, _TAG_EPOCH, _TAG_HOLDOUT = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class GoalSource:
    """One data set in the mixture.

    `path` is the file for file kinds, the TFDS data_dir for "tfds", None for "builtin".
    `options` are keyword arguments of the kind's loader, e.g. include_copyright
    (harmbench), label_filter (xstest), text_column / id_column / label_column
    (csv, jsonl), subset (builtin), dataset / split (tfds).
    """

    name: str
    kind: str
    path: str | None = None
    weight: float = 1.0
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


_FILE_LOADERS: dict[str, Callable[..., list[PromptItem]]] = {
    "harmbench": load_harmbench,
    "advbench": load_advbench,
    "xstest": load_xstest,
    "csv": load_csv,
    "jsonl": load_jsonl,
}


def _loader(kind: str) -> Callable[..., list[PromptItem]]:
    if kind == "builtin":
        return builtin_items
    if kind == "tfds":
        from ssp_jax.data import tfds_builders  # optional dependency, imported lazily

        return tfds_builders.load_tfds
    return _FILE_LOADERS[kind]


def load_source(src: GoalSource) -> list[PromptItem]:
    """Load one source's items with its loader; items carry `source=src.name`."""
    where = f"source {src.name!r} (kind {src.kind!r})"
    if src.kind not in SOURCE_KINDS:
        raise ValueError(f"{where}: unknown kind; valid kinds: {SOURCE_KINDS}")
    fn = _loader(src.kind)
    params = inspect.signature(fn).parameters
    allowed = {k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k != "source"}
    required = {k for k in allowed if params[k].default is inspect.Parameter.empty}
    unknown = sorted(set(src.options) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {unknown}; valid: {sorted(allowed)}")
    missing = sorted(required - set(src.options))
    if missing:
        raise ValueError(f"{where}: missing required option(s) {missing}")
    if src.kind == "builtin":
        if src.path is not None:
            raise ValueError(f"{where}: takes no path, got path={src.path!r}")
        return fn(source=src.name, **src.options)
    if not src.path:
        raise ValueError(f"{where}: needs a path (the data file, or data_dir for tfds)")
    return fn(src.path, source=src.name, **src.options)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def split_holdout(
    items: Sequence[PromptItem], fraction: float, seed: int
) -> tuple[list[PromptItem], list[PromptItem]]:
    """Deterministic `(train, holdout)` split; `round(fraction * n)` items are held out.

    Which items are held out depends only on (len(items), fraction, seed); both parts
    keep the input order. Raises if either part would be empty.
    """
    seed = _check_seed(seed)
    if not (isinstance(fraction, (int, float)) and 0.0 < fraction < 1.0):
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction!r}")
    n = len(items)
    k = round(n * fraction)
    if k == 0 or k == n:
        raise ValueError(
            f"holdout fraction {fraction} of {n} items leaves an empty "
            f"{'holdout' if k == 0 else 'training'} split"
        )
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng([seed, _TAG_HOLDOUT]).permutation(n)[:k]] = True
    train = [it for it, h in zip(items, held, strict=True) if not h]
    holdout = [it for it, h in zip(items, held, strict=True) if h]
    return train, holdout


def block_counts(weights: Sequence[float], names: Sequence[str]) -> tuple[int, ...]:
    """Smallest integer counts `c` (sum ≤ MAX_BLOCK) with `c / sum(c)` = weight shares.

    Falls back to largest-remainder rounding to `MAX_BLOCK` slots when no exact block
    exists; a source whose share rounds to 0 slots is an error.
    """
    w = np.asarray(weights, dtype=np.float64)
    p = w / w.sum()
    for size in range(1, MAX_BLOCK + 1):
        c = np.rint(p * size)
        if np.all(c >= 1) and np.all(np.abs(p * size - c) <= 1e-9 * size):
            return tuple(int(x) for x in c)
    raw = p * MAX_BLOCK
    c = np.floor(raw).astype(np.int64)
    short = MAX_BLOCK - int(c.sum())
    c[np.argsort(-(raw - c), kind="stable")[:short]] += 1
    for name, weight, count in zip(names, w, c, strict=True):
        if count == 0:
            raise ValueError(
                f"source {name!r}: weight {weight} is below 1/{MAX_BLOCK} of the total "
                f"weight {w.sum()}; raise it or drop the source"
            )
    return tuple(int(x) for x in c)


@functools.lru_cache(maxsize=256)
def _block_order(seed: int, block: int, counts: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Source of each slot in a block, and each slot's rank among its source's slots.

    Returns `(source, rank)`, both int64 `[sum(counts)]`.
    """
    pattern = np.repeat(np.arange(len(counts)), counts)
    source = np.random.default_rng([seed, _TAG_BLOCK, block]).permutation(pattern)
    rank = np.empty_like(source)
    for s, c in enumerate(counts):
        rank[source == s] = np.arange(c)
    source.setflags(write=False)
    rank.setflags(write=False)
    return source, rank


@functools.lru_cache(maxsize=256)
def _epoch_order(seed: int, source: int, epoch: int, n: int) -> np.ndarray:
    """Item order of one epoch of a source: a permutation, int64 `[n]`."""
    perm = np.random.default_rng([seed, _TAG_EPOCH, source, epoch]).permutation(n)
    perm.setflags(write=False)
    return perm


class GoalMixture:
    """Weighted sampler over goal sources; `batch(step, batch_size)` is pure in the step.

    All sources are loaded (and validated) at construction. With `holdout_fraction > 0`
    each source is split by `split_holdout`; training batches use the rest and
    `holdout` lists the held-out items of all sources.
    """

    def __init__(
        self,
        sources: Sequence[GoalSource],
        seed: int,
        *,
        holdout_fraction: float = 0.0,
    ) -> None:
        self.seed = _check_seed(seed)
        self.sources = tuple(sources)
        if not self.sources:
            raise ValueError("goal mixture has no sources; give at least one")
        names = [s.name for s in self.sources]
        for name in names:
            if not isinstance(name, str) or not name:
                raise ValueError(f"source name must be a non-empty string, got {name!r}")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate source name(s) {dupes}; names must be unique")
        for s in self.sources:
            if isinstance(s.weight, bool) or not isinstance(s.weight, (int, float)):
                raise ValueError(f"source {s.name!r}: weight must be a number, got {s.weight!r}")
            if not (math.isfinite(s.weight) and s.weight > 0):
                raise ValueError(
                    f"source {s.name!r}: weight must be positive and finite, got {s.weight!r}"
                )
        self.counts = block_counts([s.weight for s in self.sources], names)
        loaded = [load_source(s) for s in self.sources]
        self.holdout: list[PromptItem] = []
        if holdout_fraction:
            parts = []
            for src, items in zip(self.sources, loaded, strict=True):
                try:
                    parts.append(split_holdout(items, holdout_fraction, self.seed))
                except ValueError as e:
                    raise ValueError(f"source {src.name!r}: {e}") from e
            loaded = [train for train, _ in parts]
            self.holdout = [item for _, held in parts for item in held]
        self.items: tuple[tuple[PromptItem, ...], ...] = tuple(tuple(x) for x in loaded)

    def batch(self, step: int, batch_size: int) -> list[PromptItem]:
        """The `batch_size` items of training step `step` (≥ 0), same for same (seed, step)."""
        if step < 0 or batch_size <= 0:
            raise ValueError(f"need step >= 0 and batch_size > 0, got {step}, {batch_size}")
        size = sum(self.counts)
        out = []
        for g in range(step * batch_size, (step + 1) * batch_size):
            block, r = divmod(g, size)
            source, rank = _block_order(self.seed, block, self.counts)
            s = int(source[r])
            k = block * self.counts[s] + int(rank[r])
            n = len(self.items[s])
            epoch, i = divmod(k, n)
            out.append(self.items[s][_epoch_order(self.seed, s, epoch, n)[i]])
        return out


def from_config(cfg: Any) -> GoalMixture:
    """Build a `GoalMixture` from a dict or ml_collections ConfigDict of this shape::

        seed: int                      # sampling seed (>= 0)
        holdout_fraction: float        # optional, default 0: share of each source held out
        sources: list of dicts, each with
          name: str                    # unique; becomes PromptItem.source
          kind: str                    # harmbench|advbench|xstest|csv|jsonl|builtin|tfds
          path: str                    # data file; TFDS data_dir for tfds; omit for builtin
          weight: float                # optional, default 1.0; relative sampling weight
          <other keys>                 # loader options, e.g. include_copyright,
                                       # label_filter, text_column, id_column,
                                       # label_column, subset, dataset, split

    Example: {"seed": 0, "sources": [{"name": "hb", "kind": "harmbench",
    "path": "data/harmbench/harmbench_behaviors_text_val.csv"},
    {"name": "builtin", "kind": "builtin", "weight": 0.5}]}.
    """
    cfg = plain_data(cfg)
    if not isinstance(cfg, dict):
        raise ValueError(f"data config must be a mapping, got {type(cfg).__name__}")
    unknown = sorted(set(cfg) - {"seed", "sources", "holdout_fraction"})
    if unknown:
        raise ValueError(
            f"data config: unknown key(s) {unknown}; valid: seed, sources, holdout_fraction"
        )
    for key in ("seed", "sources"):
        if key not in cfg:
            raise ValueError(f"data config: missing key {key!r}")
    if not isinstance(cfg["sources"], list):
        raise ValueError(f"data config: 'sources' must be a list of dicts, got {cfg['sources']!r}")
    sources = []
    for n, entry in enumerate(cfg["sources"]):
        if not isinstance(entry, dict):
            raise ValueError(f"data config: sources[{n}] must be a dict, got {entry!r}")
        for key in ("name", "kind"):
            if key not in entry:
                raise ValueError(f"data config: sources[{n}] is missing key {key!r}")
        options = {k: v for k, v in entry.items() if k not in _SOURCE_KEYS}
        sources.append(
            GoalSource(
                name=entry["name"],
                kind=entry["kind"],
                path=entry.get("path"),
                weight=entry.get("weight", 1.0),
                options=options,
            )
        )
    return GoalMixture(sources, cfg["seed"], holdout_fraction=cfg.get("holdout_fraction", 0.0))
