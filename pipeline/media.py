"""Opening media by path, fsspec URI or bytes, and telling its type from the bytes themselves."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import re
import stat
from typing import TYPE_CHECKING, Callable, Literal

import fsspec
from fsspec.asyn import AsyncFileSystem
from fsspec.implementations.local import LocalFileSystem

from pipeline.errors import (
    AccessDeniedError,
    DeadlineExceededError,
    EmptyMediaError,
    MediaError,
    MediaNotFoundError,
    MediaTooLargeError,
    StorageError,
    UnsupportedMediaError,
    out_of_memory,
)
from pipeline.logsafe import redact_uri, redact_uris

if TYPE_CHECKING:
    from pipeline.work import Deadline

MediaKind = Literal["image", "video"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".avif")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts")
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _normalize_escape(match: re.Match) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def normalize_uri(uri: str) -> str:
    """RFC 3986 normalisation of a URI with a scheme: lower-case scheme, percent-escapes of unreserved
    characters decoded (``%2e%2e`` is ``..``), the others upper-cased (``%2f`` → ``%2F``, still encoded).

    Idempotent, so every layer may call it and checks see exactly what fsspec will read. Plain paths
    (no scheme) are returned unchanged: a local file name may contain a literal ``%``.
    """
    match = _SCHEME.match(uri)
    if not match:
        return uri
    return match.group(1).lower() + "://" + _ESCAPE.sub(_normalize_escape, uri[match.end():])


def sniff_media(head: bytes) -> tuple[MediaKind, str]:
    """Return (kind, mime type) from the first bytes of a file; the name is never trusted."""
    if not head:
        raise EmptyMediaError("file is empty (0 bytes)")
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "image/webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand.startswith(b"qt"):
            return "video", "video/quicktime"
        still = _heif_still(head, brand)
        if still:
            return "image", still
        return "video", "video/mp4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "video", "video/quicktime"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", "video/x-msvideo"
    if head.startswith(b"\x00\x00\x01\xba") or head.startswith(b"\x00\x00\x01\xb3"):
        return "video", "video/mpeg"
    if head[0] == 0x47 and len(head) > 188 and head[188] == 0x47:
        return "video", "video/mp2t"
    # M2TS/AVCHD (camcorders' .mts, Blu-ray's .m2ts): 192-byte packets, a 4-byte timestamp before each TS packet.
    # The same mime as MPEG-TS: decode.py then reads it with PyAV (decord cannot read either from memory).
    if len(head) > 196 and head[4] == 0x47 and head[196] == 0x47:
        return "video", "video/mp2t"
    raise UnsupportedMediaError("not a supported image or video (unrecognised file signature)")


_AVIF_BRANDS = (b"avif", b"avis")
# HEIF stills (iPhone photos: heic) and their sequences; mif1/msf1 are the generic HEIF brands
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"mif2")


def _heif_still(head: bytes, brand: bytes) -> str | None:
    """'image/avif' or 'image/heic' for an HEIF-family ftyp box, else None (an MP4).

    A generic mif1 file is AVIF when AV1 is among its compatible brands, so those are read too.
    """
    size = int.from_bytes(head[:4], "big")
    compatible = {head[i:i + 4] for i in range(16, min(size, len(head)) - 3, 4)}
    if brand in _AVIF_BRANDS or (brand in _HEIF_BRANDS and compatible & set(_AVIF_BRANDS)):
        return "image/avif"
    if brand in _HEIF_BRANDS:
        return "image/heic"
    return None


def _filesystem(uri: str, storage_options: dict):
    """(file system, path) for ``uri``. A plain path (no ``://``) is a local file, read as named: fsspec's URL
    parsing would take ``x::y.jpg`` for a chained URL (and read ``x``) and ``data:...`` for inline data.
    LocalFileSystem still expands ``~``, resolves relative paths and drops a ``file:`` prefix, as before."""
    if "://" not in uri:
        fs = fsspec.filesystem("file", **storage_options)
        return fs, fs._strip_protocol(uri)
    return fsspec.core.url_to_fs(uri, **storage_options)


def _missing(exc: FileNotFoundError) -> bool:
    """Whether the store said the object is not there. fsspec's HTTP file system raises FileNotFoundError for any
    failure of its HEAD and GET, with that failure as the cause: a refused connection, a timeout or a 500 is the
    store failing (``storage_error``), only a 404/410 answer (or no cause: local files, s3fs's mapped codes) is
    the object missing."""
    cause = exc.__cause__
    if cause is None or isinstance(cause, FileNotFoundError):
        return True
    status = getattr(cause, "status", None)  # aiohttp's ClientResponseError: the server answered
    if isinstance(status, int):
        return status in (404, 410)
    return not (isinstance(cause, OSError) or type(cause).__module__.split(".")[0] == "aiohttp")


def _why(exc: BaseException | None) -> str:
    """``Type: message`` of a storage failure, without credentials (libraries quote the URL they were given)."""
    return redact_uris(f"{type(exc).__name__}: {exc}")


def _denied(exc: BaseException | None) -> bool:
    """Whether the store refused our credentials (access_denied, the serve 403), told by type and status attribute:
    aiohttp's ``status`` (HTTP), azure-core's ``status_code`` (its ClientAuthenticationError may carry none: no token
    could be had), gcsfs's HttpError ``code``. gcsfs raises a 403 as a bare ``OSError("Forbidden: ...")`` with no
    attribute to tell it by, so that one is told by its text."""
    if exc is None:
        return False
    if any(c.__name__ == "ClientAuthenticationError" for c in type(exc).__mro__):
        return True
    for attr in ("status", "status_code", "code"):
        status = getattr(exc, attr, None)
        if isinstance(status, int):
            return status in (401, 403)
    return type(exc) is OSError and str(exc).startswith("Forbidden: ")


# How often a read that waits on the store looks at its request's deadline: how soon a stopped read frees its thread.
WAIT_SLICE_S = 0.1


def _call(fs, method: str, deadline: Deadline | None, *args, **kwargs):
    """``fs.<method>(...)``. With a deadline, on an async file system (s3fs, gcsfs, adlfs, HTTP: every store the
    server may read), its coroutine runs on fsspec's loop while this thread looks at the deadline every
    ``WAIT_SLICE_S``: once it passes or is stopped, the coroutine is cancelled (its connection closed) and the thread
    is free. A store trickling 200 B/s held the server's decode threads for minutes past their requests' 504."""
    if deadline is None or not isinstance(fs, AsyncFileSystem):
        return getattr(fs, method)(*args, **kwargs)
    future = asyncio.run_coroutine_threadsafe(getattr(fs, "_" + method)(*args, **kwargs), fs.loop)
    while not concurrent.futures.wait([future], WAIT_SLICE_S).done:
        if deadline.passed():
            future.cancel()
            raise DeadlineExceededError(f"reading stopped: {deadline.why()}")
    return future.result()


# Bytes read first to tell an object's type (sniff_media reads 512): a large file of the wrong type is refused
# before the rest of it is read (a 3.5 GB object of zeros held 4.5 GB of an actor just to say unsupported_media).
SNIFF_BYTES = 64 * 1024


def _fits(size: int | None, max_bytes: int) -> None:
    if size is not None and size > max_bytes:
        raise MediaTooLargeError(f"object is {size} bytes, over the {max_bytes}-byte limit")


def _ranged(cat: Callable[[int, int], bytes], size: int) -> bytes:
    """The ``size`` bytes of an object by ``cat(start, end)``, its first ``SNIFF_BYTES`` sniffed before the rest is
    read. Two ranged reads, the whole in one (joining parts would copy a large object)."""
    if size > SNIFF_BYTES:
        head = cat(0, SNIFF_BYTES)
        sniff_media(head)
        if len(head) >= size:  # a server that ignores Range sent it all: not twice
            return head
    return cat(0, size) if size else b""


def _read_local(path: str, max_bytes: int, name: str | None = None) -> bytes:
    """A local file (``name``: as messages call it), refused as ``unsupported_media`` unless it is a regular file:
    opening a FIFO waits for a writer (forever), /dev/zero never ends. Told by a stat first, so a FIFO or device is
    never opened (opening one releases a writer waiting on it, runs a driver's open); then opened without blocking
    and told again by its descriptor, so a file swapped for a FIFO after the stat is refused too. A regular file that
    will not open without blocking (a lease or oplock held: Samba, NFS delegations) is opened again, waiting."""
    irregular = f"not a regular file: {redact_uri(name or path)}"
    mode = os.stat(path).st_mode  # follows links, as the open does
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(path)
    if not stat.S_ISREG(mode):
        raise UnsupportedMediaError(irregular)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # swapped for a socket or a device with nothing behind it since the stat
            raise UnsupportedMediaError(irregular) from exc
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
            raise
        fd = None  # a lease: the fstat below still tells what this blocking open opened
    if fd is None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise UnsupportedMediaError(irregular)
        _fits(opened.st_size, max_bytes)
        os.set_blocking(fd, True)  # a regular file: reads as any other (a network file system may honour the flag)
    except BaseException:
        os.close(fd)
        raise
    with open(fd, "rb") as handle:
        def cat(start: int, end: int) -> bytes:
            handle.seek(start)
            return handle.read(end - start)

        return _ranged(cat, opened.st_size)


def _read(fs, path: str, size: int | None, max_bytes: int, deadline: Deadline | None) -> bytes:
    """At most ``max_bytes + 1`` bytes of the object, its first ``SNIFF_BYTES`` sniffed before the rest is read.
    Ranged reads (``_ranged``) stop at a ``deadline``."""
    if size is not None:
        return _ranged(lambda start, end: _call(fs, "cat_file", deadline, path, start=start, end=end), size)
    with fs.open(path, "rb") as handle:  # no size to ask a range for (an HTTP server that sends none): a stream
        head = handle.read(SNIFF_BYTES)
        sniff_media(head)
        return head + handle.read(max_bytes + 1 - len(head))


def read_media_bytes(uri: str, max_bytes: int, storage_options: dict | None = None, *, literal: bool = False,
                     deadline: Deadline | None = None) -> bytes:
    """Read a whole object through fsspec, refusing objects over ``max_bytes`` before reading them.

    ``uri`` is normalised first (``normalize_uri``: what a user typed), unless ``literal``: a URI that a
    listing returned names its key exactly (S3 keys are literal: ``clip%41.mp4`` is not ``clipA.mp4``).
    ``deadline`` (the server's requests): the read stops when it passes or is stopped (``DeadlineExceededError``),
    however slowly the store answers; a scan has none. A local path that is not a regular file (a FIFO, a device, a
    link to one) is refused from its stat, never opened, and a file swapped for one after the stat from its
    descriptor (``_read_local``). An object
    whose first bytes are no supported type is refused before the rest is read.
    """
    uri = uri if literal else normalize_uri(uri)
    try:
        fs, path = _filesystem(uri, storage_options or {})
        if isinstance(fs, LocalFileSystem):
            data = _read_local(path, max_bytes, uri)
        else:
            info = _call(fs, "info", deadline, path)
            if info.get("type") == "directory":
                raise IsADirectoryError(path)
            _fits(info.get("size"), max_bytes)
            data = _read(fs, path, info.get("size"), max_bytes, deadline)
    except MediaError:
        raise
    except FileNotFoundError as exc:
        if _missing(exc):
            raise MediaNotFoundError(f"not found: {redact_uri(uri)}") from exc
        if _denied(exc.__cause__):  # an expired or wrong pre-signed URL, no credentials
            raise AccessDeniedError(f"could not read {redact_uri(uri)}: {_why(exc.__cause__)}") from exc
        raise StorageError(f"could not read {redact_uri(uri)}: {_why(exc.__cause__)}") from exc
    except IsADirectoryError as exc:  # errors.py: not_found covers "does not exist (or is a directory)"
        raise MediaNotFoundError(f"is a directory, not a file: {redact_uri(uri)}") from exc
    except PermissionError as exc:
        raise AccessDeniedError(f"could not read {redact_uri(uri)}: {_why(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - any storage failure becomes a readable message
        if out_of_memory(exc):  # this process's limit, not the media's fault: the stage gives OUT_OF_MEMORY
            raise
        if _denied(exc):  # GCS's and Azure's refusals (S3's come as PermissionError)
            raise AccessDeniedError(f"could not read {redact_uri(uri)}: {_why(exc)}") from exc
        raise StorageError(f"could not read {redact_uri(uri)}: {_why(exc)}") from exc
    if len(data) > max_bytes:
        raise MediaTooLargeError(f"object is over the {max_bytes}-byte limit")
    return data
