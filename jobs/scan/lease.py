"""One scan per output: a lease object ``DEST/_lease.json`` (owner, heartbeat, expiry).

A scan takes the lease before it touches DEST (its start-up clean-up deletes leftovers that a running
scan could still be committing), renews it from a background thread every ``ttl/4`` seconds and
deletes it at the end. A killed scan stops renewing, so its lease lapses after ``ttl`` seconds and the
next scan takes it over. Taking and renewing are compare-and-swap (``jobs/scan/cas.py``), so two scans
starting together cannot both win:

- local folders: under an ``flock`` on ``DEST/_lease.lock`` (read, check, atomic rename);
- S3: conditional PUTs (``If-None-Match: *`` to create, ``If-Match: <ETag>`` to replace);
- other stores: write, then read back (best effort).

Expiry compares the holder's ``expires_at`` with this machine's clock: keep clocks in sync (NTP).
The holder also keeps its own deadline on a monotonic clock: ``check`` refuses once the last successful
acquire/renew is older than ``ttl`` minus a safety margin, so a scan whose renewals keep failing
(throttling) or whose machine was frozen stops committing before another scan may take the output over.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from pydantic import BaseModel, ValidationError

from jobs.scan.cas import Contended, locked, read_tagged, write_if
from pipeline.errors import DeepfakeStreamError, one_line

log = logging.getLogger(__name__)

LEASE = "_lease.json"
# share of the ttl kept in hand: a commit started just before the deadline must end before the lease
# lapses, and the next scan's clock may run a little ahead of ours
SAFETY = 0.25


class LeaseHeld(DeepfakeStreamError):
    """Another scan holds the output's lease."""

    code = "output_busy"


class LeaseLost(DeepfakeStreamError):
    """This scan's lease was taken over, or may have lapsed (not renewed in time)."""

    code = "lease_lost"


