"""The OpenAI-compatible HTTP API over an `Engine`: `/v1/models`, `/v1/chat/completions` and
`/v1/completions` with the OpenAI request and response shapes, streamed or not.

Supported request fields: max_tokens (chat also max_completion_tokens), temperature (0 =
greedy), top_p, n, seed, stop (strings, cut from the text; empty strings are ignored),
stream (server-sent events of OpenAI chunks, `data: [DONE]` last; `stream_options.
include_usage` adds a usage chunk), and log-probs (not streamed): chat `logprobs` +
`top_logprobs`, completions `logprobs: int`. Log-probs are the model's own distribution
(temperature 1, unfiltered); each token's text is what it adds after the tokens before it, so
SentencePiece's "▁Yes" reads " Yes" as from OpenAI and vLLM. Raw completion prompts are
tokenized like a judge's in process (`Tokenizer.encode_prompt`: special-token strings parsed,
BOS added where the tokenizer adds one and the text lacks it); a prompt may also be token ids.
Tokenization and detokenization run in a thread pool, off the event loop.

With an API key every request needs `Authorization: Bearer KEY` (else 401). `ServerLimits`
bounds each request: its body (413), prompts x n (400), max_tokens (400); the engine bounds
prompt + max_tokens (400) and the sequences queued (429). A client that disconnects aborts its
sequences. Errors answer with the OpenAI error body `{"error": {"message", "type", "param",
"code"}}`: 400 for a bad request, 404 for an unknown model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hmac
import json
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable

import fastapi
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from ssp_jax.models.tokenizer import Tokenizer
from ssp_jax.serve.detok import TextStream, token_texts
from ssp_jax.serve.engine import Engine, Job, QueueFull, Sample, Sampling

DEFAULT_CHAT_MAX_TOKENS = 256  # chat requests without max_tokens (bounded by the cache)


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """Per-request limits (the engine adds the cache length and the queue bound)."""

    max_body_bytes: int = 4 * 2**20  # request body; larger gets 413
    max_rows: int = 64  # prompts x n in one request
    max_tokens: int = 4096  # max_tokens of one request


class APIError(Exception):
    """An error answered with the OpenAI error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def _error_body(status: int, message: str, param: str | None = None,
                code: str | None = None) -> dict:
    kind = {401: "authentication_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class ChatMessage(BaseModel):
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model: str
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    stop: str | list[str] | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None


class CompletionRequest(BaseModel):
    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    stop: str | list[str] | None = None
    logprobs: int | None = None
    echo: bool = False
    stream: bool = False
    stream_options: dict[str, Any] | None = None


class Guard:
    """ASGI middleware: the API key (401) and the request body limit (413), checked before
    FastAPI reads anything. The body is read here (at most `max_body_bytes` + one message) and
    handed on; later `receive` calls reach the client (disconnects)."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes
        self.expected = None if api_key is None else f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.expected is not None and not hmac.compare_digest(
                headers.get(b"authorization", b""), self.expected):
            return await _send_error(send, 401, "missing or wrong API key: send the header "
                                     "'Authorization: Bearer KEY'", "invalid_api_key")
        too_large = f"the request body is larger than the server's limit of " \
                    f"{self.max_body_bytes} bytes"
        if int(headers.get(b"content-length", b"0") or 0) > self.max_body_bytes:
            return await _send_error(send, 413, too_large, "request_too_large")
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return await _send_error(send, 413, too_large, "request_too_large")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _send_error(send, status: int, message: str, code: str) -> None:
    body = json.dumps(_error_body(status, message, code=code)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _text_of(message: ChatMessage) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    return "".join(part.get("text", "") for part in message.content if part.get("type") == "text")


def _stops(stop: str | list[str] | None) -> list[str]:
    """Stop strings, without empty ones (an empty stop would match before any text)."""
    return [s for s in ([stop] if isinstance(stop, str) else stop or []) if s]


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_logprobs(tokenizer: Tokenizer, prompt: list[int], sample: Sample, count: int) -> dict:
    """The chat `logprobs` object: one entry per generated token, with `top_logprobs`."""
    texts, alternatives = token_texts(tokenizer, prompt, sample.tokens[:count],
                                      sample.top_ids[:count])

    def entry(text: str, logprob: float) -> dict:
        return {"token": text, "logprob": float(logprob), "bytes": list(text.encode())}

    content = []
    for j, text in enumerate(texts):
        item = entry(text, sample.chosen_logprobs[j])
        item["top_logprobs"] = [entry(t, v) for t, v in
                                zip(alternatives[j], sample.top_logprobs[j])]
        content.append(item)
    return {"content": content}


def completion_logprobs(tokenizer: Tokenizer, prompt: list[int], sample: Sample,
                        count: int) -> dict:
    """The completions `logprobs` object: tokens, token_logprobs, top_logprobs, text_offset."""
    texts, alternatives = token_texts(tokenizer, prompt, sample.tokens[:count],
                                      sample.top_ids[:count])
    offsets, offset = [], 0
    for text in texts:
        offsets.append(offset)
        offset += len(text)
    top = []
    for j in range(len(texts)):
        best: dict[str, float] = {}
        for text, v in zip(alternatives[j], sample.top_logprobs[j]):
            best.setdefault(text, float(v))  # keep the likelier
        top.append(best)
    return {"tokens": texts, "token_logprobs": [float(v) for v in sample.chosen_logprobs[:count]],
            "top_logprobs": top, "text_offset": offsets}


class ClientGone(Exception):
    """The client disconnected; its sequences were aborted."""


class Generation:
    """The jobs of one HTTP request (one per prompt, n samples each) and their text streams.

    `events()` yields `(choice index, new text, finish reason or None)` as tokens arrive;
    afterwards `samples`, `streams` and `completion_tokens` describe the finished choices."""

    def __init__(self, engine: Engine, pool: concurrent.futures.Executor,
                 stops: list[str]) -> None:
        self.engine, self.pool, self.stops = engine, pool, stops
        self.jobs: list[Job] = []
        self.streams: list[list[TextStream]] = []
        self.samples: list[list[Sample]] = []
        self._queue: asyncio.Queue = asyncio.Queue()

    def start(self, prompts: list[list[int]], sampling: Sampling) -> None:
        """Submits every prompt, or none (400 for a bad request, 429 when the queue is full)."""
        loop = asyncio.get_running_loop()
        put = lambda item: loop.call_soon_threadsafe(self._queue.put_nowait, item)  # noqa
        try:
            for i, prompt in enumerate(prompts):
                job = self.engine.submit(prompt, sampling, lambda g, p, i=i: put((i, g, p)))
                job.add_done_callback(lambda _, i=i: put((i, None, None)))
                self.jobs.append(job)
                self.streams.append([TextStream(self.engine.tokenizer, self.stops)
                                     for _ in range(sampling.n)])
        except (ValueError, QueueFull) as e:
            self.abort()
            raise APIError(429 if isinstance(e, QueueFull) else 400, str(e),
                           code="server_busy" if isinstance(e, QueueFull) else None) from None

    def abort(self) -> None:
        for job in self.jobs:
            job.abort()

    async def events(self, disconnected: Callable[[], Awaitable[bool]] | None = None
                     ) -> AsyncIterator[tuple[int, str, str | None]]:
        """New text per choice as it is generated; aborts every job if the client leaves."""
        loop, remaining, n = asyncio.get_running_loop(), len(self.jobs), len(self.streams[0])
        self.samples = [[] for _ in self.jobs]
        stop_ids = self.engine.tokenizer.stop_ids
        try:
            while remaining:
                try:
                    i, g, piece = await asyncio.wait_for(self._queue.get(), 0.5)
                except asyncio.TimeoutError:
                    if disconnected is not None and await disconnected():
                        raise ClientGone from None
                    continue
                if g is None:
                    remaining -= 1
                    for g, delta, reason in self._finish(i):
                        yield i * n + g, delta, reason
                    continue
                stream = self.streams[i][g]
                if stream.stopped:
                    continue
                await loop.run_in_executor(self.pool, stream.push, piece.tokens, stop_ids)
                if all(s.stopped for s in self.streams[i]):
                    self.jobs[i].abort()  # every sample hit a stop string: free its rows
                delta = stream.take()
                if delta:
                    yield i * n + g, delta, None
        finally:
            if remaining:
                self.abort()

    def _finish(self, i: int) -> list[tuple[int, str, str]]:
        """The last text and the finish reason of each sample of prompt i."""
        try:
            self.samples[i] = self.jobs[i].result()
        except Exception as e:  # noqa: BLE001 - the engine's failure, answered as a 500
            raise APIError(500, f"generation failed: {type(e).__name__}: {e}") from None
        out = []
        for g, (stream, sample) in enumerate(zip(self.streams[i], self.samples[i])):
            reason = "stop" if stream.stopped or sample.finished else "length"
            out.append((g, stream.take(final=True), reason))
        return out

    @property
    def completion_tokens(self) -> int:
        return sum(s.num_tokens for row in self.streams for s in row)


def _sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n"


class _Handlers:
    """The endpoints of one app: checks, tokenization in the thread pool, generation."""

    def __init__(self, engine: Engine, model_name: str, limits: ServerLimits) -> None:
        self.engine, self.model_name, self.limits = engine, model_name, limits
        self.tokenizer = engine.tokenizer
        self.pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="ssp-serve-text")
        self.created = int(time.time())

    async def blocking(self, fn, *args):
        """`fn(*args)` in the thread pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def check(self, name: str, rows: int, max_tokens: int) -> None:
        if name != self.model_name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves "
                           f"{self.model_name!r}", param="model", code="model_not_found")
        if rows > self.limits.max_rows:
            raise APIError(400, f"the request asks for {rows} sequences (prompts x n), more "
                           f"than the server's limit of {self.limits.max_rows}", param="n")
        if max_tokens > self.limits.max_tokens:
            raise APIError(400, f"max_tokens {max_tokens} is more than the server's limit of "
                           f"{self.limits.max_tokens}", param="max_tokens")

    async def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.model_name, "object": "model",
                                            "created": self.created, "owned_by": "ssp_jax"}]}

    async def chat(self, request: ChatRequest, http: fastapi.Request):
        wanted = next((m for m in (request.max_completion_tokens, request.max_tokens)
                       if m is not None), None)
        self.check(request.model, request.n, wanted or 0)
        if request.stream and request.logprobs:
            raise APIError(400, "logprobs are not supported with stream=true", param="logprobs")
        try:
            prompt = await self.blocking(self.tokenizer.encode_chat, [
                {"role": m.role, "content": _text_of(m)} for m in request.messages])
        except Exception as e:  # noqa: BLE001 - a template error is the request's fault
            raise APIError(400, f"cannot apply the chat template: {e}",
                           param="messages") from None
        top = (request.top_logprobs or 0) if request.logprobs else None
        max_tokens = wanted or max(1, min(DEFAULT_CHAT_MAX_TOKENS,
                                          self.engine.max_cache_len - len(prompt)))
        run = Generation(self.engine, self.pool, _stops(request.stop))
        run.start([prompt], Sampling(max_tokens, request.temperature, request.top_p,
                                     request.seed, request.n, top))
        reply = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()),
                 "model": self.model_name}
        if request.stream:
            usage = bool((request.stream_options or {}).get("include_usage"))
            return StreamingResponse(_chat_stream(run, reply, len(prompt), request.n, usage),
                                     media_type="text/event-stream")
        await _drain(run, http)
        choices = []
        for g, (stream, sample) in enumerate(zip(run.streams[0], run.samples[0])):
            logprobs = await self.blocking(chat_logprobs, self.tokenizer, prompt, sample,
                                           stream.num_tokens) if request.logprobs else None
            choices.append({"index": g, "message": {"role": "assistant", "content": stream.text},
                            "logprobs": logprobs, "finish_reason": _reason(stream, sample)})
        return {**reply, "object": "chat.completion", "choices": choices,
                "usage": _usage(len(prompt), run.completion_tokens)}

    async def completions(self, request: CompletionRequest, http: fastapi.Request):
        raw = request.prompt
        batch = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else raw
        self.check(request.model, len(batch) * request.n, request.max_tokens)
        if request.echo:
            raise APIError(400, "echo=true is not supported", param="echo")
        if request.stream and request.logprobs is not None:
            raise APIError(400, "logprobs are not supported with stream=true", param="logprobs")
        if not batch:
            raise APIError(400, "prompt is an empty list", param="prompt")
        prompts = await self.blocking(lambda: [self.tokenizer.encode_prompt(p)
                                               if isinstance(p, str) else list(p) for p in batch])
        run = Generation(self.engine, self.pool, _stops(request.stop))
        run.start(prompts, Sampling(request.max_tokens, request.temperature, request.top_p,
                                    request.seed, request.n, request.logprobs))
        reply = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                 "created": int(time.time()), "model": self.model_name}
        prompt_tokens = sum(map(len, prompts))
        if request.stream:
            usage = bool((request.stream_options or {}).get("include_usage"))
            return StreamingResponse(_completion_stream(run, reply, prompt_tokens, usage),
                                     media_type="text/event-stream")
        await _drain(run, http)
        choices = []
        for i, prompt in enumerate(prompts):
            for stream, sample in zip(run.streams[i], run.samples[i]):
                logprobs = None if request.logprobs is None else await self.blocking(
                    completion_logprobs, self.tokenizer, prompt, sample, stream.num_tokens)
                choices.append({"index": len(choices), "text": stream.text,
                                "logprobs": logprobs, "finish_reason": _reason(stream, sample)})
        return {**reply, "choices": choices,
                "usage": _usage(prompt_tokens, run.completion_tokens)}


