"""`python -m ssp_jax.serve` against the official openai client, on 127.0.0.1: greedy text
equals the in-process sampler's, log-probs equal a float64 softmax of an in-process forward
pass, bad requests get OpenAI error bodies; the engine batches compatible requests."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys

import numpy as np
import openai
import pytest

from serve_helpers import (CONVERSATIONS, MODEL, RAW_PROMPT, REPO,  # noqa: F401 (tiny: a fixture)
                           greedy_answers, next_token_logprobs, serve_process, tiny)
from ssp_jax.models import load
from ssp_jax.rollout.chat import greedy_completions
from ssp_jax.serve import Engine, Sampling
from ssp_jax.serve.engine import padded_batch, token_bucket

CONVERSATIONS = [*CONVERSATIONS, [{"role": "user", "content": "Write a poem , please"}]]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve_process(tmp_path_factory.mktemp("serve") / "serve.log", "--model", MODEL,
                       "--max-batch", "8") as url:
        yield url


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server, api_key="unused", max_retries=0, timeout=300)


def test_chat_completion_through_openai_client_equals_in_process_greedy(tiny, client):
    cfg, params, tokenizer = tiny
    prompts = [tokenizer.encode_chat(c) for c in CONVERSATIONS]
    expected = greedy_completions(cfg, params, tokenizer, prompts, 6)
    for messages, want in zip(CONVERSATIONS, expected):
        answer = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6,
                                                temperature=0)
        assert answer.choices[0].message.content.strip() == want
        assert answer.usage.prompt_tokens == len(tokenizer.encode_chat(messages))


def test_concurrent_chat_requests_equal_in_process_greedy(tiny, client):
    cfg, params, tokenizer = tiny
    prompts = [tokenizer.encode_chat(c) for c in CONVERSATIONS * 2]
    expected = greedy_completions(cfg, params, tokenizer, prompts, 5)

    def ask(messages):
        answer = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5,
                                                temperature=0)
        return answer.choices[0].message.content.strip()

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        assert list(pool.map(ask, CONVERSATIONS * 2)) == expected


def test_completion_first_token_logprobs_equal_in_process_softmax(tiny, client):
    _, _, tokenizer = tiny
    prompt = tokenizer.encode_prompt(RAW_PROMPT)
    assert tokenizer.hf.convert_tokens_to_ids("<|im_start|>") == prompt[0]  # specials parsed
    answer = client.completions.create(model=MODEL, prompt=RAW_PROMPT, max_tokens=1,
                                       temperature=0, logprobs=5)
    ref = next_token_logprobs(tiny, prompt)[0]
    best = np.argsort(-ref)[:5]
    top = answer.choices[0].logprobs.top_logprobs[0]
    # each alternative as OpenAI and vLLM write it: the text it adds after the prompt (the
    # word tokenizer joins words with spaces, like SentencePiece's "▁")
    assert list(top) == [" " + tokenizer.hf.convert_ids_to_tokens(int(t)) for t in best]
    np.testing.assert_allclose(list(top.values()), ref[best], atol=1e-4)
    assert answer.choices[0].logprobs.token_logprobs[0] == pytest.approx(ref[best[0]], abs=1e-4)


def test_completion_tokens_and_logprobs_equal_in_process(tiny, client):
    cfg, params, tokenizer = tiny
    prompt = tokenizer.encode_prompt(RAW_PROMPT)
    want = greedy_completions(cfg, params, tokenizer, [prompt], 4)[0]
    answer = client.completions.create(model=MODEL, prompt=RAW_PROMPT, max_tokens=4,
                                       temperature=0, logprobs=2)
    choice = answer.choices[0]
    assert choice.text.strip() == want
    assert all(t.startswith(" ") for t in choice.logprobs.tokens)
    generated = [tokenizer.hf.convert_tokens_to_ids(t[1:]) for t in choice.logprobs.tokens]
    ref = next_token_logprobs(tiny, prompt, generated)
    np.testing.assert_allclose(choice.logprobs.token_logprobs,
                               ref[np.arange(len(generated)), generated], atol=1e-4)
    assert choice.logprobs.text_offset[0] == 0


def test_chat_logprobs_equal_in_process_forward(tiny, client):
    _, _, tokenizer = tiny
    messages = CONVERSATIONS[0]
    answer = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=3,
                                            temperature=0, logprobs=True, top_logprobs=3)
    content = answer.choices[0].logprobs.content
    assert all(c.token.startswith(" ") for c in content)
    generated = [tokenizer.hf.convert_tokens_to_ids(c.token[1:]) for c in content]
    ref = next_token_logprobs(tiny, tokenizer.encode_chat(messages), generated)
    for j, entry in enumerate(content):
        assert entry.logprob == pytest.approx(ref[j, generated[j]], abs=1e-4)
        best = np.argsort(-ref[j])[:3]
        np.testing.assert_allclose([t.logprob for t in entry.top_logprobs], ref[j, best],
                                   atol=1e-4)


def test_token_id_prompts_answer_like_their_text(tiny, client):
    _, _, tokenizer = tiny
    ids = tokenizer.encode_prompt(RAW_PROMPT)
    text = client.completions.create(model=MODEL, prompt=RAW_PROMPT, max_tokens=5,
                                     temperature=0).choices[0].text
    batch = client.completions.create(model=MODEL, prompt=[ids, ids[:-3]], max_tokens=5,
                                      temperature=0)
    assert [c.index for c in batch.choices] == [0, 1]
    assert batch.choices[0].text == text
    assert batch.usage.prompt_tokens == 2 * len(ids) - 3


def test_stop_string_cuts_the_text(client):
    plain = client.completions.create(model=MODEL, prompt=RAW_PROMPT, max_tokens=6,
                                      temperature=0).choices[0]
    words = plain.text.split()
    assert len(words) >= 2
    stopped = client.completions.create(model=MODEL, prompt=RAW_PROMPT, max_tokens=6,
                                        temperature=0, stop=[" " + words[1]]).choices[0]
    assert stopped.text == words[0]
    assert stopped.finish_reason == "stop"


def test_bad_requests_get_openai_errors(client):
    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        client.chat.completions.create(model="no-such-model", max_tokens=2,
                                       messages=CONVERSATIONS[0])
    with pytest.raises(openai.BadRequestError, match="cache length"):
        client.completions.create(model=MODEL, prompt="tell me " * 600, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="top logprobs"):
        client.completions.create(model=MODEL, prompt=RAW_PROMPT, max_tokens=1, logprobs=50)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model=MODEL, messages=CONVERSATIONS[0],
                                       temperature="hot")


def test_engine_batches_queued_compatible_requests(tiny):
    cfg, params, tokenizer = tiny
    prompts = [tokenizer.encode_chat(c) for c in CONVERSATIONS * 2]
    engine = Engine(cfg, params, tokenizer, max_batch=8)
    # the first request runs (and compiles) while the other five queue up behind it
    answers = greedy_answers(engine, tokenizer, prompts, 5)
    assert answers == greedy_completions(cfg, params, tokenizer, prompts, 5)
    assert sum(engine.batch_sizes) == len(prompts)
    assert max(engine.batch_sizes) > 1


def test_engine_seeded_sampling_repeats_and_gives_n_samples(tiny):
    cfg, params, tokenizer = tiny
    prompt = tokenizer.encode_chat(CONVERSATIONS[0])
    engine = Engine(cfg, params, tokenizer, max_batch=8)
    sampling = Sampling(max_tokens=6, temperature=1.0, seed=3, n=3)
    try:
        first = engine.submit(prompt, sampling).result(timeout=600)
        again = engine.submit(prompt, sampling).result(timeout=600)
    finally:
        engine.close()
    assert len(first) == 3
    assert [s.tokens for s in first] == [s.tokens for s in again]
    assert len({tuple(s.tokens) for s in first}) > 1  # three draws, not one copied


def test_serve_without_a_model_is_a_one_line_user_error():
    done = subprocess.run([sys.executable, "-m", "ssp_jax.serve"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "error: give --model SPEC or --checkpoint DIR"


def test_token_and_batch_buckets_bound_the_number_of_programs():
    assert [token_bucket(n) for n in (1, 2, 3, 4, 5, 7, 9, 16, 17)] == \
        [1, 2, 3, 4, 6, 8, 12, 16, 24]
    assert [padded_batch(n, 16) for n in (1, 2, 4, 5, 16)] == [1, 4, 4, 16, 16]
    assert padded_batch(5, 8) == 8


@pytest.mark.slow
def test_serve_checkpoint_answers_with_the_trained_parameters(tmp_path):
    from ssp_jax.checkpoint import load_checkpoint

    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    train = subprocess.run(
        [sys.executable, "-m", "ssp_jax.main", "--config", "configs/tiny.py", "--workdir",
         str(tmp_path / "run"), "--config.train.num_steps=2",
         "--config.selfplay.goals_per_step=4", "--config.selfplay.responses_per_attack=2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    checkpoint = tmp_path / "run" / "checkpoints" / "2"
    model, tokenizer, step = load_checkpoint(checkpoint)
    assert step == 2
    prompt = tokenizer.encode_prompt(RAW_PROMPT)
    want = next_token_logprobs((model.config, model.params(), tokenizer), prompt)[0]
    with serve_process(tmp_path / "serve.log", "--checkpoint", str(checkpoint)) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300)
        answer = client.completions.create(model=str(checkpoint), prompt=RAW_PROMPT,
                                           max_tokens=1, temperature=0, logprobs=3)
    top = answer.choices[0].logprobs.top_logprobs[0]
    best = np.argsort(-want)[:3]
    np.testing.assert_allclose(list(top.values()), want[best], atol=1e-4)
    initial, _ = load(MODEL)
    start = next_token_logprobs((initial.config, initial.params(), tokenizer), prompt)[0]
    assert np.abs(start - want).max() > 1e-3  # the trained parameters, not the base model's
