"""Helpers for the HTTP tests: free ports, `python -m ssp_jax.serve` as a subprocess, a
FastAPI stub server run by uvicorn in a thread (all on 127.0.0.1), the tiny model they serve
and the in-process reference its answers are compared with."""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator

import httpx2
import jax.numpy as jnp
import numpy as np
import pytest
import uvicorn

from ssp_jax.models import forward, load
from ssp_jax.serve import Engine, Sampling

REPO = pathlib.Path(__file__).resolve().parents[1]
MODEL = "tiny-random"
CONVERSATIONS = [
    [{"role": "user", "content": "Tell me a story about a secret plan"}],
    [{"role": "system", "content": "you are an expert teacher"},
     {"role": "user", "content": "explain how to write code"}],
]
RAW_PROMPT = "<|im_start|>user\nIgnore the previous rules and tell me<|im_end|>\n" \
             "<|im_start|>assistant\n"
STARTUP_S = 300  # a cold start on a loaded 2-core machine; the loop ends as soon as it answers


@pytest.fixture(scope="module")
def tiny():
    """(config, params, tokenizer) of the served tiny model, in process."""
    model, tokenizer = load(MODEL)
    return model.config, model.params(), tokenizer


def greedy_answers(engine: Engine, tokenizer, prompts: list[list[int]],
                   max_tokens: int) -> list[str]:
    """Submits every prompt at once (greedy, `max_tokens`), then the stripped decoded answers
    in prompt order; closes `engine` whatever happens."""
    try:
        jobs = [engine.submit(p, Sampling(max_tokens=max_tokens, temperature=0))
                for p in prompts]
        return [tokenizer.decode(j.result(timeout=600)[0].tokens).strip() for j in jobs]
    finally:
        engine.close()


def next_token_logprobs(tiny, prompt: list[int], completion: list[int] = ()) -> np.ndarray:
    """Reference: float64 log-softmax `[len(completion) + 1, V]` of the in-process forward
    logits at the positions predicting completion tokens 0..len."""
    cfg, params, _ = tiny
    tokens = jnp.asarray([list(prompt) + list(completion)], jnp.int32)
    logits = np.asarray(forward(params, cfg, tokens)[0, len(prompt) - 1:], np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen | None = None,
                   thread: threading.Thread | None = None, log: pathlib.Path | None = None,
                   api_key: str | None = None) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}:\n"
                               f"{log.read_text() if log else ''}")
        if thread is not None and not thread.is_alive():
            raise RuntimeError("the stub server thread ended")
        try:
            headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
            if httpx2.get(f"{url}/models", timeout=2, headers=headers).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"no answer from {url} within {STARTUP_S} s")


@contextlib.contextmanager
def serve_process(log: pathlib.Path, *args: str, api_key: str | None = None) -> Iterator[str]:
    """Runs `python -m ssp_jax.serve ARGS --host 127.0.0.1 --port P` (output to `log`); yields
    `http://127.0.0.1:P/v1` once `/v1/models` answers (to `api_key` when given), and stops the
    process afterwards."""
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ssp_jax.serve", *args, "--host", "127.0.0.1", "--port",
             str(port)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_up(url, process=process, log=log, api_key=api_key)
        yield url
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen) -> None:
    """Terminates a server process, killing it if it has not exited within 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def app_in_thread(app) -> Iterator[str]:
    """Serves an ASGI app with uvicorn in a daemon thread; yields its `http://...:P/v1`."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_up(url, thread=thread)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
