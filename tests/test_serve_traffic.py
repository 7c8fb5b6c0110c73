"""`python -m ssp_jax.serve` for real traffic, through the official openai client: API keys
(401), limits (400, 413, 429), server-sent-event streaming for chat and completions,
cancellation of a disconnected client's sequences, tokenization off the event loop, and
memory bounded while many long prompts arrive at once."""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import httpx2
import openai
import pytest

from serve_helpers import (CONVERSATIONS, MODEL, RAW_PROMPT, REPO, app_in_thread,
                           serve_process, tiny)  # noqa: F401 (tiny: a fixture)
from ssp_jax.serve import Engine, create_app
from ssp_jax.serve.__main__ import API_KEY_ENV, check_args, parse_args

KEY = "sekret-key"
MAX_NUM_SEQS, MAX_ROWS, MAX_TOKENS, MAX_BODY = 4, 6, 64, 20_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A keyed server with small limits; a request reaching it idle waits 0.5 s for others, so
    two concurrent requests always meet in the queue."""
    with serve_process(tmp_path_factory.mktemp("serve") / "serve.log", "--model", MODEL,
                       "--api-key", KEY, "--max-num-seqs", str(MAX_NUM_SEQS),
                       "--max-rows-per-request", str(MAX_ROWS), "--max-tokens-limit",
                       str(MAX_TOKENS), "--max-body-bytes", str(MAX_BODY),
                       "--batch-wait-ms", "500", api_key=KEY) as url:
        yield url


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server, api_key=KEY, max_retries=0, timeout=300)


def test_requests_without_the_api_key_get_401(server, client):
    wrong = openai.OpenAI(base_url=server, api_key="not-the-key", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError, match="API key"):
        wrong.chat.completions.create(model=MODEL, messages=CONVERSATIONS[0], max_tokens=2)
    answer = httpx2.get(f"{server}/models", timeout=60)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_request_limits_answer_with_openai_errors(client):
    with pytest.raises(openai.BadRequestError, match="sequences"):
        client.completions.create(model=MODEL, prompt=[RAW_PROMPT] * 4, n=2, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model=MODEL, messages=CONVERSATIONS[0],
                                       max_tokens=MAX_TOKENS + 1)
    with pytest.raises(openai.APIStatusError, match="body") as error:
        client.completions.create(model=MODEL, prompt="tell me " * (MAX_BODY // 8),
                                  max_tokens=2)
    assert error.value.status_code == 413
    chunked = httpx2.post(f"{client.base_url}completions", timeout=60,
                          content=iter([b"x" * (MAX_BODY // 2)] * 3),  # no Content-Length
                          headers={"Authorization": f"Bearer {KEY}"})
    assert chunked.status_code == 413
    assert chunked.json()["error"]["code"] == "request_too_large"


def test_a_full_queue_answers_429(client):
    def ask(_):
        try:
            client.chat.completions.create(model=MODEL, messages=CONVERSATIONS[0], n=4,
                                           max_tokens=2, temperature=1.0)
            return "ok"
        except openai.RateLimitError as e:
            assert "full" in str(e) and e.response.headers["retry-after"] == "1"
            return "429"

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert sorted(pool.map(ask, range(2))) == ["429", "ok"]


def test_chat_streams_through_the_openai_client_in_pieces(client):
    plain = client.chat.completions.create(model=MODEL, messages=CONVERSATIONS[0],
                                           max_tokens=20, temperature=0)
    assert plain.choices[0].finish_reason == "length"
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=CONVERSATIONS[0], max_tokens=20, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and
              c.choices[0].delta.content]
    assert "".join(deltas) == plain.choices[0].message.content
    assert len(deltas) >= 2  # 20 tokens arrive in segments, not as one answer
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens == 20


def test_completions_stream_every_prompt_through_the_openai_client(client):
    prompts = [RAW_PROMPT, RAW_PROMPT.replace("rules", "plan")]
    plain = client.completions.create(model=MODEL, prompt=prompts, max_tokens=10,
                                      temperature=0)
    texts, reasons = ["", ""], [None, None]
    for chunk in client.completions.create(model=MODEL, prompt=prompts, max_tokens=10,
                                           temperature=0, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            reasons[choice.index] = choice.finish_reason or reasons[choice.index]
    assert texts == [c.text for c in plain.choices]
    assert reasons == [c.finish_reason for c in plain.choices]


def test_stream_is_server_sent_events_ending_with_done(server):
    body = {"model": MODEL, "messages": CONVERSATIONS[1], "max_tokens": 4, "stream": True}
    with httpx2.stream("POST", f"{server}/chat/completions", json=body, timeout=300,
                       headers={"Authorization": f"Bearer {KEY}"}) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        raw = "".join(answer.iter_text())
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for event in events[:-2]:
        assert event.startswith("data: ")
        chunk = json.loads(event[len("data: "):])
        assert chunk["object"] == "chat.completion.chunk" and chunk["model"] == MODEL


def test_empty_stop_string_is_ignored(client):
    plain = client.completions.create(model=MODEL, prompt=RAW_PROMPT, max_tokens=5,
                                      temperature=0).choices[0]
    empty = client.completions.create(model=MODEL, prompt=RAW_PROMPT, max_tokens=5,
                                      temperature=0, stop="").choices[0]
    assert plain.text and (empty.text, empty.finish_reason) == (plain.text, "length")


class SlowEngine(Engine):
    """An engine whose every decode segment takes 20 ms longer (a slow model); `jobs` lists
    the submitted jobs in order."""

    def __init__(self, *args, **kwargs) -> None:
        self.jobs = []
        super().__init__(*args, **kwargs)

    def submit(self, *args, **kwargs):
        job = super().submit(*args, **kwargs)
        self.jobs.append(job)
        return job

    def _deliver(self, batch, n, seg) -> None:
        time.sleep(0.02)
        super()._deliver(batch, n, seg)


def _wait_until(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_disconnected_client_leaves_the_batch_and_the_queue(tiny):
    cfg, params, tokenizer = tiny
    engine = SlowEngine(cfg, params, tokenizer, max_batch=4, segment=1)
    long = {"model": MODEL, "messages": CONVERSATIONS[0], "max_tokens": 900,
            "temperature": 0, "stream": True}
    queued = {"model": MODEL, "messages": CONVERSATIONS[1], "max_tokens": 4,
              "temperature": 1.0}  # a different batch key: it waits behind the long one
    try:
        with app_in_thread(create_app(engine, MODEL)) as url:
            with httpx2.stream("POST", f"{url}/chat/completions", json=long,
                               timeout=300) as answer:
                lines = answer.iter_lines()
                assert '"content": ""' in next(lines)  # the role chunk
                assert "content" in next(line for line in lines if line)
                with pytest.raises(httpx2.TimeoutException):
                    httpx2.post(f"{url}/chat/completions", json=queued, timeout=1.5)
                # the server notices that disconnect while the long answer still runs
                _wait_until(lambda: len(engine.jobs) == 2 and engine.jobs[1].aborted.is_set())
            _wait_until(lambda: engine.sequences == 0)
    finally:
        engine.close()
    assert engine.counters["cancelled_rows"] == 1
    assert engine.counters["cancelled_queued"] == 1
    assert engine.batch_sizes == [1]  # the queued request never ran
    assert engine.counters["decode_steps"] < 900


def test_tokenization_runs_in_the_thread_pool(tiny):
    cfg, params, tokenizer = tiny
    engine = Engine(cfg, params, tokenizer)
    threads = []
    encode_chat = tokenizer.encode_chat
    tokenizer.encode_chat = lambda *a: threads.append(threading.current_thread().name) or \
        encode_chat(*a)
    try:
        with app_in_thread(create_app(engine, MODEL)) as url:
            client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300)
            client.chat.completions.create(model=MODEL, messages=CONVERSATIONS[0],
                                           max_tokens=2)
    finally:
        tokenizer.encode_chat = encode_chat
        engine.close()
    assert len(threads) == 1 and threads[0].startswith("ssp-serve-text")


def _serve_exit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssp_jax.serve", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu"))


def test_binding_beyond_loopback_needs_a_key_or_an_explicit_opt_out():
    refused = _serve_exit("--model", MODEL, "--host", "0.0.0.0")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith(
        "error: --host 0.0.0.0 accepts connections from other machines")
    # the opt-out warns before loading; the bad model then ends it without binding
    warned = _serve_exit("--model", "no-such-model-here", "--host", "0.0.0.0",
                         "--allow-unauthenticated")
    assert "WITHOUT an API key" in warned.stderr
    assert warned.returncode == 2


def test_a_missing_checkpoint_is_one_line_before_loading(tmp_path):
    missing = tmp_path / "nope" / "checkpoints" / "2"
    done = _serve_exit("--checkpoint", str(missing))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: --checkpoint {missing}: does not exist"]


def test_the_api_key_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    args = parse_args(["--model", MODEL, "--host", "0.0.0.0"])
    check_args(args)  # a key is given, so a non-loopback host needs no opt-out
    assert args.api_key == "from-env"


def _memory_kib(pid: int, field: str) -> int:
    """VmRSS / VmHWM (peak resident memory) of a process, in KiB."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


