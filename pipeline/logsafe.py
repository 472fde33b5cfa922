"""Client-supplied text (file names, URIs, error messages quoting them) made safe to store, print and log: no
credentials (``redact_uri``), no forged log lines (``log_safe``)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

MASK = "REDACTED"
# query parameters that carry a secret: pre-signed S3 URLs (X-Amz-*), GCS signed URLs (X-Goog-*), Azure SAS (sig),
# OAuth and API tokens; compared case-insensitively, and any name ending in one of SECRET_ENDINGS
SECRET_PARAMS = frozenset({"x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature",
                           "x-goog-credential", "signature", "sig", "token", "access_token", "key"})
SECRET_ENDINGS = ("signature", "token", "secret", "credential", "password", "apikey", "api_key")
# Azure's container@account is a location, not user-info
KEEPS_USER_INFO = ("abfs://", "abfss://", "az://", "wasb://", "wasbs://")
_AUTHORITY = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#\s]*)")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>.,;:!?)\]]")  # not the sentence's punctuation


def _masked(query: str) -> str:
    def one(param: str) -> str:
        name, eq, _value = param.partition("=")
        lower = unquote(name).lower()
        return f"{name}={MASK}" if eq and (lower in SECRET_PARAMS or lower.endswith(SECRET_ENDINGS)) else param

    return "&".join(one(p) for p in query.split("&"))


def redact_uri(uri: str) -> str:
    """``uri`` as it may be stored, printed or logged: the user-info (``user:pass@``) removed and, in an http(s) URL,
    the values of credential-like query parameters (``SECRET_PARAMS``) masked; an object store's key may hold ``?``
    (``s3://b/clip?token=A.mp4`` is a key, not a query: masking it would make two objects one). Deterministic, so a
    redacted URI is a stable key run to run; the raw one is only for reading the object. Plain paths (no scheme)
    come back unchanged."""
    match = _AUTHORITY.match(uri)
    if not match:
        return uri
    scheme, authority = match.groups()
    rest = uri[match.end():]
    head, hash_, fragment = rest.partition("#")
    path, question, query = head.partition("?")
    if question and scheme.lower() in ("http://", "https://"):
        head = f"{path}?{_masked(query)}"
    if scheme.lower() not in KEEPS_USER_INFO:
        authority = authority.rpartition("@")[2]
    return scheme + authority + head + hash_ + fragment


def redact_uris(text: str) -> str:
    """``text`` (an error message, a log line) with every URI in it passed through ``redact_uri``."""
    return _URI.sub(lambda m: redact_uri(m.group(0)), text)


def _escaped(text: str) -> str:
    """Control, line-separator and other unprintable characters written out (ESC as ``\\x1b``, newline as ``\\n``)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def printable(value: Any) -> str:
    """``value`` (None as "") for a terminal, unprintable characters written out: an object key may hold ESC
    sequences that, printed as they are, move the cursor, retitle the window or rewrite what the operator sees."""
    return "" if value is None else _escaped(str(value))


def log_safe(value: Any, limit: int = 500) -> str:
    """``value`` as text with credentials out of its URIs (``redact_uris``) and unprintable characters written out
    (``_escaped``), so a newline in an upload's name cannot start a forged log line; cut to ``limit`` characters."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    safe = _escaped(redact_uris(text))
    return safe if len(safe) <= limit else safe[:limit] + "…"