class LeaseInfo(BaseModel):
    scan_id: str
    owner: str
    token: str
    acquired_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    ttl_s: float

    def expired(self, at: datetime) -> bool:
        return at >= self.expires_at


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _clock() -> float:
    """Seconds on a clock no one can set; CLOCK_BOOTTIME (Linux) also counts a suspended machine."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic()


class OutputLease:
    """The lease on one output for one scan. ``acquire`` → ``kept_alive()`` → ``release``."""

    def __init__(self, fs: Any, root: str, display: str, scan_id: str, ttl_s: float = 120.0):
        self.fs, self.root, self.display, self.scan_id, self.ttl_s = fs, root, display, scan_id, ttl_s
        self.path = f"{root}/{LEASE}"
        self.token = uuid.uuid4().hex
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.acquired_at: datetime | None = None
        self.lost: str | None = None
        self.lapsed: LeaseInfo | None = None  # the lease of a killed scan that ``acquire`` took over
        self.valid_until: float | None = None  # _clock() time until which the lease is surely ours
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewing = threading.Lock()  # the heartbeat and the main thread (a new id) renew: one at a time, or
        # on S3 (no flock) both read one ETag and the loser took its own scan's renewal for a takeover

    # ---- storage primitives (jobs/scan/cas.py)
    def _read(self) -> tuple[LeaseInfo | None, str | None, bool]:
        """(lease, its ETag on S3, whether an object exists at all)."""
        data, etag = read_tagged(self.fs, self.path)
        if data is None:
            return None, None, False
        try:
            return LeaseInfo.model_validate(json.loads(data)), etag, True
        except (ValidationError, ValueError) as exc:
            log.warning("ignoring unreadable lease %s: %s", self.path, one_line(exc, 200))
            return None, etag, True

    def _write(self, info: LeaseInfo, exists: bool, etag: str | None) -> None:
        """Raises ``Contended`` when the lease changed since it was read (another scan wrote it)."""
        write_if(self.fs, self.path, (info.model_dump_json(indent=2) + "\n").encode(), exists, etag)

    def _info(self, at: datetime) -> LeaseInfo:
        return LeaseInfo(scan_id=self.scan_id, owner=self.owner, token=self.token, acquired_at=self.acquired_at or at,
                         heartbeat_at=at, expires_at=at + timedelta(seconds=self.ttl_s), ttl_s=self.ttl_s)

    def _write_held(self, exists: bool, etag: str | None) -> None:
        """Write our lease, expiring ``ttl`` from now; once written, it is surely ours until ``valid_until``."""
        started = _clock()  # read before the expiry's time: the lease lapses no sooner than started + ttl
        self._write(self._info(_now()), exists, etag)
        self.valid_until = started + self.ttl_s * (1 - SAFETY)

    # ---- the protocol
    def acquire(self) -> None:
        """Take the lease, or raise ``LeaseHeld`` (one line, for the operator) when a live scan has it."""
        try:
            with locked(self.fs, self.root):
                current, etag, exists = self._read()
                at = _now()
                if current is not None and current.token != self.token and not current.expired(at):
                    raise LeaseHeld(
                        f"output {self.display} is in use by scan {current.scan_id} on {current.owner} "
                        f"(lease renewed {current.heartbeat_at:%Y-%m-%dT%H:%M:%SZ}, expires "
                        f"{current.expires_at:%Y-%m-%dT%H:%M:%SZ}); one scan per output at a time")
                if current is not None and current.token != self.token:
                    log.warning("taking over the lapsed lease of scan %s (%s, expired %s)",
                                current.scan_id, current.owner, current.expires_at.isoformat())
                    self.lapsed = current
                self.acquired_at = at
                self._write_held(exists, etag)
        except Contended as exc:
            raise LeaseHeld(f"output {self.display} is in use: another scan took its lease at the same moment") from exc

    def renew(self) -> None:
        """Push the expiry forward; sets ``lost`` when another scan has taken over."""
        with self._renewing, locked(self.fs, self.root):
            current, etag, exists = self._read()
            if current is None or current.token != self.token:
                holder = f"scan {current.scan_id} on {current.owner}" if current else "nobody (deleted)"
                self.lost = f"the lease on {self.display} is now held by {holder}"
                return
            try:
                self._write_held(exists, etag)
            except Contended:
                self.lost = f"the lease on {self.display} was taken over while renewing it"

    def check(self) -> None:
        """Raise ``LeaseLost`` when the output is no longer surely ours (before every write of a part): taken
        over, or not renewed within ``ttl`` minus the margin (renewals failing, a frozen machine)."""
        if self.lost:
            raise LeaseLost(f"stopped: {self.lost}; committed parts are kept")
        if self.valid_until is not None and _clock() >= self.valid_until:
            raise LeaseLost(f"stopped: the lease on {self.display} was not renewed for {self.ttl_s * (1 - SAFETY):.0f} s "
                            "(renewals failing, or this machine was paused) and may lapse; committed parts are kept")

    def _stop_beating(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def release(self) -> None:
        """Delete the lease if it is still ours (it lapses after ``ttl`` anyway)."""
        self._stop_beating()
        if self.acquired_at is None or self.lost:
            return
        try:
            with locked(self.fs, self.root):
                current, _etag, _exists = self._read()
                if current is not None and current.token == self.token:
                    self.fs.rm_file(self.path)
        except Exception as exc:  # noqa: BLE001 - it lapses anyway after ttl
            log.warning("could not delete the lease %s (it lapses in %.0f s): %s", self.path, self.ttl_s, exc)

    @contextmanager
    def kept_alive(self) -> Iterator["OutputLease"]:
        """Renew from a daemon thread while the body runs (``release`` is the caller's: the final run
        record is written while the lease is still held)."""
        def beat() -> None:
            while not self._stop.wait(max(0.2, self.ttl_s / 4)):
                try:
                    self.renew()
                except Exception as exc:  # noqa: BLE001 - a storage blip: try again next beat
                    log.warning("could not renew the lease on %s: %s", self.display, exc)
                if self.lost:
                    log.error("%s", self.lost)
                    return

        self._thread = threading.Thread(target=beat, name="dfs-lease", daemon=True)
        self._thread.start()
        try:
            yield self
        finally:
            self._stop_beating()


__all__ = ["OutputLease", "LeaseHeld", "LeaseLost", "LeaseInfo", "LEASE"]
