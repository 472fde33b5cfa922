"""Logging set-up (jobs/cli/logs.py): DFS_LOG_LEVEL takes the named levels in any case, and nothing else."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from jobs.cli.logs import log_level


@pytest.mark.parametrize("name, level", [("debug", logging.DEBUG), ("Info", logging.INFO), ("WARNING", logging.WARNING),
                                         ("warn", logging.WARNING), ("error", logging.ERROR), ("CRITICAL", logging.CRITICAL),
                                         ("fatal", logging.CRITICAL), ("", logging.WARNING), ("  ", logging.WARNING)])
def test_named_levels_in_any_case(monkeypatch, name, level):
    monkeypatch.setenv("DFS_LOG_LEVEL", name)
    assert log_level() == level
    assert log_level(verbose=True) == logging.DEBUG  # --verbose wins


def test_the_default_is_warning(monkeypatch):
    monkeypatch.delenv("DFS_LOG_LEVEL", raising=False)
    assert log_level() == logging.WARNING


@pytest.mark.parametrize("name", ["verbose", "BASIC_FORMAT", "10", "warn_"])
def test_anything_else_is_refused_in_one_line_with_exit_2(name):
    """`verbose` was silently WARNING; BASIC_FORMAT (an attribute of logging, not a level) crashed with a trace."""
    env = {**os.environ, "DFS_LOG_LEVEL": name}
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "query", "-o", "/nonexistent", "SELECT 1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert " ".join(proc.stderr.split()) == ("invalid_configuration: DFS_LOG_LEVEL must be one of DEBUG, INFO, WARNING, "
                                             f"WARN, ERROR, CRITICAL, FATAL, not {name!r}")


@pytest.mark.parametrize("command", [["scan", "/nonexistent", "-o", "/nonexistent-out"], ["score", "/nonexistent.jpg"],
                                     ["report", "/nonexistent"]])
def test_a_bad_level_under_json_still_prints_its_one_json_line(command):
    """The error contract holds for the log level too: with --json, one line a script can read (scan: its summary)."""
    import json

    env = {**os.environ, "DFS_LOG_LEVEL": "verbose"}
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", *command, "--json"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stdout.splitlines()
    assert json.loads(line)["error_code"] == "invalid_configuration"


@pytest.mark.parametrize("name", ["gcsfs", "fsspec.prefetcher", "asyncio", "azure.core.pipeline", "s3fs"])
def test_storage_clients_tracebacks_reach_the_caller_only_under_verbose(name):
    """gcsfs printed `ERROR gcsfs: _request out of retries` with a traceback, and asyncio dozens of `Task was destroyed`
    lines, before (or on a successful run, instead of nothing) the command's one line; -v shows them."""
    from jobs.cli.logs import setup_logging

    setup_logging()
    assert not logging.getLogger(name).isEnabledFor(logging.CRITICAL)
    assert logging.getLogger("deepfakestream.scan").isEnabledFor(logging.WARNING)  # ours still speak
    setup_logging(verbose=True)
    assert logging.getLogger(name).isEnabledFor(logging.ERROR)
    setup_logging()
