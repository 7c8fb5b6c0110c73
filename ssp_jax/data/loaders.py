"""Read goal / prompt sets from files (local or `gs://`, through `epath`) into `PromptItem` lists.

Formats: HarmBench behaviour CSV, AdvBench `harmful_behaviors.csv`, XSTest
`xstest_prompts.csv`, and generic CSV / JSONL with a named text column. Every loader
strips surrounding whitespace from text fields, raises `FileNotFoundError` for a missing
file and `ValueError` naming the file (and the line, for a bad row) for anything
malformed, and never returns an empty list or duplicate ids.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Iterator, Sequence
from typing import Any

from etils import epath

from ssp_jax.paths import PathLike, as_path, open_text

HARMBENCH_CATEGORIES = ("standard", "contextual", "copyright")
XSTEST_LABEL_FILTERS = ("safe", "unsafe", "both")


@dataclasses.dataclass(frozen=True)
class PromptItem:
    """One prompt: `text` goes to the model; the rest describes where it came from."""

    text: str  # what the model sees
    source: str  # data-set name, e.g. "harmbench"
    id: str  # unique within `source`
    label: str | None = None  # e.g. XSTest "safe"/"unsafe", HarmBench semantic category
    meta: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)


def _existing_file(path: PathLike) -> epath.Path:
    p = as_path(path)
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "not found"
        raise FileNotFoundError(f"data file {what}: {p}")
    return p


def read_csv_rows(path: PathLike, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield `(line, row)` per data row; `line` is the 1-based line where the row starts.

    Quoted fields may span lines; the start line is the previous record's end line + 1
    (`csv.reader.line_num` counts physical lines). Blank lines are skipped.
    """
    p = _existing_file(path)
    try:
        with open_text(p) as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{p}: file is empty (expected a CSV header line)")
            header = [h.strip() for h in header]
            missing = [c for c in required if c not in header]
            if missing:
                raise ValueError(f"{p}: missing column(s) {missing}; columns present: {header}")
            end = reader.line_num
            for fields in reader:
                start, end = end + 1, reader.line_num
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise ValueError(
                        f"{p}, line {start}: row has {len(fields)} fields, the header "
                        f"has {len(header)} ({header})"
                    )
                yield start, dict(zip(header, fields, strict=True))
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not valid UTF-8 text ({e})") from e
    except csv.Error as e:
        raise ValueError(f"{p}: malformed CSV near line {reader.line_num}: {e}") from e


def _require_text(value: str, path: epath.Path, line: int, column: str) -> str:
    text = value.strip()
    if not text:
        raise ValueError(f"{path}, line {line}: empty text in column {column!r}")
    return text


def _distinct_columns(text: str, id_: str | None, label: str | None) -> list[str]:
    named = [c for c in (text, id_, label) if c is not None]
    if len(set(named)) != len(named):
        raise ValueError(
            f"text/id/label columns must differ, got text_column={text!r}, "
            f"id_column={id_!r}, label_column={label!r}"
        )
    return named


def _nonempty(items: list[PromptItem], path: PathLike, why: str) -> list[PromptItem]:
    if not items:
        raise ValueError(f"{as_path(path)}: no items left {why}")
    ids: dict[str, int] = {}
    for n, item in enumerate(items):
        if item.id in ids:
            raise ValueError(
                f"{as_path(path)}: duplicate id {item.id!r} "
                f"(items {ids[item.id] + 1} and {n + 1})"
            )
        ids[item.id] = n
    return items


def load_harmbench(
    path: PathLike, *, include_copyright: bool = False, include_contextual: bool = True,
    source: str = "harmbench"
) -> list[PromptItem]:
    """HarmBench behaviour CSV → items (id = BehaviorID, label = SemanticCategory).

    Contextual rows become `ContextString + "\\n\\n" + Behavior` (dropped when not
    `include_contextual`: an attacker tends to copy their long context). Copyright rows are
    dropped unless `include_copyright`. `meta` holds functional_category, tags,
    behavior (the bare request) and line.
    """
    p = as_path(path)
    cols = (
        "Behavior",
        "FunctionalCategory",
        "SemanticCategory",
        "Tags",
        "ContextString",
        "BehaviorID",
    )
    items = []
    for line, row in read_csv_rows(p, cols):
        category = row["FunctionalCategory"].strip()
        if category not in HARMBENCH_CATEGORIES:
            raise ValueError(
                f"{p}, line {line}: FunctionalCategory {category!r} is not one of "
                f"{HARMBENCH_CATEGORIES}"
            )
        if (category == "copyright" and not include_copyright
                or category == "contextual" and not include_contextual):
            continue
        behavior = _require_text(row["Behavior"], p, line, "Behavior")
        behavior_id = _require_text(row["BehaviorID"], p, line, "BehaviorID")
        text = behavior
        if category == "contextual":
            context = _require_text(row["ContextString"], p, line, "ContextString")
            text = f"{context}\n\n{behavior}"
        items.append(
            PromptItem(
                text=text,
                source=source,
                id=behavior_id,
                label=row["SemanticCategory"].strip() or None,
                meta={
                    "functional_category": category,
                    "tags": row["Tags"].strip(),
                    "behavior": behavior,
                    "line": line,
                },
            )
        )
    return _nonempty(items, p, f"after filtering (include_copyright={include_copyright}, "
                               f"include_contextual={include_contextual})")


