"""Client-supplied text (file names, URIs, error messages quoting them) made safe to store, print and log: no
credentials (``redact_uri``), no forged log lines (``log_safe``)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

MASK = "REDACTED"
# query parameters that carry a secret: pre-signed S3 URLs (X-Amz-*), GCS signed URLs (X-Goog-*), Azure SAS (sig),
# Azure Functions keys (code), OAuth and API tokens, session ids, passwords; compared case-insensitively, and any name
# ending in one of SECRET_ENDINGS (api-key, x-api-key, secret_key, access_key, private_key, client_secret…)
SECRET_PARAMS = frozenset({"sig", "key", "code", "pwd", "pass", "passwd", "auth", "authorization"})
SECRET_ENDINGS = ("signature", "token", "secret", "credential", "password", "apikey", "_key", "-key", "sessionid",
                  "sessid")
# Azure's container@account is a location, not user-info
# fsspec chains links with "::" before a scheme (``simplecache::https://…``); an IPv6 host or a path may hold "::"
_CHAIN = re.compile(r"::(?=[A-Za-z][A-Za-z0-9+.-]*://)")
KEEPS_USER_INFO = ("abfs://", "abfss://", "az://", "wasb://", "wasbs://")
_AUTHORITY = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#\s]*)")
# a scheme starts where no scheme character stands before it: without that, a long run of letters and digits
# without "://" was tried from each of its positions (quadratic: 8 s for an 80,000-character line)
_URI = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>.,;:!?)\]]")  # not the sentence's punctuation
# secrets a storage client's log line spells out of any URI: a request's headers as text (``x-amz-security-token:T``),
# as a dict (``'X-Amz-Security-Token': b'T'``), a canonical query (``X-Amz-Credential=…``), an XML or JSON credential
# (``<SessionToken>``, ``"SecretAccessKey": …``), botocore's ``Signature:\n<hex>``; Authorization's whole value.
# A field is a name ending in one of these words, then a separator: the name's start does not matter. An OSError
# after a path ending in one (``…/.ray/auth_token: [Errno 30] …``) is no value
_SECRET_FIELD = re.compile(r"""(?i)(token|secret|signature|credential|password|secret_?access_?key)"""
                           r"""(['"]?\s*[:=>]\s*b?['"]?)(?!\[Errno\s\d)[^\s'"&,;<]+""")
_AUTHORIZATION = re.compile(r"""(?i)\b((?:proxy-)?authorization)(['"]?\s*[:=]\s*(?:b?(['"]))?)(?(3)[^'"\n]*|[^\n]*)""")
# AWS's long-term (AKIA) and session (ASIA) key ids: 20 characters, digits among them (not ASIANFACES2024.mp4)
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)(?=[A-Z]*[0-9])[A-Z0-9]{16}\b")
# what a line holds before any of the three can match: most lines hold none, and str's search is far cheaper than re's
_HINTS = ("token", "secret", "signature", "credential", "password", "accesskey", "access_key", "authorization", "akia",
          "asia")


def _masked(query: str) -> str:
    def one(param: str) -> str:
        name, eq, _value = param.partition("=")
        lower = unquote(name).lower()
        return f"{name}={MASK}" if eq and (lower in SECRET_PARAMS or lower.endswith(SECRET_ENDINGS)) else param

    return "&".join(one(p) for p in query.split("&"))


def redact_uri(uri: str) -> str:
    """``uri`` as it may be stored, printed or logged: the user-info (``user:pass@``) removed and, in an http(s) URL,
    the values of credential-like query parameters (``SECRET_PARAMS``, ``SECRET_ENDINGS``) masked; an object store's
    key may hold ``?`` (``s3://b/clip?token=A.mp4`` is a key, not a query: masking it would make two objects one).
    Each link of a chained fsspec URL (``simplecache::https://u:p@host/x``) is redacted on its own. Deterministic, so
    a redacted URI is a stable key run to run; the raw one is only for reading the object. Plain paths (no scheme)
    come back unchanged."""
    return "::".join(_redact_link(link) for link in _CHAIN.split(uri))


def _redact_link(uri: str) -> str:
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


def redact_secrets(text: str) -> str:
    """``text`` (a log line, a traceback) with its URIs redacted (``redact_uri``: an object key's ``?token=`` stays
    whole) and, around them, the secrets a storage client logs outside URIs masked: header and field values
    (``_AUTHORIZATION``, ``_SECRET_FIELD``) and AWS key ids. Every line a command logs passes here: cheap when
    there is nothing to mask (``_HINTS``)."""
    if "://" not in text:
        return _fields(text)
    parts, end = [], 0
    for match in _URI.finditer(text):
        parts += [_fields(text[end:match.start()]), redact_uri(match.group(0))]
        end = match.end()
    return "".join(parts) + _fields(text[end:])


def _fields(plain: str) -> str:
    lower = plain.lower()
    if not any(hint in lower for hint in _HINTS):
        return plain
    plain = _AUTHORIZATION.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", plain)
    plain = _SECRET_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", plain)
    return _ACCESS_KEY_ID.sub(MASK, plain)


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
