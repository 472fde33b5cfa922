"""Graceful stop on SIGTERM (what Kubernetes, `ray job stop` and most schedulers send first).

The first SIGTERM raises ``Terminated`` in the main thread, a ``KeyboardInterrupt`` so the scan takes
the Ctrl-C path: finished rows are committed, the run record written, the lease released. A SIGTERM
that lands while a part is being committed is held until that commit is done, so a part is never
cut in half by us. A watchdog ends the process (status 143) ``grace_s`` after the signal if the
clean-up hangs (a stuck storage call, a Ray shutdown that does not return), so the stop is bounded.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from jobs.scan.exit_codes import ExitCode

log = logging.getLogger(__name__)

EXIT_TERMINATED = int(ExitCode.TERMINATED)  # the process's own status when a second SIGTERM cannot wait


class Terminated(KeyboardInterrupt):
    """The scan received SIGTERM."""


class GracefulStop:
    def __init__(self, grace_s: float = 25.0):
        self.grace_s = grace_s
        self.requested = False
        self._depth = 0
        self._pending = False
        self._previous: Any = None
        self._installed = False
        self._watchdog: threading.Timer | None = None

    def install(self) -> None:
        """Install the handler (again: a later call keeps the first one's saved handler for ``restore``)."""
        if threading.current_thread() is not threading.main_thread():
            return  # signals are only delivered to the main thread; an embedding app handles them
        previous = signal.signal(signal.SIGTERM, self._handle)
        if not self._installed:
            self._previous, self._installed = previous, True

    def restore(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            return  # already stopping; the watchdog bounds how long
        self.requested = True
        log.warning("SIGTERM: committing finished rows, then stopping (at most %.0f s)", self.grace_s)
        self._watchdog = threading.Timer(self.grace_s, self._expire)
        self._watchdog.daemon = True
        self._watchdog.start()
        if self._depth:
            self._pending = True
            return
        raise Terminated("SIGTERM")

    def _expire(self) -> None:
        log.error("SIGTERM: clean-up took longer than %.0f s; exiting now", self.grace_s)
        logging.shutdown()
        os._exit(EXIT_TERMINATED)

    @contextmanager
    def critical(self, then_stop: bool = True) -> Iterator[None]:
        """A section SIGTERM must not cut (a commit); the stop takes effect right after it, unless
        ``then_stop`` is false (the scan's very last step: it is ending anyway)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0 and self._pending and then_stop:
            self._pending = False
            raise Terminated("SIGTERM")


__all__ = ["GracefulStop", "Terminated", "EXIT_TERMINATED"]
