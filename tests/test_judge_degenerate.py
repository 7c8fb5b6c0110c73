"""Degenerate-text detector on hand-made cases and the XSTest completions."""

import pytest

from ssp_jax.judge.calibration import read_completions
from ssp_jax.judge.degenerate import DegenerateCheck, distinct_n, words

APOLOGY_LOOP = ("I'm sorry for any inconvenience. I'm sorry about any confusion. "
                "I'm sorry for the trouble. I apologize for any misunderstanding. ") * 3

DEGENERATE = [
    ("", "empty"),
    ("  \n\t ", "empty"),
    ("💡💡💡💡 💡💡💡", "symbols"),
    ("💡💡💡💡 💡💡💡 " * 20 + "ok", "symbols"),
    ("!!! ??? ... ;;; ---", "symbols"),
    ("I'm sorry for any inconvenience. I'm sorry about any confusion. " * 8,
     "repeated_sentences"),
    ("I cannot. " * 15, "repeated_sentences"),
    (APOLOGY_LOOP, "repeated_sentences"),
    (APOLOGY_LOOP.replace(".", ","), "repetition_loop"),  # one run-on sentence
    ("sorry sorry sorry sorry sorry sorry sorry sorry sorry sorry sorry sorry sorry",
     "repetition_loop"),
    (" ".join(f"I'm sorry for any inconvenience caused by issue {n}." for n in range(10)),
     "repetition_loop"),  # no two sentences equal
    # keyboard mash and strings of content words: no sentence in any language
    ("zxq vbnm qwrt plkj hgfd trew ytre mnbv cxz lkjh poiu ytrw qazx wsxc edcv rfvb tgbn yhnm "
     "ujmk ikol", "word_salad"),
    ("purple elephant quantum justice window seventeen banana rocket marble lantern velvet "
     "thunder pencil meadow copper whisper orbit saddle canyon ribbon", "word_salad"),
]

HEALTHY = [
    "Yes.",
    "No, thanks!",
    "Paris is the capital of France.",
    "I'm sorry, but I can't help with that. If you are worried about someone's safety, please "
    "contact local emergency services.",
    "To bake bread, mix flour, water, salt and yeast; knead for ten minutes, let the dough rise "
    "for an hour, shape it, rise again and bake at 230 degrees for about 35 minutes.",
    "1. Preheat the oven.\n2. Mix the flour and sugar.\n3. Add the eggs.\n4. Bake for 20 minutes.",
    "def f(x):\n    return [i for i in range(x) if i % 2 == 0]\n",
    "Das ist ein ganz normaler deutscher Satz über das Wetter von morgen in Berlin und Hamburg.",
    # prose in other languages is text, not salad
    "Claro, aquí tienes las instrucciones: primero consigue los materiales que te indiqué, "
    "después mézclalos con cuidado en un recipiente cerrado y por último guarda todo en la "
    "parte superior del armario.",
    "Le chat est sur la table et il mange une souris pendant que nous regardons la "
    "télévision dans le salon avec les enfants et les voisins.",
    "Pada hari Minggu kami pergi ke pasar untuk membeli sayur dan buah yang segar, lalu "
    "pulang dengan bus yang penuh sesak dan makan siang bersama keluarga di rumah.",
    "Мы пошли в магазин и купили хлеб, молоко и яблоки, а потом вернулись домой и долго "
    "разговаривали о погоде, о работе и о детях на кухне.",
    # a list of names is not salad
    "Apple, banana, cherry, date, elderberry, fig, grape, honeydew, kiwi, lemon, mango, "
    "nectarine, orange, papaya, quince, raspberry, strawberry, tangerine, watermelon, lime.",
]


@pytest.mark.parametrize("text, reason", DEGENERATE)
def test_degenerate_texts_are_flagged_with_their_reason(text, reason):
    verdict = DegenerateCheck().check(text)
    assert verdict.flag and verdict.reason == reason, verdict


@pytest.mark.parametrize("text", HEALTHY)
def test_ordinary_answers_are_not_flagged(text):
    verdict = DegenerateCheck().check(text)
    assert not verdict.flag and verdict.reason == "", verdict


def test_padding_a_loop_with_fresh_words_does_not_hide_it():
    padded = ("I'm sorry for any inconvenience. I'm sorry about any confusion. " * 10
              + "Here is a completely different closing sentence with new words.")
    assert DegenerateCheck().check(padded).flag


def test_distinct_n_by_hand():
    tokens = words("The cat, the cat; the DOG.")
    assert tokens == ["the", "cat", "the", "cat", "the", "dog"]
    assert distinct_n(tokens, 1) == pytest.approx(3 / 6)
    assert distinct_n(tokens, 2) == pytest.approx(3 / 5)  # the cat, cat the, the dog
    assert distinct_n(tokens, 3) == pytest.approx(3 / 4)  # tcT, ctc, tcT, ctd -> 3 distinct
    assert distinct_n(["a"], 2) == 1.0


def test_floors_are_configurable():
    text = "one two three four five six one two three four five six"
    assert not DegenerateCheck().check(text).flag  # distinct-2 = 6/11
    assert DegenerateCheck(distinct_floors=(0.0, 0.6, 0.0)).check(text).reason == \
        "repetition_loop"
    assert DegenerateCheck().flags(["", "fine answer"]) == [True, False]


def test_no_human_labelled_xstest_completion_is_flagged(shared_data):
    check = DegenerateCheck()
    flagged = [r.completion[:80] for f in sorted((shared_data / "xstest").glob(
        "xstest_v2_completions_*.csv")) for r in read_completions(f)
        if r.completion.strip() and check.check(r.completion).flag]
    assert flagged == []
