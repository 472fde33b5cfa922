"""Request hardening for the online API: the URI allow-list and the server's tighter media limits.

The allow-list is checked on the string, before anything is read. The limits are ``decode.*`` tightened
by ``serve.*``; the decode stage applies them from the container's header before a single frame is
decoded (no decompression bombs), in the same pass that decodes: the container is opened once.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import DecodeConfig, Settings
from pipeline.media import normalize_uri

# Object stores only: never file://, http(s)://, or anything else that would let a caller make the server
# read local files or reach internal hosts.
REMOTE_SCHEMES = frozenset({"s3", "gs", "gcs", "az", "abfs"})
MAX_URI_LENGTH = 1024
FORBIDDEN = ("\\", "::", "?", "#", "*", "[", "]")  # fsspec chains, query/fragment, globs; and control characters


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


def _bad_characters(uri: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in uri) or any(t in uri for t in FORBIDDEN)


def _bad_segments(key: str) -> bool:
    return any(s in ("", ".", "..") for s in key.split("/"))


def parse_allowed_prefix(prefix: str) -> ObjectPath:
    """Validate one ``serve.allowed_uri_prefixes`` entry (raises ValueError for a bad one): the rules of
    ``check_uri``, so that no entry is accepted that no URI could ever match."""
    uri = normalize_uri(prefix.strip())
    try:
        path = _split(uri)
    except UriNotAllowedError as exc:
        raise ValueError(f"allowed URI prefix {prefix!r} is not an object-store URI") from exc
    if path.scheme not in REMOTE_SCHEMES:
        raise ValueError(f"allowed URI prefix {prefix!r}: scheme must be one of {sorted(REMOTE_SCHEMES)}")
    if len(uri) > MAX_URI_LENGTH:
        raise ValueError(f"allowed URI prefix {prefix!r} is longer than {MAX_URI_LENGTH} characters")
    if _bad_characters(uri):
        raise ValueError(f"allowed URI prefix {prefix!r} contains characters no allowed URI may have "
                         "(control, \\, ::, ?, #, glob)")
    if not path.bucket or ":" in path.bucket:
        raise ValueError(f"allowed URI prefix {prefix!r} must name one bucket")
    key = path.key.removesuffix("/")
    if path.key and (not key or _bad_segments(key)):
        raise ValueError(f"allowed URI prefix {prefix!r} has an empty, '.' or '..' path segment")
    # "s3://b/uploads" allows s3://b/uploads/..., not s3://b/uploads-private/...
    return ObjectPath(path.scheme, path.bucket, f"{key}/" if key else "")


def check_filesystem(prefix: str) -> None:
    """The entry's scheme has an fsspec filesystem installed here (``gs://`` needs gcsfs, ``az://`` adlfs),
    else every request under it would fail with 502: raises ValueError."""
    import fsspec

    scheme = parse_allowed_prefix(prefix).scheme
    try:
        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"allowed URI prefix {prefix!r}: no filesystem for {scheme}:// is installed ({why})") from None


def check_uri(uri: str, allowed: list[str]) -> str:
    """Return ``uri`` normalised (``normalize_uri``: scheme case, percent-escapes) when it names one object
    under an allowed prefix, else raise UriNotAllowedError. The checks see the normalised form, and it is
    what the caller must read, so no later layer can interpret the URI differently."""
    uri = normalize_uri(uri)
    if not allowed:
        raise UriNotAllowedError("this server reads no URIs (serve.allowed_uri_prefixes is empty); upload the file")
    if len(uri) > MAX_URI_LENGTH:
        raise UriNotAllowedError(f"URI is longer than {MAX_URI_LENGTH} characters")
    if _bad_characters(uri):
        raise UriNotAllowedError("URI contains characters that are not allowed (control, \\, ::, ?, #, glob)")
    path = _split(uri)
    if not path.key or _bad_segments(path.key):
        raise UriNotAllowedError("URI must name one object (no empty, '.' or '..' path segments)")
    for prefix in map(parse_allowed_prefix, allowed):
        if (path.scheme, path.bucket) == (prefix.scheme, prefix.bucket) and path.key.startswith(prefix.key):
            return uri
    raise UriNotAllowedError("URI is not under an allowed prefix")


def server_decode_config(settings: Settings) -> DecodeConfig:
    """``decode.*`` tightened by ``serve.*``: the server applies the stricter of each limit. ``max_pixels`` holds
    video frames and animations; a photo over it by up to 16 times for a JPEG, 6 for any other format
    (``pipeline.images.STILL_REDUCE_LIMIT``, ``STILL_WHOLE_LIMIT``) is scaled down to it, as in ``score`` and ``scan``, not refused."""
    decode, limits = settings.decode, settings.serve
    return decode.model_copy(update={
        "max_bytes": min(decode.max_bytes, limits.max_upload_bytes),
        "max_pixels": min(decode.max_pixels, limits.max_pixels),
        "max_duration_s": min(decode.max_duration_s, limits.max_duration_s),
        "max_frames": min(decode.max_frames or limits.max_frames, limits.max_frames),
        "max_decoded_pixels": min(decode.max_decoded_pixels or limits.max_decoded_pixels, limits.max_decoded_pixels),
    })
