"""Compare-and-swap on DEST: replace a small object only if it is still what was read. The lease
(``jobs/scan/lease.py``) and the closing of a killed scan's run record (``jobs/scan/records.py``) use it.

- local folders: read, check and write under an ``flock`` on ``DEST/_lease.lock`` (``locked``); every writer of
  such an object takes it too;
- S3: conditional PUTs (``If-None-Match: *`` to create, ``If-Match: <ETag>`` to replace);
- other stores: write, then read back (best effort: a write between the read and ours goes unseen).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

from jobs.scan.listing import is_local, protocol
from pipeline.atomic import write_atomic

LOCK = "_lease.lock"


class Contended(Exception):
    """A conditional write lost a race: the object changed since it was read."""


def kind(fs: Any) -> str:
    return "local" if is_local(fs) else "s3" if protocol(fs) in ("s3", "s3a") else "other"


@contextmanager
def locked(fs: Any, root: str) -> Iterator[None]:
    """Hold DEST's lock (local folders; elsewhere the writes themselves are conditional). Not reentrant: flock
    locks an open file, so a second ``locked`` in the same process waits for the first."""
    if kind(fs) != "local":
        yield
        return
    import fcntl

    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, LOCK), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_tagged(fs: Any, path: str) -> tuple[bytes | None, str | None]:
    """(the object's bytes, None when there is none; its ETag on S3). The ETag is read first: a write between the
    two reads changes it, so a conditional write on it fails rather than replace what was not read."""
    fs.invalidate_cache(path)
    try:
        etag = str(fs.info(path).get("ETag") or "") or None if kind(fs) == "s3" else None
        return fs.cat_file(path), etag
    except FileNotFoundError:
        return None, None


def _refused_condition(exc: OSError) -> bool:
    """S3 refused a conditional write. s3fs raises FileExistsError for If-None-Match; for If-Match an OSError
    whose cause is botocore's ClientError, read by its code (never the message, which s3fs may reword)."""
    if isinstance(exc, FileExistsError):
        return True
    error = (getattr(exc.__cause__, "response", None) or {}).get("Error", {})
    # ConditionalRequestConflict (409): AWS's answer when two conditional writes race on one key
    return error.get("Code") in ("PreconditionFailed", "ConditionalRequestConflict")


def write_if(fs: Any, path: str, data: bytes, exists: bool, etag: str | None) -> str | None:
    """Write ``data`` to ``path`` unless it changed since ``read_tagged`` (``exists``, ``etag``); raise ``Contended``
    when it did. Local folders: call it under ``locked``. Returns the new ETag on S3."""
    store = kind(fs)
    if store == "local":
        write_atomic(path, data, durable=True)
        return None
    if store == "s3":
        condition = {"IfMatch": etag} if exists and etag else {"mode": "create"}
        try:
            out = fs.pipe_file(path, data, **condition)
        except OSError as exc:
            if _refused_condition(exc):
                raise Contended(str(exc)) from exc
            raise
        return str((out or {}).get("ETag") or "") or None
    fs.pipe_file(path, data)
    back, _etag = read_tagged(fs, path)
    if back != data:
        raise Contended("another scan wrote it at the same time")
    return None


__all__ = ["Contended", "kind", "locked", "read_tagged", "write_if", "LOCK"]
