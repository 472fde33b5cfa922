"""Admission control for ``POST /v1/score``, per ingress replica: ``max_inflight`` requests run the graph, up
to ``max_queued`` more are being received or wait for a turn, and anything past that is refused at once
(503 + Retry-After) before its body is read; so is every request once the replica drains (shutting down), and
what is still admitted when the drain ends is cut off (``cut_off``): answered 503 too, its work cancelled.

Ray Serve's own ``max_queued_requests`` is not used for this: the proxy answers its rejections in plain
text, it would count ``/v1/health`` in the same queue, and a per-stage queue does not bound the whole chain.
Runs on the replica's one event loop, so plain counters need no lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Overloaded(Exception):
    """Every place is taken; the caller should retry later."""


class Draining(Overloaded):
    """The server is shutting down: it answers what it admitted and takes nothing new; retry (on another server)."""


class Admission:
    def __init__(self, max_inflight: int, max_queued: int):
        self.capacity = max_inflight + max_queued
        self.admitted = 0  # received or waiting or running
        self.draining = False
        self.cut = False  # the drain has ended: a request cancelled from now on is answered 503, not dropped
        self._holders: set[asyncio.Task] = set()  # the admitted requests' tasks, for cut_off
        self._turns = asyncio.Semaphore(max_inflight)  # binds to the loop on first use

    def drain(self) -> None:
        """Admit nothing more (``serve.app.drain`` waits for the admitted to be answered, then cuts off the rest)."""
        self.draining = True

    async def cut_off(self, wait_s: float) -> int:
        """The drain is over: cancel every admitted request's task (``place`` turns that into ``Draining``: a 503,
        and the cancellation reaches its stage calls) and wait up to ``wait_s`` for them to be answered, so the
        answers are out before Serve goes down. Returns how many were cut off."""
        self.draining = self.cut = True
        holders = set(self._holders)
        for task in holders:
            task.cancel()
        if holders:
            await asyncio.wait(holders, timeout=wait_s)
        return len(holders)

    @asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        """Hold one of ``max_inflight + max_queued`` places for the whole request, or raise Overloaded."""
        if self.draining:
            raise Draining("the server is shutting down")
        if self.admitted >= self.capacity:
            raise Overloaded(f"{self.admitted} requests admitted, the limit is {self.capacity}")
        self.admitted += 1
        task = asyncio.current_task()
        self._holders.add(task)
        try:
            yield
        except asyncio.CancelledError:
            if not self.cut:  # the client went away
                raise
            task.uncancel()  # cut off at the drain's end: answered, not dropped
            raise Draining("the server shut down before the request was answered") from None
        finally:
            self._holders.discard(task)
            self.admitted -= 1

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait (inside the request's deadline) for one of the ``max_inflight`` turns to run the graph."""
        async with self._turns:
            yield

    def stats(self) -> dict[str, int]:
        return {"admitted": self.admitted, "capacity": self.capacity, "draining": int(self.draining)}
