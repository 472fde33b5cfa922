"""Logging set-up shared by every command: rich output on a terminal, plain lines otherwise."""

from __future__ import annotations

import logging
import os
import time
import warnings

from pipeline.logsafe import redact_secrets

# storage clients log their own retries and failures (tracebacks, asyncio's "Task was destroyed" on gcsfs's
# prefetcher) before raising; the command says what failed in one line, so they speak only under --verbose
STORAGE_LOGGERS = ("botocore", "aiobotocore", "s3fs", "gcsfs", "adlfs", "azure", "fsspec", "asyncio")
# botocore's DEBUG dumps every signed request (canonical request, headers, signature, STS responses): INFO even then
SIGNING_LOGGERS = ("botocore", "aiobotocore")
# what DFS_LOG_LEVEL may say, in any case: the named levels and Python's aliases (WARN, FATAL)
LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL")


def log_level(verbose: bool = False) -> int:
    """DEBUG with ``--verbose``, else ``DFS_LOG_LEVEL`` (default WARNING); ``ValueError`` for a name not in LEVELS."""
    if verbose:
        return logging.DEBUG
    name = os.environ.get("DFS_LOG_LEVEL", "").strip().upper() or "WARNING"  # blank: a template's unset value
    if name not in LEVELS:  # getattr(logging, name) would take BASIC_FORMAT, and a typo silently meant WARNING
        raise ValueError(f"DFS_LOG_LEVEL must be one of {', '.join(LEVELS)}, not {os.environ['DFS_LOG_LEVEL']!r}")
    return logging.getLevelNamesMapping()[name]


# ISO 8601 in UTC, as every other time the commands write (records, reports, --json): 2026-12-08T15:39:09.037Z
FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


class UtcFormatter(logging.Formatter):
    converter = time.gmtime  # logging's default is the local time, with no zone said


class Redacting(logging.Filter):
    """Every record a handler writes with its credentials out (``pipeline.logsafe.redact_secrets``): storage clients
    log URIs as given (``fsspec.http: Retrieve file size for http://user:pw@…``), headers and signatures. The message
    is formatted and redacted once, then stands in for ``msg``/``args``; a traceback's text likewise."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "redacted", False):  # one record, several handlers
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call ("%d" of a str): logging never raises to its caller
            message = f"{record.msg} (arguments: {record.args!r})"
        record.msg, record.args = redact_secrets(message), ()
        if record.exc_info and not record.exc_text:  # the Formatter takes exc_text as it is
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_secrets(record.stack_info)
        record.redacted = True
        return True


def setup_logging(verbose: bool = False, as_json: bool = False) -> None:
    """Set the level (a bad ``DFS_LOG_LEVEL``: ``invalid_configuration``, exit 2, as any bad setting), quieten the
    chattiest libraries and redact every line the root handlers write (``Redacting``)."""
    try:
        level = log_level(verbose)
    except ValueError as exc:
        from jobs.cli.common import refuse

        raise refuse("invalid_configuration", str(exc), as_json) from exc
    stderr = logging.StreamHandler()
    stderr.setFormatter(UtcFormatter(FORMAT, DATE_FORMAT))
    logging.basicConfig(level=level, handlers=[stderr])  # as ever, nothing where the root has handlers already
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, Redacting) for f in handler.filters):
            handler.addFilter(Redacting())
    for noisy in ("werkzeug", "urllib3"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    for storage in STORAGE_LOGGERS:
        shown = logging.INFO if storage in SIGNING_LOGGERS else logging.DEBUG
        logging.getLogger(storage).setLevel(shown if verbose else logging.CRITICAL + 1)
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
