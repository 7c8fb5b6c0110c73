"""The serving engine in process: chunked prefill and segment decoding answer like the
training sampler, tokens reach a listener segment by segment, and batches never hold more KV
cache than the budget of tokens in flight."""

from __future__ import annotations

import pytest

from serve_helpers import CONVERSATIONS, greedy_answers, tiny  # noqa: F401 (tiny: a fixture)
from ssp_jax.rollout.chat import greedy_completions
from ssp_jax.serve import Engine, Sampling
from ssp_jax.serve.engine import QueueFull


def test_chunked_prefill_answers_like_the_sampler(tiny):
    cfg, params, tokenizer = tiny
    prompts = [tokenizer.encode_chat(c) for c in CONVERSATIONS]
    prompts.append(tokenizer.encode_prompt("tell me about the secret plan " * 60))
    assert len(prompts[-1]) > 4 * 64  # prefilled in several chunks of 64
    engine = Engine(cfg, params, tokenizer, max_batch=4, prefill_chunk=64, segment=3)
    answers = greedy_answers(engine, tokenizer, prompts, 7)
    assert answers == greedy_completions(cfg, params, tokenizer, prompts, 7)


def test_tokens_reach_the_listener_segment_by_segment(tiny):
    cfg, params, tokenizer = tiny
    engine = Engine(cfg, params, tokenizer, segment=3)
    pieces = []
    try:
        job = engine.submit(tokenizer.encode_chat(CONVERSATIONS[0]),
                            Sampling(max_tokens=10, temperature=0),
                            lambda g, piece: pieces.append((g, list(piece.tokens), job.done())))
        sample = job.result(timeout=600)[0]
    finally:
        engine.close()
    assert [len(tokens) for _, tokens, _ in pieces] == [3, 3, 3, 1]
    assert sum((tokens for _, tokens, _ in pieces), []) == sample.tokens
    assert not any(done for *_, done in pieces)  # each piece came before the answer ended


def test_batches_stay_within_the_token_budget(tiny):
    cfg, params, tokenizer = tiny
    prompt = tokenizer.encode_prompt("tell me about the secret plan " * 80)  # 512 slots
    engine = Engine(cfg, params, tokenizer, max_batch=64, max_tokens_in_flight=2100,
                    prefill_chunk=128, batch_wait_s=0.5)
    try:
        with pytest.raises(ValueError, match="budget of 2100 tokens"):
            engine.submit(prompt, Sampling(max_tokens=2, n=5))  # 5 rows x 514 slots
        jobs = [engine.submit(prompt, Sampling(max_tokens=2, temperature=0)) for _ in range(6)]
        for job in jobs:
            assert len(job.result(timeout=600)[0].tokens) == 2
    finally:
        engine.close()
    assert engine.batch_sizes == [4, 2]  # 4 rows x 514 = 2056 tokens fit, 8 rows would not
    assert engine.peak_tokens_in_flight == 4 * 514


def test_sequences_past_max_num_seqs_are_refused_until_some_finish(tiny):
    cfg, params, tokenizer = tiny
    prompt = tokenizer.encode_chat(CONVERSATIONS[0])
    engine = Engine(cfg, params, tokenizer, max_num_seqs=3, batch_wait_s=0.5)
    try:
        first = engine.submit(prompt, Sampling(max_tokens=2, n=2))
        with pytest.raises(QueueFull, match="at most 3"):
            engine.submit(prompt, Sampling(max_tokens=2, n=2))
        first.result(timeout=600)
        engine.submit(prompt, Sampling(max_tokens=2, n=3)).result(timeout=600)
    finally:
        engine.close()
    assert engine.counters["rejected"] == 1 and engine.sequences == 0
