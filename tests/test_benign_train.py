"""The benign training set: loads, no duplicates, at least half imperatives with look-alikes of
every harmful form, and no overlap with any evaluation set (XSTest, HarmBench, AdvBench, the
HarmBench-form benign evaluation set) or the harmful goals."""

import pathlib
import re

import pytest

from ssp_jax.data.builtin import BENIGN_TRAIN, HARMFUL_FORMS, HARMFUL_GOALS, benign_train_items
from ssp_jax.data.loaders import load_advbench, load_harmbench, load_jsonl, load_xstest
from ssp_jax.data.twins import harmful_form

BENIGN_IMPERATIVES = (pathlib.Path(__file__).resolve().parents[1]
                      / "benchmarks/data/benign_imperatives.csv")
# Words of the forms themselves ("write", "tutorial", "step", ...) do not count as overlap: two
# requests in one form share them by design; the topic words decide.
FORM_WORDS = frozenset(w for f in HARMFUL_FORMS for w in re.findall(r"[a-z']+", f.lower()))


def _content_words(text: str) -> frozenset[str]:
    stop = {"a", "an", "the", "i", "do", "how", "what", "what's", "is", "to", "of", "in", "my",
            "for", "and", "best", "way", "can", "should", "if", "it", "on", "with", "are",
            "at", "by", "from", "about", "that", "does", "mean", "me", "you", "your", "why",
            "make", "making"}
    return frozenset(re.findall(r"[a-z']+", text.lower())) - stop - FORM_WORDS


def _close_pairs(texts: list[str], others: list[str]) -> list[tuple[str, str]]:
    """(text, other) pairs whose content words overlap by a Jaccard index of 0.5 or more."""
    other_words = [(o, _content_words(o)) for o in others]
    pairs = []
    for text in texts:
        words = _content_words(text)
        pairs += [(text, o) for o, w in other_words
                  if words | w and len(words & w) / len(words | w) >= 0.5]
    return pairs


def _normalised(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


@pytest.fixture(scope="module")
def harmful_goals(shared_data) -> list[str]:
    """HarmBench val + test (bare behaviours, copyright included), AdvBench and HARMFUL_GOALS."""
    harmbench = [i.meta["behavior"] for split in ("val", "test") for i in load_harmbench(
        shared_data / "harmbench" / f"harmbench_behaviors_text_{split}.csv",
        include_copyright=True)]
    advbench = [i.text for i in load_advbench(shared_data / "advbench" / "harmful_behaviors.csv")]
    return harmbench + advbench + [g for goals in HARMFUL_GOALS.values() for g in goals]


def test_loads_with_the_generic_loader_and_the_builtin_helper():
    items = benign_train_items()
    assert len(items) >= 800
    assert items == load_jsonl(BENIGN_TRAIN, text_column="text", id_column="id",
                               label_column="category", source="benign_train")
    groups = {i.meta["group"] for i in items}
    assert groups == {"everyday", "borderline", "imperative"}
    assert sum(i.meta["group"] == "borderline" for i in items) >= 100


def test_at_least_half_are_imperatives_in_a_harmful_form():
    items = benign_train_items()
    imperative = [i for i in items if i.meta["group"] == "imperative"]
    assert 2 * len(imperative) >= len(items)
    assert [i.text for i in imperative if harmful_form(i.text) is None] == []


def test_every_harmful_form_has_benign_lookalikes():
    forms = [harmful_form(i.text) for i in benign_train_items() if i.meta["group"] == "imperative"]
    assert {f: forms.count(f) for f in HARMFUL_FORMS if forms.count(f) < 8} == {}


def test_every_form_opens_real_harmful_goals(harmful_goals):
    counts = {f: sum(harmful_form(g) == f for g in harmful_goals) for f in HARMFUL_FORMS}
    assert {f: n for f, n in counts.items() if n < 2} == {}


def test_no_duplicates_even_after_normalising():
    texts = [i.text for i in benign_train_items()]
    assert len({_normalised(t) for t in texts}) == len(texts)


def test_no_overlap_with_evaluation_sets_or_harmful_goals(shared_data, harmful_goals):
    xstest = [x.text for x in load_xstest(shared_data / "xstest" / "xstest_prompts.csv")]
    held_out = [x.text for x in load_xstest(BENIGN_IMPERATIVES)]
    train = [i.text for i in benign_train_items()]
    assert _close_pairs(train, xstest + harmful_goals + held_out) == []


def test_the_harmbench_form_benign_evaluation_set_stays_out_of_training():
    # benchmarks/data/benign_imperatives.csv measures over-refusal of requests in the goals'
    # imperative form (XSTest's safe prompts are questions): evaluation only
    held_out = load_xstest(BENIGN_IMPERATIVES)
    assert len(held_out) == 100 and {x.label for x in held_out} == {"safe"}
    assert len({_normalised(x.text) for x in held_out}) == 100
    train = [i.text for i in benign_train_items()]
    assert _close_pairs([x.text for x in held_out], train) == []
