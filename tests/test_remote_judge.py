"""`RemoteBackend` over real HTTP on 127.0.0.1: through `python -m ssp_jax.serve` it gives the
in-process greedy text and probabilities; slow, failing or absent servers give RowErrors that
name the url after the configured retries, and `check()` fails with a UserError."""

from __future__ import annotations

import asyncio
import collections

import fastapi
import numpy as np
import pytest

from serve_helpers import (CONVERSATIONS, MODEL, RAW_PROMPT, app_in_thread, free_port,
                           next_token_logprobs, serve_process, tiny)  # noqa: F401 (fixture)
from ssp_jax.cli import UserError
from ssp_jax.judge.backend import JudgePrompt, RowError
from ssp_jax.judge.formats.harmbench import HarmBench
from ssp_jax.judge.formats.llama_guard import LlamaGuard
from ssp_jax.judge.remote import RemoteBackend, answer_prob, candidate_probs
from ssp_jax.rollout.chat import greedy_completions

MASS = 0.5  # judge.min_answer_mass
PROMPTS = [JudgePrompt(messages=tuple(c)) for c in CONVERSATIONS] + [JudgePrompt(text=RAW_PROMPT)]


def backend(url: str, model: str = MODEL, **overrides) -> RemoteBackend:
    settings = dict(api_key=None, timeout_s=300.0, max_concurrency=4, max_retries=0)
    settings.update(overrides)
    return RemoteBackend(url, model, **settings)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve_process(tmp_path_factory.mktemp("serve") / "serve.log", "--model", MODEL) as url:
        yield url


def first_token_probs(tiny, prompt: list[int]) -> np.ndarray:
    """Reference `[V]` f64: softmax of the in-process prefill logits at the last position."""
    return np.exp(next_token_logprobs(tiny, prompt)[0])


def test_generate_through_serve_equals_in_process_greedy(tiny, server):
    cfg, params, tokenizer = tiny
    token_ids = [tokenizer.encode_chat(c) for c in CONVERSATIONS] + \
        [tokenizer.encode_prompt(RAW_PROMPT)]
    expected = greedy_completions(cfg, params, tokenizer, token_ids, 7)
    remote = backend(server)
    try:
        assert remote.generate(PROMPTS, max_tokens=7) == expected
    finally:
        remote.close()


def test_next_token_probs_through_serve_equal_in_process(tiny, server):
    _, _, tokenizer = tiny
    token_ids = [tokenizer.encode_chat(c) for c in CONVERSATIONS] + \
        [tokenizer.encode_prompt(RAW_PROMPT)]
    refs = [first_token_probs(tiny, ids) for ids in token_ids]
    ranked = [[tokenizer.decode([int(t)]) for t in np.argsort(-ref)] for ref in refs]
    listed = {w for words in ranked for w in words[:20] if w}
    # the three likeliest next tokens of the first prompt, and the least likely one that no
    # top-20 token of any prompt is a prefix of (no server list says anything about it)
    unlisted = next(w for w in reversed(ranked[0]) if w and
                    not any(w.startswith(t) for t in listed))
    candidates = [*[w for w in ranked[0] if w][:3], unlisted]
    remote = backend(server)
    try:
        got = remote.next_token_probs(PROMPTS, candidates)
    finally:
        remote.close()
    for probs, ref in zip(got, refs):
        assert not isinstance(probs, RowError), probs
        want = np.array([ref[tokenizer.encode(c)[0]] for c in candidates])
        top20 = np.sort(ref)[-20]
        want[want < top20] = 0.0  # a server lists only its 20 likeliest tokens
        np.testing.assert_allclose(probs, want, atol=1e-5)
    assert got[0][3] == 0.0 and got[0][0] > 0


def test_check_accepts_the_served_model_and_names_a_missing_one(server):
    backend(server).check()
    with pytest.raises(UserError, match=f"{server}.*'other-model'"):
        backend(server, "other-model").check()


def test_dead_server_gives_row_errors_naming_the_url_after_retries():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    remote = backend(url, max_retries=1)
    try:
        rows = remote.generate(PROMPTS[:2], max_tokens=4)
        with pytest.raises(UserError, match=f"{url} cannot be reached"):
            remote.check()
    finally:
        remote.close()
    for row in rows:
        assert isinstance(row, RowError)
        assert url in row.message and "after 2 attempt(s)" in row.message


