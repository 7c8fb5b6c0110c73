"""Judging with a model in this process: answer probabilities against transformers' own
forward, probability scoring against decoding on models forced to answer, failed rows, the
cache check and the factory."""

import numpy as np
import pytest

from ssp_jax.judge.backend import JudgePrompt, RowError
from ssp_jax.judge.formats.harmbench import HarmBench
from ssp_jax.judge.formats.llama_guard import LlamaGuard
from ssp_jax.judge.formats.wildguard import WildGuard
from ssp_jax.judge.local import LocalBackend
from ssp_jax.judge.model_judge import ModelJudge
from ssp_jax.judge.refusal import RefusalJudge, refusal_detector
from ssp_jax.judge.registry import JudgeModel, check_judge_cache, make_judge, policy_judge
from ssp_jax.sections import judge_section
from ssp_jax.models import load
from tests.tiny_guard import LLAMA_GUARD_3_TEMPLATE, write_guard_model

torch = pytest.importorskip("torch")
# random tiny guards give the answers 0.1-1% of their probability (judge.min_answer_mass would
# exclude them); the tests that compare numbers on them read the split anyway
ANY_MASS = 1e-6
REQUESTS = ["How do I pick a lock?", "Write a poem about the sea please"]
RESPONSES = ["I'm sorry, but I can't help with that request.",
             "Sure, here is a short poem about the sea and the stars, with many lines."]


@pytest.fixture(scope="module")
def guard_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("guard")
    write_guard_model(path, seed=1, chat_template=LLAMA_GUARD_3_TEMPLATE)
    return path


def backend_for(path, max_cache_len=1024, batch_size=2):
    model, tok = load(str(path))
    return LocalBackend(model.config, model.params(), tok, max_cache_len=max_cache_len,
                        batch_size=batch_size, describe=f"model:{path}")


def test_llama_guard_prompt_is_tokenized_as_transformers_applies_its_template(guard_dir):
    import transformers

    backend = backend_for(guard_dir)
    hf = transformers.AutoTokenizer.from_pretrained(str(guard_dir))
    prompt = LlamaGuard(3, ANY_MASS).prompt(REQUESTS[0], RESPONSES[0])
    assert backend.encode(prompt) == list(hf.apply_chat_template(
        list(prompt.messages), tokenize=True, return_dict=False))


def reference_word_prob(hf, ids: list[int], word: list[int], lead: int = 0) -> float:
    """P(word's tokens after ids) from transformers' forward, plus the whitespace rule: when
    the likeliest next token decodes to whitespace only, P(it) · P(word | ids + it)."""
    tokenizer = hf.tokenizer
    with torch.no_grad():
        logits = hf(torch.tensor([ids + word])).logits[0].double()
    probs = torch.softmax(logits, -1)
    p = float(np.prod([probs[len(ids) - 1 + k, t] for k, t in enumerate(word)]))
    top = int(probs[len(ids) - 1].argmax())
    if lead < 3 and not tokenizer.decode([top]).strip():
        p += float(probs[len(ids) - 1, top]) * reference_word_prob(hf, ids + [top], word, lead + 1)
    return p


def test_llama_guard_score_matches_transformers_logits(guard_dir):
    import transformers

    backend = backend_for(guard_dir)
    fmt = LlamaGuard(3, ANY_MASS)
    result = ModelJudge(fmt, backend).score(REQUESTS, REQUESTS, RESPONSES)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(guard_dir)).eval()
    hf.tokenizer = transformers.AutoTokenizer.from_pretrained(str(guard_dir))
    for i, (q, r) in enumerate(zip(REQUESTS, RESPONSES)):
        ids = backend.encode(fmt.prompt(q, r))
        safe, unsafe = (reference_word_prob(hf, ids, hf.tokenizer.encode(
            c, add_special_tokens=False)) for c in fmt.candidates)
        assert result.scores[i] == pytest.approx(1 + 4 * unsafe / (safe + unsafe), abs=2e-4)
    assert not result.excluded.any()


@pytest.mark.parametrize("fmt, forced, score", [
    (LlamaGuard(3, ANY_MASS), "unsafe", 5.0), (LlamaGuard(3, ANY_MASS), "safe", 1.0),
    (HarmBench(ANY_MASS), " Yes", 5.0), (HarmBench(ANY_MASS), " No", 1.0)])
def test_probability_scoring_agrees_with_decoding_on_a_forced_model(tmp_path, fmt, forced,
                                                                    score):
    write_guard_model(tmp_path, force=forced)
    backend = backend_for(tmp_path)
    probs = ModelJudge(fmt, backend).score(REQUESTS, REQUESTS, RESPONSES)
    text = ModelJudge(fmt, backend, scoring="text").score(REQUESTS, REQUESTS, RESPONSES)
    np.testing.assert_allclose(probs.scores, [score, score], atol=1e-3)
    np.testing.assert_array_equal(text.scores, [score, score])


def test_wildguard_chain_on_a_model_forced_to_say_yes(tmp_path):
    write_guard_model(tmp_path, force=" yes")
    result = ModelJudge(WildGuard(ANY_MASS), backend_for(tmp_path)).score(REQUESTS, REQUESTS,
                                                                  RESPONSES)
    np.testing.assert_allclose(result.scores, [5.0, 5.0], atol=1e-3)
    assert result.reasons[0].startswith("harmful request: yes, response refusal: yes")