def create_app(engine: Engine, model_name: str, *, api_key: str | None = None,
               limits: ServerLimits = ServerLimits()) -> fastapi.FastAPI:
    """The FastAPI application serving `engine` under the model id `model_name`; with
    `api_key`, every request must carry it as a bearer token."""
    app = fastapi.FastAPI(title="ssp_jax serve")
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=limits.max_body_bytes)
    handlers = _Handlers(engine, model_name, limits)

    @app.exception_handler(APIError)
    async def api_error(_: fastapi.Request, e: APIError) -> JSONResponse:
        headers = {"Retry-After": "1"} if e.status == 429 else None
        return JSONResponse(_error_body(e.status, e.message, e.param, e.code),
                            status_code=e.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: fastapi.Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'][1:]))}: {err['msg']}"
                             for err in e.errors())
        return await api_error(_, APIError(400, f"invalid request: {problems}"))

    app.get("/v1/models")(handlers.models)
    app.post("/v1/chat/completions")(handlers.chat)
    app.post("/v1/completions")(handlers.completions)
    return app


def _reason(stream: TextStream, sample: Sample) -> str:
    return "stop" if stream.stopped or sample.finished else "length"


async def _drain(run: Generation, http: fastapi.Request) -> None:
    """Runs a non-streamed generation to its end; a client that left aborts it."""
    try:
        async for _ in run.events(http.is_disconnected):
            pass
    except ClientGone:
        raise APIError(499, "the client closed the connection") from None


