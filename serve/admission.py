"""Admission control for ``POST /v1/score``, per ingress replica: ``max_inflight`` requests run the graph, up
to ``max_queued`` more are being received or wait for a turn, and anything past that is refused at once
(503 + Retry-After) before its body is read; so is every request once the replica drains (shutting down).

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
        self._turns = asyncio.Semaphore(max_inflight)  # binds to the loop on first use

    def drain(self) -> None:
        """Admit nothing more (``serve.app.stop`` waits for the admitted to be answered before Serve goes down)."""
        self.draining = True

    @asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        """Hold one of ``max_inflight + max_queued`` places for the whole request, or raise Overloaded."""
        if self.draining:
            raise Draining("the server is shutting down")
        if self.admitted >= self.capacity:
            raise Overloaded(f"{self.admitted} requests admitted, the limit is {self.capacity}")
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait (inside the request's deadline) for one of the ``max_inflight`` turns to run the graph."""
        async with self._turns:
            yield

    def stats(self) -> dict[str, int]:
        return {"admitted": self.admitted, "capacity": self.capacity, "draining": int(self.draining)}
