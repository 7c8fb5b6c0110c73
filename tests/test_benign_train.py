"""The benign training set: loads, no duplicates, no overlap with XSTest or the HarmBench-form
benign evaluation set."""

import pathlib
import re

from ssp_jax.data.builtin import BENIGN_TRAIN, HARMFUL_GOALS, benign_train_items
from ssp_jax.data.loaders import load_jsonl, load_xstest


def _content_words(text: str) -> frozenset[str]:
    stop = {"a", "an", "the", "i", "do", "how", "what", "what's", "is", "to", "of", "in", "my",
            "for", "and", "best", "way", "can", "should", "if", "it", "on", "with", "are"}
    return frozenset(re.findall(r"[a-z']+", text.lower())) - stop


def _close_pairs(texts: list[str], others: list[str]) -> list[tuple[str, str]]:
    """(text, other) pairs whose content words overlap by a Jaccard index of 0.5 or more."""
    other_words = [(o, _content_words(o)) for o in others]
    pairs = []
    for text in texts:
        words = _content_words(text)
        pairs += [(text, o) for o, w in other_words if len(words & w) / len(words | w) >= 0.5]
    return pairs


def test_loads_with_the_generic_loader_and_the_builtin_helper():
    items = benign_train_items()
    assert len(items) >= 300
    assert items == load_jsonl(BENIGN_TRAIN, text_column="text", id_column="id",
                               label_column="category", source="benign_train")
    groups = {i.meta["group"] for i in items}
    assert groups == {"everyday", "borderline"}
    assert sum(i.meta["group"] == "borderline" for i in items) >= 100


def test_no_duplicates_even_after_normalising():
    texts = [i.text for i in benign_train_items()]
    normalised = [" ".join(re.findall(r"[a-z0-9']+", t.lower())) for t in texts]
    assert len(set(normalised)) == len(texts)


def test_no_overlap_with_xstest_or_the_harmful_goals(shared_data):
    xstest = load_xstest(shared_data / "xstest" / "xstest_prompts.csv")
    harmful = [g for goals in HARMFUL_GOALS.values() for g in goals]
    others = [x.text for x in xstest] + harmful
    assert _close_pairs([i.text for i in benign_train_items()], others) == []


def test_the_harmbench_form_benign_evaluation_set_stays_out_of_training():
    # benchmarks/data/benign_imperatives.csv measures over-refusal of requests in the goals'
    # imperative form (XSTest's safe prompts are questions): evaluation only
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks/data/benign_imperatives.csv"
    held_out = load_xstest(path)
    assert len(held_out) == 24 and {x.label for x in held_out} == {"safe"}
    train = [i.text for i in benign_train_items()]
    assert _close_pairs([x.text for x in held_out], train) == []
