"""The OpenAI-compatible HTTP API over an `Engine`: `/v1/models`, `/v1/chat/completions` and
`/v1/completions` with the OpenAI request and response shapes (no streaming).

Supported request fields: max_tokens (chat also max_completion_tokens), temperature (0 =
greedy), top_p, n, seed, stop (strings, cut from the text), and log-probs: chat `logprobs` +
`top_logprobs`, completions `logprobs: int`. Log-probs are the model's own distribution
(temperature 1, unfiltered). Raw completion prompts are tokenized like a judge's in process
(`Tokenizer.encode_prompt`: special-token strings parsed, BOS added where the tokenizer adds
one and the text lacks it); a prompt may also be token ids. Errors answer with the
OpenAI error body `{"error": {"message", "type", "param", "code"}}`: 400 for a bad request, 404
for an unknown model.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import fastapi
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ssp_jax.models.tokenizer import Tokenizer
from ssp_jax.serve.engine import Engine, Sample, Sampling

DEFAULT_CHAT_MAX_TOKENS = 256  # chat requests without max_tokens (bounded by the cache)


class APIError(Exception):
    """An error answered with the OpenAI error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


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


def _text_of(message: ChatMessage) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    return "".join(part.get("text", "") for part in message.content if part.get("type") == "text")


class _Decoded:
    """A sample's text after stop strings, with the tokens that produced it."""

    def __init__(self, tokenizer: Tokenizer, sample: Sample, stops: list[str]) -> None:
        tokens = sample.tokens
        body = tokens[:-1] if sample.finished else tokens  # the stop token is not text
        self.text = tokenizer.decode(body)
        self.num_tokens = len(tokens)
        self.finish_reason = "stop" if sample.finished else "length"
        if stops and any(s in self.text for s in stops):
            for k in range(1, len(body) + 1):  # the first token whose text completes a stop
                text = tokenizer.decode(body[:k])
                hits = [text.index(s) for s in stops if s in text]
                if hits:
                    self.text, self.num_tokens, self.finish_reason = text[:min(hits)], k, "stop"
                    break


def _token_text(tokenizer: Tokenizer, token: int) -> str:
    return tokenizer.decode([int(token)], skip_special_tokens=False)


def _chat_logprobs(tokenizer: Tokenizer, sample: Sample, count: int) -> dict:
    """The chat `logprobs` object: one entry per generated token, with `top_logprobs`."""
    def entry(token: int, logprob: float) -> dict:
        text = _token_text(tokenizer, token)
        return {"token": text, "logprob": float(logprob), "bytes": list(text.encode())}

    content = []
    for j in range(count):
        item = entry(sample.tokens[j], sample.chosen_logprobs[j])
        item["top_logprobs"] = [entry(t, v) for t, v in
                                zip(sample.top_ids[j], sample.top_logprobs[j])]
        content.append(item)
    return {"content": content}