async def _chat_stream(run: Generation, reply: dict, prompt_tokens: int, n: int,
                       usage: bool) -> AsyncIterator[str]:
    """Chat chunks: the role first, then content deltas, then each choice's finish reason."""
    chunk = {**reply, "object": "chat.completion.chunk"}

    def choice(i: int, delta: dict, reason: str | None) -> str:
        return _sse({**chunk, "choices": [{"index": i, "delta": delta, "logprobs": None,
                                           "finish_reason": reason}]})

    for i in range(n):
        yield choice(i, {"role": "assistant", "content": ""}, None)
    async for i, text, reason in run.events():
        if text:
            yield choice(i, {"content": text}, None)
        if reason is not None:
            yield choice(i, {}, reason)
    if usage:
        yield _sse({**chunk, "choices": [], "usage": _usage(prompt_tokens,
                                                            run.completion_tokens)})
    yield _sse("[DONE]")


async def _completion_stream(run: Generation, reply: dict, prompt_tokens: int,
                             usage: bool) -> AsyncIterator[str]:
    """Completion chunks: text deltas, then each choice's finish reason."""
    async for i, text, reason in run.events():
        yield _sse({**reply, "choices": [{"index": i, "text": text, "logprobs": None,
                                          "finish_reason": reason}]})
    if usage:
        yield _sse({**reply, "choices": [], "usage": _usage(prompt_tokens,
                                                            run.completion_tokens)})
    yield _sse("[DONE]")
