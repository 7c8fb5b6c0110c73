"""Token ids to text the way OpenAI-compatible servers return it, in time linear in the
number of tokens.

`TextStream` decodes a sample as its tokens arrive: each new token is decoded with a window of
the tokens before it (the text of window + token minus the text of the window), so a
SentencePiece "▁" or byte-level "Ġ" becomes the space it stands for, a character split over
several byte tokens waits until it is complete, and every step costs a bounded decode. Stop
strings are searched only in the text each token adds (plus the stop length before it), and
text that could still be the start of a stop string is held back from streaming.

`token_texts` gives the text each token (a sampled one or a top-logprob alternative) adds in
its context, so a remote judge sees `" Yes"` where the model wrote "▁Yes".
"""

from __future__ import annotations

from typing import Sequence

from ssp_jax.models.tokenizer import Tokenizer

CONTEXT_TOKENS = 4  # tokens of context decoded before a token to get its text
_INCOMPLETE = "\ufffd"  # what a decoder writes for a partial UTF-8 character


def _suffix(tokenizer: Tokenizer, context: Sequence[int], before: str, token: int) -> str:
    """The text `token` adds after `context`, whose text is `before` (special tokens kept as
    text)."""
    after = tokenizer.decode([*context, token], skip_special_tokens=False)
    if after.startswith(before):
        return after[len(before):]
    common = 0
    while common < min(len(before), len(after)) and before[common] == after[common]:
        common += 1
    return after[common:]


def token_texts(tokenizer: Tokenizer, context: Sequence[int], tokens: Sequence[int],
                alternatives: Sequence[Sequence[int]] | None = None
                ) -> tuple[list[str], list[list[str]]]:
    """Texts of generated `tokens` and of each position's `alternatives` (top-logprob ids),
    each decoded after up to CONTEXT_TOKENS tokens before it (the prompt's tail first); the
    window's own text is decoded once per position."""
    history = list(context[-CONTEXT_TOKENS:])
    texts, alt_texts = [], []
    for j, token in enumerate(tokens):
        window = history[-CONTEXT_TOKENS:]
        before = tokenizer.decode(window, skip_special_tokens=False) if window else ""
        texts.append(_suffix(tokenizer, window, before, int(token)))
        if alternatives is not None:
            alt_texts.append([_suffix(tokenizer, window, before, int(t))
                              for t in alternatives[j]])
        history.append(int(token))
    return texts, alt_texts


class TextStream:
    """One sample's text, decoded token by token and cut at the first stop string.

    `text` is the text so far (cut at a stop), `num_tokens` the tokens that made it (with the
    token that completed a stop string), `stopped` whether a stop string matched.
    `take(final)` returns the text not yet returned, holding back a possible stop prefix
    unless `final`."""

    def __init__(self, tokenizer: Tokenizer, stops: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self._ids: list[int] = []
        self._prefix_at = 0  # window start: tokens before it are already text
        self._read_at = 0  # tokens before it have been turned into text
        self.text = ""
        self.num_tokens = 0
        self.stopped = False
        self._taken = 0

    def push(self, tokens: Sequence[int], stop_ids: Sequence[int] = ()) -> None:
        """Adds generated tokens (a stop id is counted but adds no text)."""
        for token in tokens:
            if self.stopped:
                return
            self.num_tokens += 1
            if int(token) in stop_ids:
                continue
            self._ids.append(int(token))
            self._advance()

    def _advance(self) -> None:
        window = self._ids[self._prefix_at:self._read_at]
        before = self.tokenizer.decode(window) if window else ""
        after = self.tokenizer.decode(self._ids[self._prefix_at:])
        if len(after) <= len(before) or after.endswith(_INCOMPLETE):
            return  # nothing printable yet (a partial character): wait for the next token
        start = len(self.text)
        self.text += after[len(before):]
        self._prefix_at, self._read_at = self._read_at, len(self._ids)
        self._find_stop(start)

    def _find_stop(self, start: int) -> None:
        """Cuts `text` at the first stop string that ends at or after `start`."""
        if not self.stops:
            return
        lo = max(0, start - self._hold)
        hits = [i for i in (self.text.find(s, lo) for s in self.stops) if i >= 0]
        if hits:
            self.text, self.stopped = self.text[:min(hits)], True

    def take(self, final: bool = False) -> str:
        """Text not returned before; without `final`, the last characters that could begin a
        stop string stay back."""
        end = len(self.text) if final or self.stopped else max(self._taken,
                                                               len(self.text) - self._hold)
        out, self._taken = self.text[self._taken:end], end
        return out
