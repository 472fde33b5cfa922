"""Request hardening for the online API: URI allow-list, media limits read from headers, error → status.

Everything here runs before (or instead of) decoding, so a hostile request costs little: the allow-list is
checked on the string, and an image's or video's size, duration and frame count are read from its header
before a single frame is decoded (no decompression bombs).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from pipeline.config import DecodeConfig, Settings
from pipeline.errors import (
    EmptyMediaError,
    MediaError,
    MediaNotFoundError,
    MediaTooLargeError,
    StorageError,
    UnsupportedMediaError,
)
from pipeline.media import MediaKind, normalize_uri
from pipeline.probe import check_pixels, probe_video  # the decode stage's own checks, run before decoding

# Object stores only: never file://, http(s)://, or anything else that would let a caller make the server
# read local files or reach internal hosts.
REMOTE_SCHEMES = frozenset({"s3", "gs", "gcs", "az", "abfs"})
MAX_URI_LENGTH = 1024


class UriNotAllowedError(Exception):
    """The URI is outside the configured allow-list (or malformed)."""


@dataclass(frozen=True)
class ObjectPath:
    scheme: str
    bucket: str
    key: str


def _split(uri: str) -> ObjectPath:
    if "://" not in uri:
        raise UriNotAllowedError("only object-store URIs such as s3://bucket/key are accepted")
    scheme, rest = uri.split("://", 1)
    bucket, _, key = rest.partition("/")
    return ObjectPath(scheme.lower(), bucket, key)


def parse_allowed_prefix(prefix: str) -> ObjectPath:
    """Validate one ``serve.allowed_uri_prefixes`` entry (raises ValueError for a bad one)."""
    try:
        path = _split(normalize_uri(prefix.strip()))
    except UriNotAllowedError as exc:
        raise ValueError(f"allowed URI prefix {prefix!r} is not an object-store URI") from exc
    if path.scheme not in REMOTE_SCHEMES:
        raise ValueError(f"allowed URI prefix {prefix!r}: scheme must be one of {sorted(REMOTE_SCHEMES)}")
    if not path.bucket or any(c in path.bucket for c in "*?[]:"):
        raise ValueError(f"allowed URI prefix {prefix!r} must name one bucket")
    key = path.key
    if key and not key.endswith("/"):
        key += "/"  # "s3://b/uploads" allows s3://b/uploads/..., not s3://b/uploads-private/...
    return ObjectPath(path.scheme, path.bucket, key)


def check_uri(uri: str, allowed: list[str]) -> str:
    """Return ``uri`` normalised (``normalize_uri``: scheme case, percent-escapes) when it names one object
    under an allowed prefix, else raise UriNotAllowedError. The checks see the normalised form, and it is
    what the caller must read, so no later layer can interpret the URI differently."""
    uri = normalize_uri(uri)
    if not allowed:
        raise UriNotAllowedError("this server reads no URIs (serve.allowed_uri_prefixes is empty); upload the file")
    if len(uri) > MAX_URI_LENGTH:
        raise UriNotAllowedError(f"URI is longer than {MAX_URI_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in uri) or any(t in uri for t in ("\\", "::", "?", "#", "*", "[", "]")):
        raise UriNotAllowedError("URI contains characters that are not allowed (control, \\, ::, ?, #, glob)")
    path = _split(uri)
    segments = path.key.split("/")
    if not path.key or any(s in ("", ".", "..") for s in segments):
        raise UriNotAllowedError("URI must name one object (no empty, '.' or '..' path segments)")
    for prefix in map(parse_allowed_prefix, allowed):
        if (path.scheme, path.bucket) == (prefix.scheme, prefix.bucket) and path.key.startswith(prefix.key):
            return uri
    raise UriNotAllowedError("URI is not under an allowed prefix")


def server_decode_config(settings: Settings) -> DecodeConfig:
    """``decode.*`` tightened by ``serve.*``: the server applies the stricter of each limit."""
    decode, limits = settings.decode, settings.serve
    return decode.model_copy(update={
        "max_bytes": min(decode.max_bytes, limits.max_upload_bytes),
        "max_pixels": min(decode.max_pixels, limits.max_pixels),
        "max_duration_s": min(decode.max_duration_s, limits.max_duration_s),
    })


def check_header_limits(data: bytes, kind: MediaKind, config: DecodeConfig, max_frames: int) -> None:
    """Read resolution / duration / frame count from the container header and refuse media over the limits.

    Raises MediaTooLargeError (limits), NoVideoStreamError or MediaError (unreadable header). No frame is
    decoded: PIL reads an image's size from its header, and ``probe_video`` parses a video's headers with
    FFmpeg's decoding switched off.
    """
    if kind == "image":
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except Image.DecompressionBombError as exc:
            raise MediaTooLargeError(f"image is a decompression bomb: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
            raise MediaError("corrupt or unreadable image") from exc
        check_pixels(width, height, config)
        return
    info = probe_video(data, config)
    frames = info.frame_count or round(info.duration * info.fps)
    if frames > max_frames:
        raise MediaTooLargeError(f"video has {frames} frames, over the {max_frames}-frame limit")


# status, machine-readable code (also the metrics outcome), title
PROBLEMS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "Bad request"),
    403: ("forbidden", "URI not allowed"),
    404: ("not_found", "Not found"),
    413: ("too_large", "Media too large"),
    415: ("unsupported_media", "Unsupported media type"),
    422: ("unprocessable", "Media could not be decoded"),
    500: ("internal_error", "Internal error"),
    502: ("storage_error", "Object store error"),
    503: ("unavailable", "Model not available"),
    504: ("timeout", "Request timed out"),
}


def status_for(exc: Exception) -> int:
    """The HTTP status for a typed pipeline error."""
    if isinstance(exc, UnsupportedMediaError):
        return 415
    if isinstance(exc, MediaTooLargeError):
        return 413
    if isinstance(exc, MediaNotFoundError):
        return 404
    if isinstance(exc, MediaError) and isinstance(exc.__cause__, PermissionError):
        return 403
    if isinstance(exc, EmptyMediaError):
        return 400
    if isinstance(exc, StorageError):
        return 502
    if isinstance(exc, MediaError):
        return 422
    return 500


def public_detail(exc: Exception, status: int) -> str:
    """What the caller is told: the typed error's message, except for server-side storage failures."""
    if status == 502:
        return "the object store could not be read; the failure is in the server log"
    if status >= 500:
        return "internal error; the failure is in the server log"
    return str(exc)