def _completion_logprobs(tokenizer: Tokenizer, sample: Sample, count: int) -> dict:
    """The completions `logprobs` object: tokens, token_logprobs, top_logprobs, text_offset."""
    tokens = [_token_text(tokenizer, t) for t in sample.tokens[:count]]
    offsets, offset = [], 0
    for text in tokens:
        offsets.append(offset)
        offset += len(text)
    top = []
    for j in range(count):
        alternatives: dict[str, float] = {}
        for t, v in zip(sample.top_ids[j], sample.top_logprobs[j]):
            alternatives.setdefault(_token_text(tokenizer, t), float(v))  # keep the likelier
        top.append(alternatives)
    return {"tokens": tokens, "token_logprobs": [float(v) for v in sample.chosen_logprobs[:count]],
            "top_logprobs": top, "text_offset": offsets}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _stops(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else [s for s in stop or [] if s]


def create_app(engine: Engine, model_name: str) -> fastapi.FastAPI:
    """The FastAPI application serving `engine` under the model id `model_name`."""
    app = fastapi.FastAPI(title="ssp_jax serve")
    tokenizer = engine.tokenizer
    created = int(time.time())

    @app.exception_handler(APIError)
    async def api_error(_: fastapi.Request, e: APIError) -> JSONResponse:
        kind = "invalid_request_error" if e.status < 500 else "server_error"
        return JSONResponse({"error": {"message": e.message, "type": kind, "param": e.param,
                                       "code": e.code}}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: fastapi.Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'][1:]))}: {err['msg']}"
                             for err in e.errors())
        return await api_error(_, APIError(400, f"invalid request: {problems}"))

    def check_model(name: str) -> None:
        if name != model_name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves "
                           f"{model_name!r}", param="model", code="model_not_found")

    async def run(prompt: list[int], sampling: Sampling) -> list[Sample]:
        try:
            future = engine.submit(prompt, sampling)
        except ValueError as e:
            raise APIError(400, str(e)) from None
        try:
            return await asyncio.wrap_future(future)
        except Exception as e:  # noqa: BLE001 - the engine's failure, answered as a 500
            raise APIError(500, f"generation failed: {type(e).__name__}: {e}") from None

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model",
                                            "created": created, "owned_by": "ssp_jax"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: ChatRequest) -> dict:
        check_model(request.model)
        if request.stream:
            raise APIError(400, "stream=true is not supported", param="stream")
        if request.logprobs and request.top_logprobs is None:
            request.top_logprobs = 0
        try:
            prompt = tokenizer.encode_chat([{"role": m.role, "content": _text_of(m)}
                                            for m in request.messages])
        except Exception as e:  # noqa: BLE001 - a template error is the request's fault
            raise APIError(400, f"cannot apply the chat template: {e}",
                           param="messages") from None
        max_tokens = next((m for m in (request.max_completion_tokens, request.max_tokens)
                           if m is not None),
                          max(1, min(DEFAULT_CHAT_MAX_TOKENS, engine.max_cache_len - len(prompt))))
        samples = await run(prompt, Sampling(
            max_tokens, request.temperature, request.top_p, request.seed, request.n,
            request.top_logprobs if request.logprobs else None))
        stops, choices, generated = _stops(request.stop), [], 0
        for i, sample in enumerate(samples):
            decoded = _Decoded(tokenizer, sample, stops)
            generated += decoded.num_tokens
            logprobs = _chat_logprobs(tokenizer, sample, decoded.num_tokens) \
                if request.logprobs else None
            choices.append({"index": i, "message": {"role": "assistant", "content": decoded.text},
                            "logprobs": logprobs, "finish_reason": decoded.finish_reason})
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                "created": int(time.time()), "model": model_name, "choices": choices,
                "usage": _usage(len(prompt), generated)}

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest) -> dict:
        check_model(request.model)
        if request.stream or request.echo:
            raise APIError(400, "stream=true and echo=true are not supported")
        raw = request.prompt
        batch = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else raw
        prompts = [tokenizer.encode_prompt(p) if isinstance(p, str) else list(p) for p in batch]
        if not prompts:
            raise APIError(400, "prompt is an empty list", param="prompt")
        sampling = Sampling(request.max_tokens, request.temperature, request.top_p, request.seed,
                            request.n, request.logprobs)
        results = await asyncio.gather(*(run(p, sampling) for p in prompts))
        stops, choices, generated = _stops(request.stop), [], 0
        for samples in results:
            for sample in samples:
                decoded = _Decoded(tokenizer, sample, stops)
                generated += decoded.num_tokens
                logprobs = None if request.logprobs is None else \
                    _completion_logprobs(tokenizer, sample, decoded.num_tokens)
                choices.append({"index": len(choices), "text": decoded.text,
                                "logprobs": logprobs, "finish_reason": decoded.finish_reason})
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": model_name, "choices": choices,
                "usage": _usage(sum(map(len, prompts)), generated)}

    return app