def stub_app(attempts: collections.Counter, headers: list) -> fastapi.FastAPI:
    """A stand-in server whose model name picks its behaviour: `slow` answers after 5 s,
    `broken` answers 500, `picky` answers 400 to messages saying "fail", `nologprobs` answers
    text without log-probs, `pieces` lists " un" (then "safe") and " s" (then nothing that
    continues " sure") but never " unsafe". `attempts` counts requests per model."""
    app = fastapi.FastAPI()
    first = [(" un", 0.6), (" safe", 0.3), (" s", 0.05), ("?", 0.05)]
    after = {" un": [("safe", 0.8), (" safe", 0.2)], " s": [("u", 0.9), ("afe", 0.1)]}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "nologprobs", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: fastapi.Request):
        body = await request.json()
        attempts[body["model"]] += 1
        headers.append(request.headers.get("authorization"))
        if body["model"] == "slow" or body["messages"][-1]["content"] == "sleep":
            await asyncio.sleep(5)
        if body["model"] == "broken":
            return fastapi.responses.JSONResponse({"error": {"message": "boom"}}, 500)
        if body["model"] == "picky" and body["messages"][-1]["content"] == "fail":
            return fastapi.responses.JSONResponse({"error": {"message": "no"}}, 400)
        if body["model"] == "pieces":
            top = [{"token": t, "logprob": float(np.log(p))} for t, p in first]
            return {"choices": [{"index": 0, "message": {"role": "assistant", "content": " un"},
                                 "logprobs": {"content": [{"token": " un", "logprob": -0.5,
                                                           "top_logprobs": top}]},
                                 "finish_reason": "length"}]}
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": " unsafe "},
                             "logprobs": None, "finish_reason": "stop"}]}

    @app.post("/v1/completions")
    async def completions(request: fastapi.Request):
        body = await request.json()
        tail = next((t for t in after if body["prompt"].endswith("A:" + t)), None)
        attempts["pieces-continued" if tail else "pieces"] += 1
        steps = [after[tail]] if tail else [first, after[" un"]]  # the greedy answer's tops
        steps = steps[:body["max_tokens"]]
        tokens = [top[0][0] for top in steps]
        return {"choices": [{"index": 0, "text": "".join(tokens), "finish_reason": "length",
                             "logprobs": {"tokens": tokens,
                                          "token_logprobs": [float(np.log(top[0][1]))
                                                             for top in steps],
                                          "top_logprobs": [{t: float(np.log(p)) for t, p in top}
                                                           for top in steps]}}]}

    return app


@pytest.fixture(scope="module")
def stub():
    attempts, headers = collections.Counter(), []
    with app_in_thread(stub_app(attempts, headers)) as url:
        yield url, attempts, headers


def ask(text: str) -> JudgePrompt:
    return JudgePrompt(messages=({"role": "user", "content": text},))


def test_slow_server_times_out_into_row_errors_after_retries(stub):
    url, attempts, _ = stub
    remote = backend(url, "slow", timeout_s=0.3, max_retries=2)
    try:
        rows = remote.generate([ask("hi")], max_tokens=4)
    finally:
        remote.close()
    assert isinstance(rows[0], RowError)
    assert url in rows[0].message and "Timeout" in rows[0].message
    assert "after 3 attempt(s)" in rows[0].message and attempts["slow"] == 3


def test_rows_unfinished_at_the_batch_deadline_are_excluded_without_retries(stub):
    url, attempts, _ = stub
    # one row hangs (5 s); per request 60 s and 3 retries would hold the batch for minutes
    remote = backend(url, "sleepy", timeout_s=60.0, max_retries=3, batch_timeout_s=0.5)
    try:
        rows = remote.generate([ask("ok"), ask("sleep"), ask("ok")], max_tokens=4)
    finally:
        remote.close()
    assert rows[0] == rows[2] == "unsafe"
    assert isinstance(rows[1], RowError)
    assert "unfinished at the batch deadline judge.batch_timeout_s=0.5" in rows[1].message
    assert url in rows[1].message
    assert attempts["sleepy"] == 3  # the hung row was sent once: no retry past the deadline


def test_close_releases_the_connections_and_a_judge_closes_its_backend(stub):
    from ssp_jax.judge.formats.rubric import Rubric
    from ssp_jax.judge.model_judge import ModelJudge

    url, _, _ = stub
    judge = ModelJudge(Rubric(8), backend(url, "nologprobs"))
    judge.close()
    judge.close()  # idempotent
    assert judge.backend._client.is_closed
    with pytest.raises(RuntimeError):
        judge.backend.generate([ask("hi")], max_tokens=4)