MEMORY_SLACK_MIB = 400  # compiling the batch's programs; the old code needed > 1 GiB here


def test_many_long_prompts_are_queued_within_the_memory_budget(tmp_path):
    """48 prompts of ~1000 tokens at once, with room for 64 rows per batch: the budget of
    4096 tokens in flight runs them 4 rows at a time, prefilled 128 tokens per step, so the
    server's peak memory grows by far less than one whole-prompt prefill of 64 rows would
    take (its attention scores alone: 64 x 4 heads x 1024² x 4 bytes = 1 GiB)."""
    long_prompt = RAW_PROMPT + "tell me a story about the secret plan " * 120
    with serve_process(tmp_path / "serve.log", "--model", MODEL, "--max-batch", "64",
                       "--max-tokens-in-flight", "4096", "--prefill-chunk", "128",
                       "--max-rows-per-request", "64", "--max-cache-len", "1024") as url:
        pid = int(next(line.split("[")[1].split("]")[0] for line in
                       (tmp_path / "serve.log").read_text().splitlines()
                       if "Started server process" in line))
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
        client.completions.create(model=MODEL, prompt=RAW_PROMPT, max_tokens=2)
        before = _memory_kib(pid, "VmRSS")

        def ask(i):
            answer = client.completions.create(model=MODEL, prompt=long_prompt + "me " * i,
                                               max_tokens=2, temperature=0)
            return answer.usage.prompt_tokens

        with concurrent.futures.ThreadPoolExecutor(48) as pool:
            lengths = list(pool.map(ask, range(48)))
        peak = _memory_kib(pid, "VmHWM")
    assert min(lengths) > 900
    assert (peak - before) / 1024 < MEMORY_SLACK_MIB
