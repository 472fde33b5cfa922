"""Files that appear whole or not at all: written beside their place under a hidden name, then renamed.

One home for the pattern that scan parts, run records, leases, checkpoints, crop sets, the ONNX cache and
the HTML report all need (POSIX rename within a directory is atomic)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def replacing(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends cleanly, it becomes ``path``.

    Readers see the old file or the new one, never half of one (a crash, a full disk, two writers at once:
    each writer has its own ``.NAME.<pid>.<random>.tmp``); the temporary file is removed when the block
    fails. ``durable`` fsyncs before the rename, so a power cut cannot leave a renamed but empty file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_atomic(path: str | os.PathLike, data: bytes, durable: bool = False) -> None:
    """``data`` as the whole content of ``path`` (see ``replacing``)."""
    with replacing(path, durable) as tmp:
        tmp.write_bytes(data)
