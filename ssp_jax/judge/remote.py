"""A judge backend that calls any OpenAI-compatible server (vLLM, SGLang, TGI, or our own
`python -m ssp_jax.serve`).

Chat prompts go to `/chat/completions`, raw text prompts (a guard model's own format) to
`/completions`, always greedy (temperature 0). Probabilities come from the server's log-probs
along the first ANSWER_TOKENS greedy tokens (`answer_prob`): `top_logprobs` for chat,
`logprobs: N` for completions. A candidate answer counts only where listed tokens spell the
whole word, after the leading space marker is set aside (" Yes", "▁Yes" and "Yes" are one
word; "un" is not "unsafe", but "un" then "safe" is), past whitespace the judge writes first.
Up to `max_concurrency` requests are in flight at once; each has `timeout_s` and is retried
`max_retries` times with exponential backoff on connection errors, timeouts, HTTP 408/409/429
and 5xx, never past the batch deadline (`batch_timeout_s`). A row that still fails, or is
unfinished at the deadline, is a `RowError` naming the url and the error: the batch goes on,
and no answer is ever made up for it.

HTTP goes through httpx2 (the maintained successor of httpx, which the `openai` client and
huggingface_hub use).
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import time
from typing import Any, Callable, Sequence

import httpx2
import numpy as np

from ssp_jax.cli import UserError
from ssp_jax.judge.backend import JudgePrompt, RowError

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20  # alternatives asked for at each position (OpenAI's and vLLM's limit)
ANSWER_TOKENS = 4  # tokens read per probability request: whitespace the judge writes first,
# then the verdict word's tokens along the greedy answer
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
BACKOFF_S = 0.5  # wait before retry k (k = 0, 1, ...) is BACKOFF_S * 2^k, capped
MAX_BACKOFF_S = 8.0
DEADLINE_GRACE_S = 1.0  # past the batch deadline, time for requests cut at it to return
LATE = "unfinished at the batch deadline"


SPACE_MARKS = (" ", "\u2581", "\u0120")  # a space, SentencePiece's "▁", byte-level BPE's "Ġ"
MAX_CONTINUATIONS = 4  # tokens that only begin a candidate, followed up per candidate


def bare(text: str) -> str:
    """`text` without one leading space marker (" Yes", "▁Yes", "ĠYes" -> "Yes")."""
    return text[1:] if text[:1] in SPACE_MARKS else text


def word_prob(top: Sequence[tuple[str, float]], word: str, *, spaced: bool = True) -> float:
    """exp(logprob) summed over the `top` tokens that spell the whole `word`: those whose text
    is exactly `word`, or where none is and `spaced`, those equal to it once both lose a
    leading space marker (servers differ in whether they return SentencePiece's "▁" as a
    space). A token that only begins the word ("un" for "unsafe") never counts."""
    exact = [lp for t, lp in top if t == word]
    if exact or not spaced:
        return float(sum(math.exp(lp) for lp in exact))
    return float(sum(math.exp(lp) for t, lp in top if t and bare(t) == bare(word)))


def candidate_probs(top: Sequence[tuple[str, float]], candidates: Sequence[str]) -> np.ndarray:
    """`[K]` f32: `word_prob` of each candidate among the `top` (token text, logprob) pairs;
    0 when no listed token is the whole candidate."""
    return np.array([word_prob(top, c) for c in candidates], np.float32)


def word_starts(top: Sequence[tuple[str, float]], word: str, spaced: bool = True,
                skip: str | None = None) -> list[tuple[str, float]]:
    """(the part of `word` it spells, probability) of the likeliest `top` tokens that spell a
    proper, non-empty beginning of `word` ("un" of "unsafe"), other than `skip`, at most
    MAX_CONTINUATIONS."""
    target = bare(word) if spaced else word
    starts: dict[str, float] = {}
    for t, lp in sorted(top, key=lambda e: -e[1]):
        piece = bare(t) if spaced else t
        if piece and piece != skip and len(piece) < len(target) and target.startswith(piece):
            starts[piece] = starts.get(piece, 0.0) + math.exp(lp)
    return list(starts.items())[:MAX_CONTINUATIONS]


# One generated position: (the greedy token's text, its logprob, the top (text, logprob) list)
Position = tuple[str, float, list[tuple[str, float]]]


def _word_from(positions: Sequence[Position], word: str, spaced: bool) -> float:
    """P(the answer from `positions[0]` on spells `word`): a listed token that is the whole
    word, plus the greedy token's probability times the rest of the word after it when the
    greedy token spells only its beginning ("un", then "safe")."""
    token, logprob, top = positions[0]
    p = word_prob(top, word, spaced=spaced)
    piece, target = (bare(token), bare(word)) if spaced else (token, word)
    if len(positions) > 1 and piece and len(piece) < len(target) and target.startswith(piece):
        p += math.exp(logprob) * _word_from(positions[1:], target[len(piece):], spaced=False)
    return p


def answer_prob(positions: Sequence[Position], word: str) -> float:
    """P(the judge's answer is `word`) read along the server's greedy answer: from the first
    position, and after each greedy token that is only whitespace (Llama Guard 3 writes "\n\n"
    before its verdict) times that token's probability. Words off the greedy path that need
    several tokens are not seen (0)."""
    total, lead = 0.0, 1.0
    for d, (token, logprob, _) in enumerate(positions):
        total += lead * _word_from(positions[d:], word, spaced=True)
        if not token or token.strip():
            break
        lead *= math.exp(logprob)
    return total


def _positions_of_chat(choice: dict) -> list[Position] | None:
    content = (choice.get("logprobs") or {}).get("content") or []
    if not content or content[0].get("top_logprobs") is None:
        return None
    return [(e["token"], float(e["logprob"]),
             [(t["token"], float(t["logprob"])) for t in e["top_logprobs"]]) for e in content]


def _positions_of_completion(choice: dict) -> list[Position] | None:
    logprobs = choice.get("logprobs") or {}
    tops = logprobs.get("top_logprobs") or []
    if not tops or not tops[0]:
        return None
    return [(token, float(lp), [(t, float(v)) for t, v in top.items()])
            for token, lp, top in zip(logprobs["tokens"], logprobs["token_logprobs"], tops)]


class RemoteBackend:
    """`JudgeBackend` over an OpenAI-compatible server at `url` (e.g. `http://HOST:PORT/v1`)
    serving `model`. `api_key` (None: none) is sent as a bearer token. `batch_timeout_s`
    (None: none) bounds each `generate` / `next_token_probs` call: rows unfinished by then
    (retries and backoff included) are RowErrors naming the deadline, and no request outlives
    it by more than its own connection teardown."""

    def __init__(self, url: str, model: str, *, api_key: str | None, timeout_s: float,
                 max_concurrency: int, max_retries: int,
                 batch_timeout_s: float | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"judge url {url!r} must start with http:// or https://")
        if timeout_s <= 0 or max_concurrency < 1 or max_retries < 0 or \
                (batch_timeout_s is not None and batch_timeout_s <= 0):
            raise ValueError(f"judge server {url}: need timeout_s > 0 (got {timeout_s}), "
                             f"max_concurrency ≥ 1 (got {max_concurrency}), max_retries ≥ 0 "
                             f"(got {max_retries}) and batch_timeout_s > 0 or None (got "
                             f"{batch_timeout_s})")
        self.url = url.rstrip("/")
        self.model = model
        self.max_retries = max_retries
        self.timeout_s, self.batch_timeout_s = timeout_s, batch_timeout_s
        self.describe = f"url:{self.url} {model}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx2.Client(
            base_url=self.url, headers=headers, timeout=httpx2.Timeout(timeout_s),
            limits=httpx2.Limits(max_connections=max_concurrency,
                                 max_keepalive_connections=max_concurrency))
        self._pool = concurrent.futures.ThreadPoolExecutor(max_concurrency,
                                                           thread_name_prefix="remote-judge")

    def check(self) -> None:
        """Raises UserError (naming the url and the cause) unless the server answers
        `GET /models` and lists this backend's model."""
        try:
            response = self._client.get("/models")
        except httpx2.HTTPError as e:
            raise UserError(f"judge server {self.url} cannot be reached: "
                            f"{type(e).__name__}: {e}") from None
        if response.status_code != 200:
            raise UserError(f"judge server {self.url}: GET /models answered HTTP "
                            f"{response.status_code}: {response.text[:300]}")
        try:
            served = [m["id"] for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"judge server {self.url}: GET /models did not answer an "
                            f"OpenAI model list: {response.text[:300]}") from None
        if self.model not in served:
            raise UserError(f"judge server {self.url} does not serve model {self.model!r}; it "
                            f"serves: {', '.join(served) or 'nothing'}")

    def close(self) -> None:
        """Closes the request threads (requests not yet sent are dropped) and the
        connections; calling it again does nothing."""
        self._pool.shutdown(cancel_futures=True)
        self._client.close()

    def generate(self, prompts: Sequence[JudgePrompt], max_tokens: int) -> list[str | RowError]:
        """Greedy completion of each prompt (stripped of surrounding whitespace)."""
        def text(choice: dict, prompt: JudgePrompt, deadline: float | None) -> str:
            chat = prompt.messages is not None
            return ((choice["message"]["content"] if chat else choice["text"]) or "").strip()

        return self._map(prompts, {"max_tokens": max_tokens, "temperature": 0}, text)

    def next_token_probs(self, prompts: Sequence[JudgePrompt],
                         candidates: Sequence[str]) -> list[np.ndarray | RowError]:
        """`[K]` f32 probabilities that the answer begins with each candidate word, read from
        the server's top log-probs along its greedy answer (`answer_prob`; 0 where the word is
        not among them). For a raw text prompt, a word that got nothing there but whose
        beginning is listed off the greedy answer ("un" for "unsafe") is followed up: P("un")
        times P("safe" | prompt + "un") from one more request. A RowError when the server
        returns no log-probs."""
        def probs(choice: dict, prompt: JudgePrompt,
                  deadline: float | None) -> np.ndarray | RowError:
            chat = prompt.messages is not None
            positions = _positions_of_chat(choice) if chat else _positions_of_completion(choice)
            if positions is None:
                return self._no_logprobs()
            found = np.array([answer_prob(positions, w) for w in candidates], np.float64)
            for i, word in enumerate(candidates):
                if found[i] == 0 and not chat:
                    p = self._continued(prompt.text, positions[0], word, spaced=True,
                                        deadline=deadline)
                    if isinstance(p, RowError):
                        return p
                    found[i] = p
            return found.astype(np.float32)

        def body(chat: bool) -> dict:
            return {"max_tokens": ANSWER_TOKENS, "temperature": 0, "logprobs": True,
                    "top_logprobs": TOP_LOGPROBS} if chat else \
                {"max_tokens": ANSWER_TOKENS, "temperature": 0, "logprobs": TOP_LOGPROBS}

        return self._map(prompts, body, probs)

    def _no_logprobs(self) -> RowError:
        return RowError(f"judge server {self.url} ({self.model}) returned no logprobs; use a "
                        "server that offers logprobs or a text-parsing format")

    def _continued(self, text: str, position: Position, word: str, *, spaced: bool,
                   deadline: float | None) -> float | RowError:
        """P(the answer after `text` is `word`) through the listed tokens at `position` that
        spell only a beginning of it, the greedy one aside (`answer_prob` follows that): each
        one's probability times that of the rest after it, from one more request each."""
        greedy, _, top = position
        lead = word[:len(word) - len(bare(word))] if spaced else ""
        rest = bare(word) if spaced else word
        total = 0.0
        for piece, p in word_starts(top, word, spaced, skip=bare(greedy) if spaced else greedy):
            prompt = text + lead + piece
            answer = self._post("/completions", {"model": self.model, "prompt": prompt,
                                                 "max_tokens": ANSWER_TOKENS, "temperature": 0,
                                                 "logprobs": TOP_LOGPROBS}, deadline)
            if isinstance(answer, RowError):
                return answer
            after = _positions_of_completion(answer["choices"][0])
            if after is None:
                return self._no_logprobs()
            remainder = rest[len(piece):]
            q = _word_from(after, remainder, spaced=False) or \
                self._continued(prompt, after[0], remainder, spaced=False, deadline=deadline)
            if isinstance(q, RowError):
                return q
            total += p * q
        return total

    def _map(self, prompts: Sequence[JudgePrompt], extra: dict | Callable[[bool], dict],
             read: Callable[[dict, JudgePrompt, float | None], Any]) -> list:
        """Sends every prompt (concurrently) and reads each first choice with `read(choice,
        prompt, deadline)`; failures of any kind, and rows unfinished at the batch deadline,
        become RowErrors."""
        deadline = None if self.batch_timeout_s is None else \
            time.monotonic() + self.batch_timeout_s

        def one(prompt: JudgePrompt) -> Any:
            chat = prompt.messages is not None
            fields = extra(chat) if callable(extra) else extra
            if chat:
                path, body = "/chat/completions", {"messages": [dict(m) for m in prompt.messages]}
            else:
                path, body = "/completions", {"prompt": prompt.text}
            answer = self._post(path, {"model": self.model, **body, **fields}, deadline)
            if isinstance(answer, RowError):
                return answer
            try:
                return read(answer["choices"][0], prompt, deadline)
            except (KeyError, IndexError, TypeError, ValueError) as e:
                return RowError(f"judge server {self.url}{path} ({self.model}): unexpected "
                                f"answer ({type(e).__name__}: {e}): {str(answer)[:300]}")

        def guarded(prompt: JudgePrompt) -> Any:
            try:
                return one(prompt)
            except Exception as e:  # noqa: BLE001 - one row's failure never ends the batch
                return RowError(f"judge server {self.url} ({self.model}): "
                                f"{type(e).__name__}: {e}")

        futures = [self._pool.submit(guarded, p) for p in prompts]
        wait_s = None if deadline is None else self.batch_timeout_s + DEADLINE_GRACE_S
        done, _ = concurrent.futures.wait(futures, timeout=wait_s)
        out = [f.result() if f in done else self._late(f) for f in futures]
        late = sum(isinstance(o, RowError) and o.message.startswith(LATE) for o in out)
        if late:
            log.warning("judge server %s: %d of %d rows unfinished at judge.batch_timeout_s=%s; "
                        "excluded", self.url, late, len(out), self.batch_timeout_s)
        return out

    def _late(self, future: concurrent.futures.Future) -> RowError:
        future.cancel()  # not started yet: never sent
        return RowError(f"{LATE} judge.batch_timeout_s={self.batch_timeout_s} "
                        f"(judge server {self.url}, {self.model})")

    def _post(self, path: str, body: dict, deadline: float | None) -> dict | RowError:
        """POSTs with retries and exponential backoff, none past `deadline` (time.monotonic;
        None: none); the decoded JSON or a RowError."""
        error, attempts = "", 0
        for attempt in range(self.max_retries + 1):
            left = self.timeout_s if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return RowError(f"{LATE} judge.batch_timeout_s={self.batch_timeout_s} "
                                f"(judge server {self.url}{path}, {self.model}; after "
                                f"{attempts} attempt(s): {error or 'none sent'})")
            attempts = attempt + 1
            try:
                response = self._client.post(path, json=body,
                                             timeout=min(self.timeout_s, left))
            except httpx2.HTTPError as e:
                error = f"{type(e).__name__}: {e}"
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:
                        error = f"invalid JSON: {response.text[:300]}"
                else:
                    error = f"HTTP {response.status_code}: {response.text[:300]}"
                    if response.status_code not in RETRY_STATUS:
                        break  # the request itself is wrong: sending it again cannot help
            if attempt < self.max_retries:
                wait = min(BACKOFF_S * 2 ** attempt, MAX_BACKOFF_S)
                time.sleep(wait if deadline is None else
                           max(0.0, min(wait, deadline - time.monotonic())))
        return RowError(f"judge server {self.url}{path} ({self.model}) failed after {attempts} "
                        f"attempt(s): {error}")
