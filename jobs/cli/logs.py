"""Logging set-up shared by every command: rich output on a terminal, plain lines otherwise."""

from __future__ import annotations

import logging
import os
import warnings

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # what DFS_LOG_LEVEL may say, in any case


def log_level(verbose: bool = False) -> int:
    """DEBUG with ``--verbose``, else ``DFS_LOG_LEVEL`` (default WARNING); ``ValueError`` for a name not in LEVELS."""
    if verbose:
        return logging.DEBUG
    name = os.environ.get("DFS_LOG_LEVEL", "WARNING").strip().upper()
    if name not in LEVELS:  # getattr(logging, name) would take BASIC_FORMAT, and a typo silently meant WARNING
        raise ValueError(f"DFS_LOG_LEVEL must be one of {', '.join(LEVELS)}, not {os.environ['DFS_LOG_LEVEL']!r}")
    return logging.getLevelNamesMapping()[name]


def setup_logging(verbose: bool = False) -> None:
    """Set the level (a bad ``DFS_LOG_LEVEL``: one line, exit 2) and quieten the chattiest libraries."""
    try:
        level = log_level(verbose)
    except ValueError as exc:
        import typer
        from rich.markup import escape

        from jobs.cli.common import console

        console.print(f"[red]invalid configuration:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("werkzeug", "botocore", "s3fs", "urllib3", "aiobotocore", "fsspec"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