def test_server_errors_are_retried_and_bad_requests_are_not(stub):
    url, attempts, _ = stub
    broken = backend(url, "broken", max_retries=2)
    picky = backend(url, "picky", max_retries=2)
    try:
        failed = broken.generate([ask("hi")], max_tokens=4)[0]
        rows = picky.generate([ask("ok"), ask("fail"), ask("ok")], max_tokens=4)
    finally:
        broken.close()
        picky.close()
    assert isinstance(failed, RowError) and "HTTP 500" in failed.message
    assert attempts["broken"] == 3
    # one bad row fails alone, on its first attempt; the rest of the batch is answered
    assert rows[0] == rows[2] == "unsafe"
    assert isinstance(rows[1], RowError) and "HTTP 400" in rows[1].message
    assert url in rows[1].message and "after 1 attempt(s)" in rows[1].message
    assert attempts["picky"] == 3


def test_server_without_logprobs_gives_a_row_error_not_a_probability(stub):
    url, _, headers = stub
    remote = backend(url, "nologprobs", api_key="sekret")
    try:
        remote.check()
        rows = remote.next_token_probs([ask("hi")], ["safe", "unsafe"])
    finally:
        remote.close()
    assert isinstance(rows[0], RowError) and "no logprobs" in rows[0].message
    assert url in rows[0].message
    assert headers[-1] == "Bearer sekret"


@pytest.mark.parametrize("yes", ["Yes", " Yes", "\u2581Yes", "\u0120Yes"])
def test_a_verdict_token_matches_with_or_without_its_leading_space(yes):
    # the case: a server that lists "Yes" where HarmBench expects " Yes" gave 3.0 from
    # P(" ") for every answer; the word itself is the verdict
    top = [(yes, -0.05), ("No", -3.0), (" ", -12.0)]
    probs = candidate_probs(top, HarmBench.candidates)
    np.testing.assert_allclose(probs, [np.exp(-0.05), 0, np.exp(-3.0), 0], rtol=1e-6)
    expected = 1 + 4 * np.exp(-0.05) / (np.exp(-0.05) + np.exp(-3.0))
    assert HarmBench(MASS).from_probs(probs).score == pytest.approx(expected, rel=1e-6)


def test_an_exact_token_is_preferred_to_its_spaced_twin():
    top = [(" Yes", np.log(0.6)), ("Yes", np.log(0.3))]
    np.testing.assert_allclose(candidate_probs(top, [" Yes", "Yes", "yes"]), [0.6, 0.3, 0],
                               rtol=1e-6)


def test_a_token_that_only_begins_a_candidate_is_not_the_candidate():
    # the case: with "unsafe" unlisted, P("un") was read as P("unsafe")
    top = [("un", np.log(0.5)), ("s", np.log(0.1)), ("safe", np.log(0.02)), ("", 0.0)]
    probs = candidate_probs(top, LlamaGuard.candidates)
    np.testing.assert_allclose(probs, [0.02, 0.0], rtol=1e-6)
    assert isinstance(LlamaGuard(3, MASS).from_probs(probs), RowError)


def test_a_word_split_into_tokens_is_followed_up_on_completions(stub):
    url, attempts, _ = stub
    remote = backend(url, "pieces")
    try:
        text, chat = remote.next_token_probs([JudgePrompt(text="Q? A:"), ask("Q?")],
                                             [" safe", " unsafe", " sure"])
    finally:
        remote.close()
    # " safe" is listed whole; " unsafe" is the greedy " un" then "safe"; " sure" only begins
    # with " s" (off the greedy answer: one more request) and no "ure" follows it
    np.testing.assert_allclose(text, [0.3, 0.6 * 0.8, 0.0], rtol=1e-5)
    np.testing.assert_allclose(chat, [0.3, 0.0, 0.0], rtol=1e-5)  # chat: first position only
    assert attempts["pieces-continued"] == 1  # after " s"


def test_answer_probabilities_follow_whitespace_and_pieces_along_the_greedy_answer():
    ln = np.log
    # Llama Guard 3 writes "\n\n" first; its verdict can also come at once
    positions = [("\n\n", ln(0.9), [("\n\n", ln(0.9)), ("safe", ln(0.05))]),
                 ("un", ln(0.7), [("un", ln(0.7)), ("safe", ln(0.2))]),
                 ("safe", ln(0.8), [("safe", ln(0.8)), ("sure", ln(0.1))])]
    assert answer_prob(positions, "safe") == pytest.approx(0.05 + 0.9 * 0.2)
    assert answer_prob(positions, "unsafe") == pytest.approx(0.9 * 0.7 * 0.8)
    assert answer_prob(positions, "unsure") == pytest.approx(0.9 * 0.7 * 0.1)
    assert answer_prob(positions, "un") == pytest.approx(0.9 * 0.7)  # listed whole
    # a word token ends the whitespace: nothing after "un" is read as a fresh answer
    assert answer_prob(positions[1:], "safe") == pytest.approx(0.2)
