"""Self-healing output: Parquet parts that cannot be read are found and moved aside, not fatal.

A part that is not Parquet, truncated, or lacks the columns incremental scans key on would otherwise
make every later ``scan``, ``query`` and ``report`` fail. ``scan`` (which holds the output's lease)
moves such parts to ``DEST/_quarantine/<scan_id>/<table>/…`` and names them in its run record;
``query``/``report`` (read-only, maybe without write access) skip them with a warning.
"""

from __future__ import annotations

import logging
import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

QUARANTINE = "_quarantine"
# the columns readers key on: a part without them cannot join the table's views
REQUIRED = {"videos": ("scan_id", "uri", "fingerprint", "model_version", "label", "scanned_at"),
            "faces": ("scan_id", "uri")}


def part_problem(fs: Any, path: str, table: str) -> str | None:
    """Why ``path`` is not a usable part of ``table`` (None when it is): reads the footer only."""
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as handle:
            names = pq.ParquetFile(handle).schema_arrow.names
    except Exception as exc:  # noqa: BLE001 - any reason it cannot be read is the same verdict
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'}"
    missing = [c for c in REQUIRED[table] if c not in names]
    return f"missing columns {', '.join(missing)}" if missing else None


def unreadable_parts(fs: Any, paths: list[str], table: str) -> dict[str, str]:
    """path → reason, for the parts of ``table`` that cannot be read (footers checked concurrently)."""
    if not paths:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(paths))) as pool:
        problems = pool.map(lambda p: part_problem(fs, p, table), paths)
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


__all__ = ["QUARANTINE", "part_problem", "unreadable_parts", "move_aside"]