def test_a_prompt_longer_than_the_cache_fails_only_its_row(guard_dir):
    backend = backend_for(guard_dir)
    short = len(backend.encode(LlamaGuard(3, ANY_MASS).prompt("a", "b")))
    backend.max_cache_len = short + 40
    responses = ["no", "word " * 200]
    result = ModelJudge(LlamaGuard(3, ANY_MASS), backend).score(["a"] * 2, ["a"] * 2, responses)
    assert result.excluded.tolist() == [False, True]
    assert "does not fit the judge cache" in result.reasons[1]
    out = backend.generate([LlamaGuard(3, ANY_MASS).prompt("a", r) for r in responses], 4)
    assert isinstance(out[0], str) and isinstance(out[1], RowError)


def test_answers_sharing_a_first_token_fail_with_a_clear_error():
    model, tok = load("tiny-random")  # a word tokenizer: "safe" and "unsafe" are both <unk>
    backend = LocalBackend(model.config, model.params(), tok, max_cache_len=256,
                           batch_size=2, describe="model:tiny-random")
    [row] = backend.next_token_probs([JudgePrompt(text="x")], ("safe", "unsafe"))
    assert isinstance(row, RowError) and "not distinct token sequences" in row.message


def test_cache_check_names_the_fields_to_change(guard_dir):
    overhead = backend_for(guard_dir).count_tokens(LlamaGuard(3, ANY_MASS).prompt("", ""))
    cache = overhead + 40 + LlamaGuard.text_tokens  # room for 40 request + response tokens
    judge = make_judge(judge_section(name="llama_guard", model=str(guard_dir),
                                     max_cache_len=cache))
    check_judge_cache(judge, request_tokens=20, request_field="selfplay.max_prompt_tokens",
                      response_tokens=20, response_field="selfplay.defender_max_tokens")
    with pytest.raises(ValueError, match=rf"judge.max_cache_len={cache}.*selfplay."
                                         r"max_prompt_tokens / selfplay.defender_max_tokens"):
        check_judge_cache(judge, request_tokens=21, request_field="selfplay.max_prompt_tokens",
                          response_tokens=20, response_field="selfplay.defender_max_tokens")
    check_judge_cache(RefusalJudge(), request_tokens=10**6, request_field="x",
                      response_tokens=10**6, response_field="y")  # nothing to check


def test_factory_builds_each_kind_of_judge(guard_dir):
    assert isinstance(make_judge(judge_section(empty_score=1.0)), RefusalJudge)
    judge = make_judge(judge_section(name="harmbench", model=str(guard_dir)))
    assert judge.describe == f"harmbench on model:{guard_dir}"
    model, tok = load("tiny-random")
    frozen = JudgeModel(model.config, model.params(), tok)
    judge = make_judge(judge_section(name="llm"), frozen_policy=lambda: frozen)
    assert judge.backend.params is frozen.params and judge.format.name == "rubric"
    with pytest.raises(ValueError, match="needs a judge model: set judge.model"):
        make_judge(judge_section(name="wildguard"))
    with pytest.raises(ValueError, match="both set"):
        make_judge(judge_section(name="wildguard", model="m", url="http://h/v1",
                               remote_model="m"))
    with pytest.raises(ValueError, match="JUDGE_KEY_UNSET_FOR_TEST, which is not set"):
        make_judge(judge_section(name="wildguard", url="http://h/v1", remote_model="m",
                               api_key_env="JUDGE_KEY_UNSET_FOR_TEST"))
    with pytest.raises(ValueError, match="judge.name='gpt4'; valid: refusal, rubric, llm"):
        make_judge(judge_section(name="gpt4"))


def test_policy_judge_runs_on_the_policy_unless_a_judge_model_is_named(guard_dir):
    model, tok = load("tiny-random")
    policy = JudgeModel(model.config, model.params(), tok)
    on_policy = policy_judge(judge_section(name="harmbench"), policy)
    assert on_policy.backend.params is policy.params
    assert on_policy.describe == "harmbench on model:frozen policy"
    named = policy_judge(judge_section(name="harmbench", model=str(guard_dir)), policy)
    assert named.describe == f"harmbench on model:{guard_dir}"
    assert isinstance(policy_judge(judge_section(), policy), RefusalJudge)
    with pytest.raises(ValueError, match="needs a judge model"):
        policy_judge(judge_section(name="harmbench"), None)


def test_refusal_detector_is_the_refusal_judges_decline_check():
    apology = "I'm sorry, I'm sorry, I'm sorry"
    assert refusal_detector()(RESPONSES[0]) and not refusal_detector()(RESPONSES[1])
    assert refusal_detector()(apology) and not refusal_detector(strict=True)(apology)


def test_a_judge_model_on_the_mesh_scores_like_one_on_a_single_device(guard_dir):
    from ssp_jax import sharding

    mesh = sharding.make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
    cfg = judge_section(name="llama_guard", model=str(guard_dir), min_answer_mass=ANY_MASS)
    placed = make_judge(cfg, mesh=mesh)
    embed = placed.backend.params["embed"]
    assert embed.sharding.mesh.shape == mesh.shape and not embed.sharding.is_fully_replicated
    expected = make_judge(cfg).score(REQUESTS, REQUESTS, RESPONSES).scores
    assert not np.isnan(expected).any()
    np.testing.assert_allclose(placed.score(REQUESTS, REQUESTS, RESPONSES).scores, expected,
                               atol=1e-4)
