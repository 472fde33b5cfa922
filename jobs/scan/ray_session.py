"""The scan's Ray: the cluster it joins (--ray-address, RAY_ADDRESS, with this machine's Ray token) or the local
instance it starts (127.0.0.1 only), started without losing the scan's SIGTERM handler."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any, Iterator

from jobs.scan.config import ScanConfig
from jobs.scan.errors import ScanError
from pipeline.local_ray import advice, start_local_ray
from pipeline.logsafe import redact_uri

log = logging.getLogger(__name__)


def ray_address(options: ScanConfig) -> str | None:
    """The cluster to join, None for a local instance of the scan's own."""
    return options.ray_address or os.environ.get("RAY_ADDRESS")


def ensure_ray(options: ScanConfig) -> bool:
    """Connect to RAY_ADDRESS / --ray-address, or start a local instance of our own, on 127.0.0.1 only
    (``pipeline/local_ray.py``). True when we started it.

    ``ray.init`` puts in its own SIGTERM handler (``sys.exit(15)``) while it starts, about 10 s, and leaves it
    there: the process's own handler (the scan's graceful stop, ``jobs/scan/stop.py``) is put back however
    ``ray.init`` ends, and a SIGTERM that Ray's handler caught meanwhile is handed to it, so the scan stops
    (``Terminated``: exit 143, a ``terminated`` record) instead of dying with status 15. (Blocking SIGTERM
    for the while instead would leave it blocked in every process Ray starts: they inherit the mask.)
    """
    import ray

    if ray.is_initialized():
        return False
    address = ray_address(options)
    common = {"log_to_driver": options.verbose, "logging_level": logging.INFO if options.verbose else logging.WARNING}
    ours = signal.getsignal(signal.SIGTERM)
    try:
        try:
            if address:
                _with_token(address)
                ray.init(address=address, **common)
            else:
                start_local_ray(num_cpus=options.num_cpus, num_gpus=options.num_gpus, **common)
        finally:
            _put_back(ours)
    except SystemExit as exc:  # Ray's handler ran: SIGTERM during start-up (ours is back: the finally above)
        if exc.code != signal.SIGTERM or not callable(ours):
            raise
        try:
            ours(signal.SIGTERM, None)  # the scan's stop: raises Terminated, starts its watchdog
        finally:
            _shut_down(ray)  # whatever start-up had launched
        raise
    except Exception as exc:  # noqa: BLE001
        said, mode = f"{type(exc).__name__}: {exc}", os.environ.get("RAY_AUTH_MODE")
        if address and any("InvalidAuthToken" in str(e) or type(e).__name__ == "AuthenticationError" for e in error_chain(exc)):
            said = (f"authentication failed ({f'RAY_AUTH_MODE={mode}' if mode else 'no Ray token here'}): the cluster "
                    "has Ray's token authentication on; give the scan its token (RAY_AUTH_TOKEN, a file named by "
                    "RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token) with RAY_AUTH_MODE=token or unset")
        elif not address:
            said += advice(exc)
        raise ScanError(f"cannot start or reach Ray ({redact_uri(address or 'local')}): {said}") from exc
    return True


def _with_token(address: str) -> None:
    """Join ``address`` with the Ray token this machine has (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)
    when RAY_AUTH_MODE is unset. Ray 2.60 does so only for a cluster it finds itself (``auto``), while ``ray start``
    turns token authentication on wherever it finds a token (any local scan or serve makes ~/.ray/auth_token):
    without it, joining fails after ~20 s of retries. The token goes to the cluster named: RAY_AUTH_MODE=disabled
    keeps it here."""
    try:  # Ray's own rule for "auto", in a private module of 2.60: revisit when upgrading Ray
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    except ImportError:
        return
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return
    said = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = said.level
    said.setLevel(logging.ERROR)  # its warning speaks of starting a cluster, not of joining one
    try:
        if maybe_enable_token_auth_if_token_available(warn_if_disabled=False):
            log.info("joining the Ray cluster at %s with this machine's Ray token (RAY_AUTH_MODE=token; set it to "
                     "disabled to join without)", redact_uri(address))
    finally:
        said.setLevel(level)


def error_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during, once each."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        yield exc
        exc = exc.__cause__ or exc.__context__


def _put_back(handler: Any) -> None:
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _shut_down(ray: Any) -> None:
    try:
        ray.shutdown()
    except Exception as exc:  # noqa: BLE001 - stopping anyway; the processes die with the driver
        log.warning("could not shut down Ray: %s", exc)
