"""Logging set-up (jobs/cli/logs.py): DFS_LOG_LEVEL takes the named levels in any case, and nothing else."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone

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


# a fresh process: setup_logging installs its own handler there (pytest's own handlers are on this one's root)
LOGGED = r'''
import logging
from jobs.cli.logs import setup_logging

setup_logging(verbose=True)
logging.getLogger("fsspec.http").debug("Retrieve file size for %s", "http://alice:S3cretPw@127.0.0.1:1/c.jpg?X-Amz-Signature=SIGSECRET&page=2")
logging.getLogger("s3fs").debug("headers %s", {"X-Amz-Security-Token": b"TOKENSECRET", "Authorization": b"AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/x, Signature=SIGNEDHEX"})
logging.getLogger("gcsfs").debug("CanonicalRequest:\nGET\nx-amz-security-token:TOKENSECRET\n")
try:
    raise OSError("cannot open simplecache::https://bob:HunterPw@h/x?api-key=KEYSECRET")
except OSError:
    logging.getLogger("deepfakestream.scan").exception("read failed for %s", "s3://b/k.mp4")
logging.getLogger("botocore.auth").debug("StringToSign: BOTOCOREDEBUG")  # botocore's DEBUG: not even under -v
logging.getLogger("botocore.credentials").info("Found credentials in environment variables.")
logging.getLogger("deepfakestream.scan").warning("scanned %d objects of %s in %.1f s", 3, "s3://b/in/clip?token=A.mp4", 1.5)
logging.getLogger("somelib").warning("progress %d%% of %s", "half", "http://u:BADCALLPW@h/x")  # a malformed call
print("carried on", flush=True)
'''


def test_every_line_the_handler_writes_is_redacted_and_the_rest_left_as_it_is():
    """`score -v` logged fsspec's `Retrieve file size for http://alice:S3cretPw@…?X-Amz-Signature=…` and botocore's
    signed requests (x-amz-security-token, Authorization, the access key id): setup_logging's handler masks them,
    tracebacks included, and keeps botocore's DEBUG (every signed request) off even under -v."""
    proc = subprocess.run([sys.executable, "-c", LOGGED], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TZ": "Pacific/Chatham"})  # +12:45 or +13:45: never UTC
    assert proc.returncode == 0 and proc.stdout == "carried on\n", proc.stderr  # a bad call raised to its caller
    for secret in ("S3cretPw", "SIGSECRET", "TOKENSECRET", "AKIAIOSFODNN7EXAMPLE", "SIGNEDHEX", "HunterPw", "KEYSECRET",
                   "BOTOCOREDEBUG", "BADCALLPW"):
        assert secret not in proc.stderr, (secret, proc.stderr)
    lines = proc.stderr
    # UTC with its Z, as every other time the commands write (it was the local time, no zone said)
    stamp = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z DEBUG fsspec.http: ", lines)
    assert stamp, lines
    logged = datetime.strptime(stamp.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc)
    assert abs(datetime.now(timezone.utc) - logged) < timedelta(minutes=5)
    assert "DEBUG fsspec.http: Retrieve file size for http://127.0.0.1:1/c.jpg?X-Amz-Signature=REDACTED&page=2\n" in lines
    assert "DEBUG s3fs: headers {'X-Amz-Security-Token': b'REDACTED', 'Authorization': b'REDACTED'}\n" in lines
    assert "x-amz-security-token:REDACTED\n" in lines
    assert "ERROR deepfakestream.scan: read failed for s3://b/k.mp4\nTraceback" in lines
    assert "OSError: cannot open simplecache::https://h/x?api-key=REDACTED\n" in lines  # the traceback's text too
    assert "INFO botocore.credentials: Found credentials in environment variables.\n" in lines
    assert "WARNING deepfakestream.scan: scanned 3 objects of s3://b/in/clip?token=A.mp4 in 1.5 s\n" in lines
    assert "WARNING somelib: progress %d%% of %s (arguments: ('half', 'http://h/x'))\n" in lines
