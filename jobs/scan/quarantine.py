"""Self-healing output: Parquet parts that cannot be read are found and moved aside, not fatal.

A part that is not Parquet, truncated, or lacks the columns incremental scans key on would otherwise
make every later ``scan``, ``query`` and ``report`` fail. ``scan`` (which holds the output's lease)
moves such parts to ``DEST/_quarantine/<scan_id>/<table>/…`` and names them in its run record;
``query``/``report`` (read-only, maybe without write access) skip them with a warning.
Only a part's own bytes condemn it: a read that failed is tried again from the whole part in memory, so a
storage hiccup (timeout, throttling) never moves a good part.
"""

from __future__ import annotations

import logging
import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from pipeline.errors import one_line

log = logging.getLogger(__name__)
T = TypeVar("T")

QUARANTINE = "_quarantine"
# the columns readers key on: a part without them cannot join the table's views
REQUIRED = {"videos": ("scan_id", "uri", "fingerprint", "model_version", "label", "scanned_at"),
            "faces": ("scan_id", "uri")}


class StorageUnreadable(OSError):
    """The storage would not hand over a part's bytes (network, permission, throttling): the part itself
    may be fine, so nothing is moved; callers turn this into their own error."""


def _why(exc: BaseException) -> str:
    return one_line(exc, 200)


def confirmed_read(fs: Any, path: str, read: Callable[[Any], T], whole: bool = False) -> tuple[T | None, str | None]:
    """``(read(file), None)``, or ``(None, why)`` when the part's own bytes cannot be read as ``read`` asks
    (``whole``: ``read`` reads all of it, so even the first try fetches the part in one request).

    A failed read is not yet a bad part: an S3 timeout fails it too. So the part's bytes are fetched whole
    and read again from memory; if the fetch fails, ``StorageUnreadable`` is raised and nothing is judged.
    """
    import pyarrow as pa

    try:
        if whole:
            return read(pa.BufferReader(fs.cat_file(path))), None
        with fs.open(path, "rb") as handle:
            return read(handle), None
    except Exception:  # noqa: BLE001 - storage or data: told apart below
        pass
    try:
        data = fs.cat_file(path)
    except Exception as exc:  # noqa: BLE001 - any storage failure: the part is not judged
        raise StorageUnreadable(f"cannot read {path}: {_why(exc)}") from exc
    try:
        return read(pa.BufferReader(data)), None
    except Exception as exc:  # noqa: BLE001 - the bytes are in hand: the part itself is bad
        return None, _why(exc)


def part_problem(fs: Any, path: str, table: str, whole: bool = False) -> str | None:
    """Why ``path`` is not a usable part of ``table`` (None when it is): reads the footer only, or with ``whole``
    every column's data (a part whose footer reads but whose data does not breaks every read of that column); the
    whole part is fetched again after a failed read, to tell a bad part from a storage hiccup."""
    import pyarrow.parquet as pq

    def read(f) -> list[str]:
        # one thread: Arrow's own would drop the last reference to the part's bytes, a Python object, after the
        # call returned, and one doing so as the interpreter exits aborts the process
        return pq.ParquetFile(f).read(use_threads=False).schema.names if whole else pq.ParquetFile(f).schema_arrow.names

    names, why = confirmed_read(fs, path, read, whole)
    if why:
        return why
    missing = [c for c in REQUIRED[table] if c not in names]
    return f"missing columns {', '.join(missing)}" if missing else None


def unreadable_parts(fs: Any, paths: list[str], table: str, whole: bool = False) -> dict[str, str]:
    """path → reason, for the parts of ``table`` that cannot be read (``part_problem``, concurrently); a storage
    failure (``StorageUnreadable``) stops the search."""
    if not paths:
        return {}
    pool = ThreadPoolExecutor(max_workers=min(4 if whole else 16, len(paths)))  # whole: a part in memory per thread
    try:
        problems = list(pool.map(lambda p: part_problem(fs, p, table, whole), paths))
    finally:
        pool.shutdown(cancel_futures=True)
    return {path: why for path, why in zip(paths, problems) if why}


def move_aside(fs: Any, root: str, path: str, scan_id: str, local: bool) -> str:
    """Move ``path`` (under ``root``) to ``root/_quarantine/<scan_id>/<same relative path>``."""
    relative = path[len(root):].lstrip("/")
    target = posixpath.join(root, QUARANTINE, scan_id, relative)
    if local:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(path, target)
    else:
        fs.mv(path, target)
    return target


__all__ = ["QUARANTINE", "StorageUnreadable", "confirmed_read", "part_problem", "unreadable_parts", "move_aside"]
