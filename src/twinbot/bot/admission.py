"""Admission for `twinbot serve`: bounded concurrency with a bounded, first-come-first-served queue.

A request first `reserve()`s a place, a cheap check made before any tokenizer work, so a request the
server is too busy for is refused (429) before it costs anything. It then waits for a generation slot
with `take_slot()`, at most a given number of seconds (503 after that). The generation thread gives the
slot back with `release()` when it has really finished, so a client that disconnects does not free its
slot while its generation is still winding down.

All methods run on the event loop (worker threads call `release` through `call_soon_threadsafe`), so the
counters need no lock.
"""

from __future__ import annotations

import asyncio
from collections import deque

from twinbot.bot.openai_api import ApiError
from twinbot.errors import TwinbotError

RETRY_AFTER_S = 2  # the Retry-After of 429 and 503 answers; the official clients wait that long


class Admission:
    """At most `max_concurrent` generations run and at most `max_queue` more requests wait (or are being
    prepared); anything beyond that is refused."""

    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        if max_concurrent < 1 or max_queue < 0:
            raise TwinbotError("--max-concurrent must be at least 1 and --max-queue at least 0")
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.running = 0
        self.admitted = 0  # requests holding a reservation: running, waiting for a slot, or being prepared
        # Invariant: while anyone waits, every slot is taken (a released slot goes straight to the first).
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return self.admitted - self.running

    def reserve(self) -> None:
        """Hold a place for one request, or raise ApiError(429) when all slots and queue places are taken."""
        if self.admitted >= self.max_concurrent + self.max_queue:
            raise ApiError(
                429,
                "the server is busy (all generation slots and queue places are taken); retry shortly",
                error_type="rate_limit_exceeded",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.admitted += 1

    def cancel(self) -> None:
        """Give back a reservation that did not get (or no longer holds) a slot."""
        self.admitted -= 1

    async def take_slot(self, timeout_s: float) -> None:
        """Wait for a generation slot, holding a reservation. After `timeout_s` raises ApiError(503); on any
        exception the reservation is still held and the caller must `cancel()` it."""
        if self.running < self.max_concurrent and not self._waiters:
            self.running += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._pass_slot_on()  # the slot arrived just as this request gave up
            elif waiter in self._waiters:  # a release may already have dropped it
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise ApiError(
                    503,
                    f"the server is busy: no generation slot became free within {timeout_s:g} seconds; "
                    "retry later",
                    error_type="server_error",
                    code="queue_timeout",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                ) from None
            raise

    def release(self) -> None:
        """A generation has finished: its slot goes to the first waiter, and its reservation ends."""
        self._pass_slot_on()
        self.admitted -= 1

    def _pass_slot_on(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # `running` stays: the slot changes hands
                return
        self.running -= 1
