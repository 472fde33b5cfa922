"""Typed errors: every failure a caller should turn into a clear message instead of a crash.

Each type has a stable ``code`` (class attribute) that front ends map to statuses and metrics; the
messages are for people and may change.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from pipeline.logsafe import log_safe


class DeepfakeStreamError(Exception):
    """Base class for errors that carry a message meant for the user."""

    code = "error"


class MediaError(DeepfakeStreamError):
    """The input could not be read as an image or video (missing, empty, corrupt, unsupported)."""

    code = "media_corrupt"


class EmptyMediaError(MediaError):
    """The file or upload has no bytes at all."""

    code = "media_empty"


class MediaNotFoundError(MediaError):
    """The path or object does not exist (or is a directory)."""

    code = "not_found"


class StorageError(MediaError):
    """The file system or object store failed while reading (not the media's fault)."""

    code = "storage_error"


class AccessDeniedError(StorageError):
    """The store refused to read the object (permissions, credentials)."""

    code = "access_denied"


class UnsupportedMediaError(MediaError):
    """The bytes are not an image or video type we decode."""

    code = "unsupported_media"


class NoVideoStreamError(MediaError):
    """A video container without a video stream (audio-only, subtitles, data)."""

    code = "no_video_stream"


class MediaTooLargeError(MediaError):
    """The media exceeds a configured limit (bytes, pixels, duration)."""

    code = "media_too_large"


class DeadlineExceededError(MediaError):
    """The request's deadline passed (or its caller went away) while its media was decoding: the server's 504.
    Not the media's fault; a scan sets no deadline."""

    code = "deadline_exceeded"


# Codes of row failures that are not exceptions of ours (they travel in the batch's ``error_code`` column).
DECODE_FAILED = "decode_failed"  # the decoder itself crashed on the object
DETECT_FAILED = "detect_failed"  # face detection crashed on decoded frames (a server fault, not the media's)
WORKER_LOST = "worker_lost"  # the object's worker died: the scan's on every retry, a serve replica mid-request
OUT_OF_MEMORY = "out_of_memory"  # decoding or detection ran out of memory: the server's limit, worth a retry

# Every code a row's error may carry, and whether it can change while the object stays the same: True where the store,
# the server, the worker or our code failed (``scan --retry-errors`` rescans these); False where the media itself did:
# the same bytes fail alike every time, so only new content (a new fingerprint), another model or scoring key, or
# ``--full`` rescans them (media_too_large also passes with a raised decode limit: rescan with ``--full``).
ROW_CODES = {
    MediaError.code: False, EmptyMediaError.code: False, UnsupportedMediaError.code: False,
    NoVideoStreamError.code: False, MediaTooLargeError.code: False,
    MediaNotFoundError.code: True,  # listed, then gone before it was read; still listed the next night, it is there
    StorageError.code: True, AccessDeniedError.code: True,  # the store failed or refused: mended without the object
    DeadlineExceededError.code: True, WORKER_LOST: True, OUT_OF_MEMORY: True,
    DECODE_FAILED: True, DETECT_FAILED: True,  # a crash of ours or of the library, not a judgment on the bytes
    DeepfakeStreamError.code: True,  # "error": a failure no other code names
}


def retryable(code: str | None) -> bool:
    """Whether a row's error may pass on a retry of the same object (``ROW_CODES``); a row without a code (written
    before codes existed) or with one this version does not know: yes."""
    return ROW_CODES.get(code or DeepfakeStreamError.code, True)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, cut at ``limit``: what a log line or an operator's message quotes of an
    exception whose text can run to pages (botocore, DuckDB, FFmpeg)."""
    text = str(exc).strip()
    first = text.splitlines()[0][:limit] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def out_of_memory(exc: BaseException) -> bool:
    """This process ran out of memory (Python's MemoryError, torch's OutOfMemoryError), as opposed to a file that
    asks for the impossible: FFmpeg raises PyAV's own MemoryError subclass when a corrupt header demands an
    absurd allocation, and that is the media's fault (media_corrupt), not a reason to retry."""
    if isinstance(exc, MemoryError):
        return not type(exc).__module__.startswith("av.")
    return type(exc).__name__ == "OutOfMemoryError"  # torch.OutOfMemoryError (CUDA); told by type, never message


def code_of(exc: BaseException, default: str = DECODE_FAILED) -> str:
    """The stable code of a typed error; ``default`` for anything else."""
    return exc.code if isinstance(exc, DeepfakeStreamError) else default


@contextmanager
def media_errors(what: str, detail: Callable[[Exception], str] | None = None) -> Iterator[None]:
    """A decoder's failure inside becomes ``MediaError("corrupt or unreadable {what}: {detail}")``, the media's
    fault; our typed errors pass as they are, and so does running out of memory (the server's limit: the stage
    gives OUT_OF_MEMORY). ``detail``: what the message quotes of the exception; its first line, cut at 200, unless given."""
    try:
        yield
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise many types for bad bytes (a corrupt header's MemoryError too)
        if out_of_memory(exc):
            raise
        text = detail(exc) if detail else (str(exc).strip().splitlines() or [""])[0][:200]
        raise MediaError(f"corrupt or unreadable {what}: {text}") from exc


def row_failure(exc: Exception, default_code: str, what: str, uri: Any, log: logging.Logger) -> tuple[str, str]:
    """(error, code) of the row a stage failed on, logged on the stage's ``log``: a typed error in its own words
    (the media's fault: a warning); out of memory as OUT_OF_MEMORY (the server's limit, worth a retry); any other
    crash as ``default_code`` with one line of it (botocore's or FFmpeg's text runs to pages), its traceback logged."""
    where = log_safe(uri)
    if isinstance(exc, DeepfakeStreamError):
        log.warning("%s failed for %s: %s", what, where, log_safe(exc))
        return str(exc), exc.code
    if out_of_memory(exc):
        log.error("%s failed for %s: out of memory", what, where)
        return f"{what} failed: out of memory", OUT_OF_MEMORY
    log.error("%s failed for %s", what, where, exc_info=exc)
    return f"{what} failed: {one_line(exc, 200)}", default_code


class InvalidInputError(DeepfakeStreamError, ValueError):
    """A caller handed a stage data outside its contract (frames not (N, H, W, 3) uint8): a bug of the caller's,
    never of media the decoder read, so no row of a scan carries it (not in ``ROW_CODES``)."""

    code = "invalid_input"


class CheckpointError(DeepfakeStreamError):
    """A checkpoint is missing, malformed, or does not match the architecture."""

    code = "checkpoint_error"


class NoTrainedModelError(CheckpointError):
    """No trained detector is installed, so no honest score can be given."""

    code = "no_trained_model"


class DeviceUnavailableError(DeepfakeStreamError):
    """The configured device is not on this machine (``device: cuda`` where no GPU is visible)."""

    code = "device_unavailable"


class RuntimeUnavailableError(DeepfakeStreamError):
    """The configured inference engine cannot run here (not installed, or not for this device)."""

    code = "runtime_unavailable"
