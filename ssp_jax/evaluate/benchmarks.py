"""Benchmark files named on a command line: NAME=PATH, KIND:NAME=PATH or csv:COLUMN:NAME=PATH
-> (name, kind, items); paths may be local or `gs://` (`epath`)."""

from __future__ import annotations

import csv
import functools

from etils import epath

from ssp_jax.data import loaders
from ssp_jax.data.loaders import PromptItem
from ssp_jax.paths import as_path, open_text

HEADERS = {"harmbench": {"Behavior", "FunctionalCategory"}, "advbench": {"goal", "target"},
           "xstest": {"prompt", "type", "label"}}


def benchmark_kind(path: epath.Path) -> str:
    """harmbench / advbench / xstest from a CSV's header."""
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    with open_text(path) as f:
        header = set(next(csv.reader(f), []))
    for kind, needed in HEADERS.items():
        if needed <= header:
            return kind
    raise ValueError(f"{path}: cannot tell the benchmark format from its columns "
                     f"{sorted(header)}; give it as KIND:NAME=PATH (harmbench, advbench, "
                     "xstest, csv:<text column>)")


def parse_benchmark(spec: str, limit: int | None) -> tuple[str, str, list]:
    """NAME=PATH, KIND:NAME=PATH or csv:COLUMN:NAME=PATH -> (name, kind, items). KIND
    harmbench_standard reads a HarmBench CSV without its contextual rows."""
    if "=" not in spec:
        raise ValueError(f"--benchmark {spec!r}: expected NAME=PATH or KIND:NAME=PATH")
    head, path_text = spec.split("=", 1)
    path = as_path(path_text)
    parts = head.split(":")
    readers = {"harmbench": loaders.load_harmbench,
               "harmbench_standard": functools.partial(loaders.load_harmbench,
                                                       include_contextual=False),
               "advbench": loaders.load_advbench, "xstest": loaders.load_xstest}
    if parts[0] == "csv" and len(parts) == 3:
        kind, name = "goals", parts[2]
        items = loaders.load_csv(path, text_column=parts[1], source=name)
    elif len(parts) <= 2:
        name = parts[-1]
        kind = parts[0] if len(parts) == 2 else benchmark_kind(path)
        if kind not in readers:
            raise ValueError(f"--benchmark {spec!r}: unknown kind {kind!r}; valid: "
                             f"{', '.join(readers)}, csv:<text column>")
        items = readers[kind](path)
    else:
        raise ValueError(f"--benchmark {spec!r}: expected NAME=PATH, KIND:NAME=PATH or "
                         "csv:COLUMN:NAME=PATH")
    return name, kind, items[:limit] if limit else items


def judge_fields(item: PromptItem) -> tuple[str, str | None]:
    """(request, context) for the judge: a HarmBench contextual behaviour (the defender sees
    its context, a blank line, then the behaviour) gives its bare behaviour and the context as
    a field; any other item its text and None."""
    behavior = item.meta.get("behavior")
    if item.meta.get("functional_category") != "contextual" or not behavior:
        return item.text, None
    suffix = f"\n\n{behavior}"
    if not item.text.endswith(suffix):
        raise ValueError(f"{item.source} item {item.id}: a contextual behaviour's text does not "
                         f"end with its behaviour {behavior!r}")
    return behavior, item.text[:-len(suffix)]
