"""Server-sent events for `fincocktail serve` (`stream: true`), in OpenAI's chunk format.

Text is streamed as the greedy decoder produces tokens, but a piece is sent only once it can no
longer change: text that could be the start of a stop string, or a trailing incomplete UTF-8
character, is held back until the next token decides. So the concatenated deltas equal the
non-streamed answer exactly.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

from fincocktail.evaluation.generate import Generation, cut_at_stop, generate_greedy


class DeltaText:
    """Token ids in, text deltas out; `finish(final_text)` gives what is left to send."""

    def __init__(self, tokenizer: Any, stop: Sequence[str]):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.sent = 0  # characters already sent

    def _held_back(self, text: str) -> int:
        hold = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        if text.endswith("\ufffd"):  # an incomplete multi-byte character
            hold = max(hold, len(text) - len(text.rstrip("\ufffd")))
        return hold

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut, hit = cut_at_stop(text, self.stop)
        safe = len(cut) if hit else len(text) - self._held_back(text)
        if safe <= self.sent:
            return ""
        delta, self.sent = text[self.sent : safe], safe
        return delta

    def finish(self, final_text: str) -> str:
        rest = final_text[self.sent :]
        self.sent = len(final_text)
        return rest


def generate_streamed(
    scorer: Any, tokenizer: Any, ids: list[int], max_tokens: int, stop: Sequence[str], on_text: Callable[[str], None],
    should_stop: Callable[[], bool] | None = None,
) -> tuple[Generation, list[int]]:
    """Greedy decoding of one prompt, calling `on_text` with each settled piece; also returns the token ids.

    A cancelled generation (`should_stop`: the client has gone) sends nothing more.
    """
    delta = DeltaText(tokenizer, stop)
    produced: list[int] = []

    def on_token(_row: int, tok: int) -> None:
        produced.append(tok)
        piece = delta.push(tok)
        if piece:
            on_text(piece)

    gen = generate_greedy(scorer, tokenizer, [ids], max_tokens, tuple(stop), batch_size=1, should_stop=should_stop, on_token=on_token)[0]
    rest = delta.finish(gen.text)
    if rest and gen.finish_reason != "cancelled":
        on_text(rest)
    return gen, produced


class EventStream:
    """Writes `data: {json}` events over HTTP/1.1 chunked transfer encoding, then `data: [DONE]`.

    The 200 and its headers go out with the first event, so an error before it (a busy model, a
    prompt too long) can still be answered with a plain JSON error and its status.
    """

    def __init__(self, handler: Any):
        self.handler = handler
        self.started = False

    def _start(self) -> None:
        self.started = True
        self.handler.send_response(200)
        self.handler.send_header("Content-Type", "text/event-stream")
        self.handler.send_header("Cache-Control", "no-cache")
        self.handler.send_header("Transfer-Encoding", "chunked")
        self.handler.end_headers()

    def _chunk(self, data: bytes) -> None:
        if not self.started:
            self._start()
        self.handler.wfile.write(f"{len(data):X}\r\n".encode("ascii") + data + b"\r\n")
        self.handler.wfile.flush()

    def send(self, obj: dict[str, Any]) -> None:
        self._chunk(f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode("utf-8"))

    def close(self) -> None:
        self._chunk(b"data: [DONE]\n\n")
        self.handler.wfile.write(b"0\r\n\r\n")
        self.handler.wfile.flush()
