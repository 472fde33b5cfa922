"""Stopping a query that runs: Ctrl-C (SIGINT), SIGTERM and ``query --timeout`` interrupt DuckDB (``con.interrupt()``).

Python runs a signal handler in the main thread only, between two bytecodes: while that thread is inside DuckDB's
``execute`` the handler waits for the query to end (Ctrl-C did nothing for minutes). So the query runs in a worker
thread (``in_worker``) and the main thread waits for its rows, where the handler runs at once and interrupts DuckDB.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from typing import Any, Callable, Iterator, TypeVar

from jobs.scan.exit_codes import ExitCode

T = TypeVar("T")

GRACE_S = 5.0  # how long a stopped query's worker may take to end (a listing of the output is not interruptible)


class Stopped(Exception):
    """The query was stopped; ``status``: the exit status (130 Ctrl-C, 143 SIGTERM, as ``scan`` exits; 1 timed out)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class QueryStop:
    """While entered: SIGINT and SIGTERM (main thread only: signals reach no other) and, after ``timeout`` seconds,
    a timer stop the query: ``reason`` is set and the bound connection interrupted. The old handlers come back on exit."""

    def __init__(self, timeout: float | None = None):
        self.timeout = timeout
        self.reason: Stopped | None = None
        self.halted = False  # interrupted by ``halt``, or by ``stop``: an error of the query now is no error of its own
        self._con: Any = None
        self._lock = threading.RLock()  # a signal's handler may run in the main thread while it holds the lock (halt)
        self._timer: threading.Timer | None = None
        self._previous: dict[int, Any] = {}

    def bind(self, con: Any) -> None:
        """The connection to interrupt (None: no longer)."""
        with self._lock:
            self._con = con

    def stop(self, message: str, status: int) -> None:
        with self._lock:
            self.reason = self.reason or Stopped(message, status)
            self.halt()

    def halt(self) -> None:
        """Interrupt what still runs, without a reason: the reader has what it wanted (a table's first rows) or failed."""
        with self._lock:
            self.halted = True
            if self._con is not None:
                self._con.interrupt()

    def __enter__(self) -> "QueryStop":
        if threading.current_thread() is threading.main_thread():
            for signum, status in ((signal.SIGINT, ExitCode.INTERRUPTED), (signal.SIGTERM, ExitCode.TERMINATED)):
                said = "interrupted" if signum == signal.SIGINT else "interrupted by SIGTERM"
                self._previous[signum] = signal.signal(signum, lambda *_, m=said, s=int(status): self.stop(m, s))
        if self.timeout is not None:
            self._timer = threading.Timer(self.timeout, self.stop, (f"timed out after {self.timeout:g} s", 1))
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


_END = object()


def in_worker(produce: Callable[[], Iterator[T]], stop: QueryStop, grace_s: float = GRACE_S) -> Iterator[T]:
    """The items of ``produce()``, made in a worker thread and handed over as they come (at most two wait: a
    consumer that writes slowly holds the producer back, and memory with it). Raises ``stop.reason`` once the query
    is stopped, within ``grace_s`` even if the worker does not end; closing this generator interrupts the worker."""
    handover: queue.Queue = queue.Queue(maxsize=2)
    closed = threading.Event()

    def hand(entry: tuple) -> bool:
        while not closed.is_set():
            try:
                handover.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def work() -> None:
        items = produce()
        try:
            if all(hand((item, None)) for item in items):
                hand((_END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
            hand((_END, exc))
        finally:
            items.close()

    worker = threading.Thread(target=work, name="query", daemon=True)
    worker.start()
    deadline = None
    try:
        while True:
            try:  # a timed wait: the signal handler runs in it, and a stop is seen even if the worker hangs
                entry = handover.get(timeout=0.2)
            except queue.Empty:
                entry = None
            if stop.reason is not None:
                deadline = deadline or time.monotonic() + grace_s
                if entry is not None or time.monotonic() > deadline:
                    raise stop.reason
            elif entry is not None:
                item, exc = entry
                if exc is not None:
                    raise exc
                if item is _END:
                    return
                yield item
    finally:
        closed.set()
        stop.halt()
        waited = deadline is not None and time.monotonic() > deadline  # it had its grace: a listing that hangs
        worker.join(0 if waited else grace_s)
