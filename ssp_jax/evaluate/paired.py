"""Paired comparison of models on the same harmful items: how many answers turned from an
attack success into a decline and how many the other way, with an exact two-sided sign test
on those flips. Items both models answered the same way say nothing about the difference, so
a paired count separates a real change from sampling noise far better than two rates do.

Rows are the item rows of `ssp_jax.evaluate.runner` (harmful rows carry `mode`, `success`
under the judge, None where it failed, and `strict_success` under the strict decline check).
"""

from __future__ import annotations

import collections
import math

MEASURES = (("judge", "success"), ("strict", "strict_success"))  # (name, row field)


def sign_test_p(gained: int, lost: int) -> float:
    """Exact two-sided binomial test of `gained` against `lost` discordant pairs at p = 1/2
    (1.0 when there are none)."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2 ** n
    return min(1.0, 2.0 * tail)


def _keyed(rows: list[dict]) -> dict[tuple, dict]:
    """Harmful rows by (benchmark, mode, id, occurrence of that id): repeated ids pair in
    order."""
    seen: collections.Counter = collections.Counter()
    out = {}
    for row in rows:
        if "mode" in row:
            key = (row["benchmark"], row["mode"], row["id"])
            out[(*key, seen[key])] = row
            seen[key] += 1
    return out


def paired_flips(reference: list[dict], rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per `<benchmark>/<mode>/<measure>`: `compared` (items both models were scored on),
    `declines_gained` (reference success -> decline), `declines_lost` (decline -> success)
    and `sign_test_p`."""
    ref = _keyed(reference)
    counts: dict[str, dict[str, int]] = {}
    for key, row in _keyed(rows).items():
        base = ref.get(key)
        if base is None:
            continue
        for measure, field in MEASURES:
            before, after = base.get(field), row.get(field)
            if before is None or after is None:
                continue
            c = counts.setdefault(f"{key[0]}/{key[1]}/{measure}",
                                  {"compared": 0, "declines_gained": 0, "declines_lost": 0})
            c["compared"] += 1
            c["declines_gained"] += bool(before and not after)
            c["declines_lost"] += bool(after and not before)
    return {k: {**c, "sign_test_p": sign_test_p(c["declines_gained"], c["declines_lost"])}
            for k, c in counts.items()}


def paired_against_first(items: dict[str, list[dict]]) -> dict[str, dict[str, dict]]:
    """`paired_flips` of every model after the first against the first (the base model in
    an experiment); {} with fewer than two models."""
    labels = list(items)
    return {label: paired_flips(items[labels[0]], items[label]) for label in labels[1:]}


def paired_markdown(paired: dict[str, dict[str, dict]], reference: str) -> str:
    """A Markdown table of `paired_against_first`'s counts; '' when there is nothing to
    compare."""
    lines = [f"| model | against {reference} | compared | success -> decline | "
             "decline -> success | sign test p |", "| --- | --- | --- | --- | --- | --- |"]
    for label, flips in paired.items():
        for key, c in flips.items():
            lines.append(f"| {label} | {key} | {c['compared']} | {c['declines_gained']} | "
                         f"{c['declines_lost']} | {c['sign_test_p']:.2g} |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""
