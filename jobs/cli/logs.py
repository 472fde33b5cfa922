"""Logging set-up shared by every command: rich output on a terminal, plain lines otherwise."""

from __future__ import annotations

import logging
import os
import warnings

# storage clients log their own retries and failures (tracebacks, asyncio's "Task was destroyed" on gcsfs's
# prefetcher) before raising; the command says what failed in one line, so they speak only under --verbose
STORAGE_LOGGERS = ("botocore", "aiobotocore", "s3fs", "gcsfs", "adlfs", "azure", "fsspec", "asyncio")
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


def setup_logging(verbose: bool = False, as_json: bool = False) -> None:
    """Set the level (a bad ``DFS_LOG_LEVEL``: ``invalid_configuration``, exit 2, as any bad setting) and quieten the
    chattiest libraries."""
    try:
        level = log_level(verbose)
    except ValueError as exc:
        from jobs.cli.common import refuse

        raise refuse("invalid_configuration", str(exc), as_json) from exc
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("werkzeug", "urllib3"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    for storage in STORAGE_LOGGERS:
        logging.getLogger(storage).setLevel(logging.DEBUG if verbose else logging.CRITICAL + 1)
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