def load_advbench(path: PathLike, *, source: str = "advbench") -> list[PromptItem]:
    """AdvBench CSV (`goal` required; `target` and other columns optional) → items.

    id = f"{source}-{row index}" (0-based, file order); label None; non-empty extra
    columns (e.g. `target`) go into `meta` with the line number.
    """
    p = as_path(path)
    items = []
    for n, (line, row) in enumerate(read_csv_rows(p, ("goal",))):
        goal = _require_text(row.pop("goal"), p, line, "goal")
        meta: dict[str, Any] = {k: v for k, v in row.items() if v.strip()}
        meta["line"] = line
        items.append(PromptItem(text=goal, source=source, id=f"{source}-{n}", meta=meta))
    return _nonempty(items, p, "(no data rows)")


def load_xstest(
    path: PathLike, *, label_filter: str = "both", source: str = "xstest"
) -> list[PromptItem]:
    """XSTest `xstest_prompts.csv` → items (id = `id`, label = "safe" / "unsafe").

    `label_filter` keeps "safe", "unsafe" or "both". `meta` holds type, focus, note, line.
    """
    if label_filter not in XSTEST_LABEL_FILTERS:
        raise ValueError(f"label_filter={label_filter!r} is not one of {XSTEST_LABEL_FILTERS}")
    p = as_path(path)
    items = []
    for line, row in read_csv_rows(p, ("id", "prompt", "type", "label", "focus", "note")):
        label = row["label"].strip()
        if label not in ("safe", "unsafe"):
            raise ValueError(f"{p}, line {line}: label {label!r} is not 'safe' or 'unsafe'")
        if label_filter != "both" and label != label_filter:
            continue
        items.append(
            PromptItem(
                text=_require_text(row["prompt"], p, line, "prompt"),
                source=source,
                id=_require_text(row["id"], p, line, "id"),
                label=label,
                meta={k: row[k].strip() for k in ("type", "focus", "note")} | {"line": line},
            )
        )
    return _nonempty(items, p, f"after filtering (label_filter={label_filter!r})")


def load_csv(
    path: PathLike,
    *,
    text_column: str,
    id_column: str | None = None,
    label_column: str | None = None,
    source: str = "csv",
) -> list[PromptItem]:
    """Generic CSV with a header → items; the other columns go into `meta`.

    id = the `id_column` value, or f"{source}-{row index}"; label = `label_column` value
    (None when empty or no column given).
    """
    p = as_path(path)
    required = _distinct_columns(text_column, id_column, label_column)
    items = []
    for n, (line, row) in enumerate(read_csv_rows(p, required)):
        text = _require_text(row.pop(text_column), p, line, text_column)
        item_id = (
            _require_text(row.pop(id_column), p, line, id_column) if id_column else f"{source}-{n}"
        )
        label = None
        if label_column is not None:
            label = row.pop(label_column).strip() or None
        items.append(
            PromptItem(text=text, source=source, id=item_id, label=label, meta=row | {"line": line})
        )
    return _nonempty(items, p, "(no data rows)")


def load_jsonl(
    path: PathLike,
    *,
    text_column: str,
    id_column: str | None = None,
    label_column: str | None = None,
    source: str = "jsonl",
) -> list[PromptItem]:
    """JSON Lines, one object per line → items; `*_column` name object keys.

    Blank lines are skipped. id = str(obj[id_column]) or f"{source}-{record index}";
    label = str(obj[label_column]) (None when absent/null); other keys go into `meta`.
    """
    _distinct_columns(text_column, id_column, label_column)
    p = _existing_file(path)
    items = []
    try:
        with open_text(p) as f:
            for line, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{p}, line {line}: invalid JSON ({e.msg})") from e
                if not isinstance(obj, dict):
                    raise ValueError(
                        f"{p}, line {line}: expected a JSON object, got {type(obj).__name__}"
                    )
                for key in (text_column, id_column):
                    if key is not None and key not in obj:
                        raise ValueError(
                            f"{p}, line {line}: missing key {key!r}; keys present: {sorted(obj)}"
                        )
                text = obj.pop(text_column)
                if not isinstance(text, str):
                    raise ValueError(
                        f"{p}, line {line}: key {text_column!r} must be a string, got "
                        f"{type(text).__name__}"
                    )
                text = _require_text(text, p, line, text_column)
                item_id = str(obj.pop(id_column)) if id_column else f"{source}-{len(items)}"
                label = obj.pop(label_column, None) if label_column else None
                items.append(
                    PromptItem(
                        text=text,
                        source=source,
                        id=item_id,
                        label=None if label is None else str(label),
                        meta=obj | {"line": line},
                    )
                )
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not valid UTF-8 text ({e})") from e
    return _nonempty(items, p, "(no JSON records)")
