"""What `twinbot serve` generates with: the ReplyEngine protocol, ModelEngine (the torch backend, batching.py),
and Generation, one reply produced in a worker thread and handed to the event loop piece by piece.

A Generation ends at the reply's natural end, at the request's first stop string (the stop string is not
part of the reply), when its time limit passes, or when its client goes away; `ended_by` says which of
the middle two it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Protocol

from twinbot.bot.stop_strings import StopMatcher
from twinbot.data.records import ChatTurn

if TYPE_CHECKING:
    from starlette.requests import Request

    from twinbot.bot.generate import GenerationSettings
    from twinbot.bot.loading import LoadedModel

log = logging.getLogger("twinbot.bot.serve")  # the server's log

DISCONNECT_POLL_S = 0.25
# Text is handed to the event loop at most once per FLUSH_S after the first piece: every hand-over wakes the
# loop and the client, whose work takes a core from llama.cpp's threads mid-decode on a small CPU (2-core
# Xeon, one q4_k_m stream, 15 server processes each: median 76.5 tok/s with it, 70.0 without).
FLUSH_S = 0.04

EndedBy = Literal["stop_string", "time_limit"]


@dataclass(frozen=True)
class SamplingRequest:
    """The generation settings of one request, before they become the inference API's GenerationSettings."""

    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int | None


def request_settings(sampling: SamplingRequest) -> GenerationSettings:
    """The request's sampling over the default settings (the repetition penalty is not an API option)."""
    from twinbot.bot.generate import GenerationSettings

    return replace(
        GenerationSettings(),
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_new_tokens=sampling.max_new_tokens,
        seed=sampling.seed,
    )


class ReplyEngine(Protocol):
    """What the server needs from a model. `ModelEngine` wraps a LoadedModel; tests pass fakes."""

    name: str
    system_prompt: str | None
    context_window: int

    def count_prompt_tokens(self, messages: Sequence[ChatTurn], max_new_tokens: int) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    def stream(
        self, messages: Sequence[ChatTurn], sampling: SamplingRequest, stop: threading.Event
    ) -> Iterator[str]: ...


class ModelEngine:
    """The torch backend's ReplyEngine: replies generated at the same time share forward passes (batching.py).

    `max_rows`: replies in one batch at most (the server's --max-concurrent is what usually limits them)."""

    def __init__(self, lm: LoadedModel, max_rows: int | None = None) -> None:
        from twinbot.bot.batching import BatchDecoder

        self.lm = lm
        self.name = lm.name
        self.system_prompt = lm.system_prompt
        self.context_window = lm.context_window
        self.decoder = BatchDecoder(lm) if max_rows is None else BatchDecoder(lm, max_rows)

    def count_prompt_tokens(self, messages: Sequence[ChatTurn], max_new_tokens: int) -> int:
        from twinbot.bot.generate import build_prompt_ids

        return len(build_prompt_ids(self.lm, messages, max_new_tokens))

    def count_tokens(self, text: str) -> int:
        return len(self.lm.tokenizer.encode(text, add_special_tokens=False)) if text else 0

    def settings(self, sampling: SamplingRequest) -> GenerationSettings:
        return request_settings(sampling)

    def stream(
        self, messages: Sequence[ChatTurn], sampling: SamplingRequest, stop: threading.Event
    ) -> Iterator[str]:
        return self.decoder.stream(messages, self.settings(sampling), stop)


_END = object()


@dataclass
class _Failure:
    error: BaseException


class Generation:
    """One reply generated in a worker thread; pieces are handed to the event loop through a queue.

    `on_finished` runs on the event loop once the thread has really stopped (the server releases the
    generation slot there), however the reply ended.
    """

    def __init__(
        self,
        engine: ReplyEngine,
        messages: Sequence[ChatTurn],
        sampling: SamplingRequest,
        *,
        stop_strings: Sequence[str],
        time_limit_s: float,
        on_finished: Callable[[], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.stop = threading.Event()
        self.pieces: asyncio.Queue[object] = asyncio.Queue()
        self.ended_by: EndedBy | None = None
        self._engine = engine
        self._messages = list(messages)
        self._sampling = sampling
        self._stop_strings = tuple(stop_strings)
        self._time_limit_s = time_limit_s
        self._time_limit: asyncio.TimerHandle | None = None
        self._on_finished = on_finished
        self._loop = loop
        self.thread = threading.Thread(target=self._run, name="twinbot-generation", daemon=True)

    def start(self) -> None:
        """Start the thread (on the event loop). The time limit runs from here, on the loop, so it holds
        even while nobody is reading the pieces."""
        self.thread.start()
        self._time_limit = self._loop.call_later(self._time_limit_s, self._out_of_time)

    def _out_of_time(self) -> None:
        log.info("generation stopped at its time limit (%gs)", self._time_limit_s)
        self.ended_by = "time_limit"
        self.stop.set()
        self.pieces.put_nowait(_END)

    def _put(self, item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is shutting down
            self._loop.call_soon_threadsafe(self.pieces.put_nowait, item)

    def _run(self) -> None:
        pieces: Iterator[str] | None = None
        held = ""  # text not handed over yet: at most one hand-over per FLUSH_S after the first
        handed = float("-inf")
        try:
            pieces = self._engine.stream(self._messages, self._sampling, self.stop)
            for piece in pieces:
                if self.stop.is_set():
                    break
                held += piece
                if held and time.monotonic() - handed >= FLUSH_S:
                    self._put(held)
                    held, handed = "", time.monotonic()
            if held and not self.stop.is_set():
                self._put(held)
            self._put(_END)
        except BaseException as exc:
            self._put(_Failure(exc))
        finally:
            close = getattr(pieces, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._on_finished)

    async def pieces_until_done(self, request: Request) -> AsyncIterator[str]:
        """The reply's text, cut before the first stop string; stops the generation when the reply ends
        there or at the time limit, when the client disconnects, or when the consumer goes away."""
        matcher = StopMatcher(self._stop_strings)
        next_check = time.monotonic() + DISCONNECT_POLL_S
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self.pieces.get(), timeout=DISCONNECT_POLL_S)
                except TimeoutError:
                    item = None
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + DISCONNECT_POLL_S
                    if await request.is_disconnected():
                        log.info("client disconnected; generation stopped")
                        return
                if item is None:
                    continue
                if isinstance(item, _Failure):
                    raise item.error
                if item is _END:
                    if held := matcher.flush():
                        yield held
                    return
                assert isinstance(item, str)
                if text := matcher.feed(item):
                    yield text
                if matcher.matched:
                    self.ended_by = "stop_string"
                    return
        finally:
            self.stop.set()
            if self._time_limit is not None:
                self._time_limit.cancel()
