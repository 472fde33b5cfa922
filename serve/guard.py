"""Request hardening for the online API: URI allow-list, media limits read from headers, error → status.

Everything here runs before (or instead of) decoding, so a hostile request costs little: the allow-list is
checked on the string, and an image's or video's size, duration and frame count are read from its header
before a single frame is decoded (no decompression bombs).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from pipeline.config import DecodeConfig, Settings
from pipeline.decode import _check_pixels  # the decode stage's own resolution check, reused before decoding
from pipeline.errors import MediaError, MediaTooLargeError, UnsupportedMediaError
from pipeline.media import MediaKind

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
        path = _split(prefix.strip())
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
    """Return ``uri`` when it names one object under an allowed prefix, else raise UriNotAllowedError."""
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

    Raises MediaTooLargeError (limits) or MediaError (unreadable header). No frame is decoded for images;
    for videos FFmpeg parses the header (and at most probes the first packets).
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
        _check_pixels(width, height, config)
        return
    import av

    try:
        with av.open(io.BytesIO(data), options={"probesize": "5000000"}) as container:
            if not container.streams.video:
                raise MediaError("file has no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = (container.duration or 0) / 1_000_000
            frames = int(stream.frames or round(duration * fps))
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001 - av raises InvalidDataError and friends
        raise MediaError("corrupt or unreadable video") from exc
    _check_pixels(width, height, config)
    if duration > config.max_duration_s:
        raise MediaTooLargeError(f"video is {duration:.0f} s long, over the {config.max_duration_s:.0f} s limit")
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
    if isinstance(exc, MediaError):
        cause = exc.__cause__
        if isinstance(cause, FileNotFoundError):
            return 404
        if isinstance(cause, PermissionError):
            return 403
        if str(exc).startswith("file is empty"):
            return 400
        if str(exc).startswith("could not read"):
            return 502
        return 422
    return 500


def public_detail(exc: Exception, status: int) -> str:
    """What the caller is told: the typed error's message, except for server-side storage failures."""
    if status == 502:
        return "the object store could not be read; the failure is in the server log"
    if status >= 500:
        return "internal error; the failure is in the server log"
    return str(exc)
