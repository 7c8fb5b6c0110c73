"""Role prompts over selfplay.max_prompt_tokens lose the middle of their text, never the
template: BOS, chat header, attacker brief and generation prompt all survive."""

import pytest

from ssp_jax.data.loaders import load_harmbench
from ssp_jax.models.tokenizer import Tokenizer
from ssp_jax.game.roles import (ATTACKER_BRIEF, TRUNCATION_MARK, attacker_prompt,
                           check_prompt_budget, defender_prompt, fit_prompt, template_lengths)
from tests.tiny_models import write_tiny_tokenizer

LIMIT = 640  # this char-level tokenizer spends 400 tokens on the attacker template


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A byte-level BPE tokenizer with a ChatML template (BOS <|im_start|> in the template)."""
    folder = tmp_path_factory.mktemp("tok")
    write_tiny_tokenizer(folder)
    return Tokenizer.from_hf_dir(folder)


@pytest.fixture(scope="module")
def contextual_goal(shared_data):
    """The longest contextual HarmBench validation goal: its context, then its request."""
    items = [g for g in load_harmbench(shared_data / "harmbench" /
                                       "harmbench_behaviors_text_val.csv")
             if g.meta["functional_category"] == "contextual"]
    return max(items, key=lambda g: len(g.text))


def rendered_around(tokenizer, brief_or_none):
    """The chat text before and after the goal/attack slot of a role prompt."""
    slot = "\x00SLOT\x00"
    if brief_or_none is None:
        text = tokenizer.apply_chat_template([{"role": "user", "content": slot}])
    else:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": brief_or_none.format(goal=slot)}])
    return text.split(slot)


def test_long_contextual_goal_is_cut_inside_the_attacker_template(tokenizer, contextual_goal):
    goal, request = contextual_goal.text, contextual_goal.meta["behavior"]
    render = lambda t: attacker_prompt(tokenizer, t, ATTACKER_BRIEF)  # noqa: E731
    assert len(render(goal)) > LIMIT + 1000  # far too long
    ids, cut = fit_prompt(render, tokenizer, goal, LIMIT)
    assert cut and LIMIT - 8 <= len(ids) <= LIMIT  # cut to fit, not far below it
    text = tokenizer.decode(ids, skip_special_tokens=False)
    before, after = rendered_around(tokenizer, ATTACKER_BRIEF)
    assert text.startswith(before) and text.endswith(after)  # header, brief, generation prompt
    middle = text[len(before):len(text) - len(after)]
    head, tail = middle.split(TRUNCATION_MARK.strip())
    assert goal.startswith(head.strip()) and len(head.strip()) > 100  # the context's start
    assert tail.strip().endswith(request) and goal.endswith(tail.strip())  # the request


def test_long_attack_is_cut_inside_the_defender_template(tokenizer, contextual_goal):
    render = lambda t: defender_prompt(tokenizer, t)  # noqa: E731
    ids, cut = fit_prompt(render, tokenizer, contextual_goal.text, LIMIT)
    assert cut and len(ids) <= LIMIT
    text = tokenizer.decode(ids, skip_special_tokens=False)
    before, after = rendered_around(tokenizer, None)
    assert text.startswith(before) and text.endswith(after)
    assert text[len(before):].strip().endswith(contextual_goal.meta["behavior"] + after.strip())


def test_prompt_that_fits_is_unchanged(tokenizer):
    render = lambda t: attacker_prompt(tokenizer, t)  # noqa: E731
    ids, cut = fit_prompt(render, tokenizer, "Write a poem about the sea.", LIMIT)
    assert not cut and ids == render("Write a poem about the sea.")


def test_limit_below_the_template_is_a_clear_error(tokenizer):
    n = template_lengths(tokenizer)["attacker"]
    with pytest.raises(ValueError, match=f"selfplay.max_prompt_tokens={n} leaves no room.*"
                                         f"attacker prompt: its template alone takes {n}"):
        check_prompt_budget(tokenizer, n)
    check_prompt_budget(tokenizer, n + 1)
    with pytest.raises(ValueError, match="template alone"):
        fit_prompt(lambda t: attacker_prompt(tokenizer, t), tokenizer, "x " * 500, n - 1)


def test_rollout_cuts_long_goals_inside_the_template_and_counts_them():

    from ssp_jax.data.loaders import PromptItem
    from ssp_jax.judge.refusal import RefusalJudge
    from ssp_jax.models import load
    from ssp_jax.models.tiny import WORDS
    from ssp_jax.selfplay import default_checks
    from tests.test_train import play_tiny_step, tiny_selfplay

    model, tok = load("tiny-random")
    sp = tiny_selfplay(goals_per_step=2, attacks_per_goal=2, responses_per_attack=1,
                       attacker_max_tokens=4, defender_max_tokens=4, max_prompt_tokens=96)
    long_goal = " ".join(WORDS * 2)  # ~200 known words: the attacker prompt overflows 96
    goals = [PromptItem(long_goal, "test", "0"), PromptItem("Write a poem", "test", "1")]
    judge = RefusalJudge()
    out = play_tiny_step(model, tok, judge, default_checks(), sp, goals, [], [])
    assert out.metrics["prompts_truncated"] == 1.0
    batch = out.batches[0]
    fitted = batch.prompt_tokens[0][batch.prompt_mask[0]].tolist()
    full = attacker_prompt(tok, long_goal)
    assert len(full) > 96 and len(fitted) <= 96
    # the template's tokens: what two prompts with different one-word goals share
    a, b = attacker_prompt(tok, "Write"), attacker_prompt(tok, "Tell")
    n_head = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    n_tail = len(a) - n_head - 1
    assert n_head > 10 and n_tail > 10
    assert fitted[:n_head] == full[:n_head]  # chat header and the brief's opening
    assert fitted[-n_tail:] == full[-n_tail:]  # the brief's closing and the generation prompt
    short = batch.prompt_tokens[1][batch.prompt_mask[1]].tolist()
    assert short == attacker_prompt(tok, "Write a poem")
