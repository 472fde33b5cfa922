"""Stopping a query (jobs/query/stop.py, jobs/query/sql.py's stream_query): Ctrl-C and SIGTERM interrupt DuckDB and
exit 130 / 143 as `scan` does, `--timeout` exits 1, each with its `query_failed` line; the signal handlers come back."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from jobs.query.errors import QueryStopped
from jobs.query.sql import run_query
from jobs.scan.output import OutputStore

ROOT = Path(__file__).resolve().parents[3]
LONG = "SELECT sum(hash(a.range + b.range)) FROM range(1000000) a, range(1000000) b"  # 10^12 rows: hours
BOUND_S = 30  # a stopped query ends well within this (DuckDB alone ignored Ctrl-C for minutes)


def _output(tmp_path) -> str:
    store = OutputStore(str(tmp_path / "out"))
    store.prepare()
    row = {"schema_version": 1, "scan_id": "s0", "uri": "/a.mp4", "fingerprint": "f", "label": "FAKE", "score": 0.9,
           "faces": 1, "tracks": 1, "model_version": "m", "scanned_at": datetime.now(timezone.utc)}
    store.commit("part-s0-00000", "2026-01-02", [row], [])
    return str(tmp_path / "out")


def _query(output: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jobs.cli", "query", "-o", output, LONG, *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler (Python installs none of its own): the query's stop is in place."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def _ended(proc: subprocess.Popen, within: float) -> tuple[int | None, str, str]:
    try:
        out, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return None, out, err
    return proc.returncode, out, err


@pytest.mark.parametrize("signum, status, said", [(signal.SIGINT, 130, "query_failed: interrupted\n"),
                                                  (signal.SIGTERM, 143, "query_failed: interrupted by SIGTERM\n")])
def test_ctrl_c_and_sigterm_stop_a_running_query(tmp_path, signum, status, said):
    proc = _query(_output(tmp_path))
    ready = time.monotonic() + 60
    while time.monotonic() < ready and proc.poll() is None and not _catches_sigterm(proc.pid):
        time.sleep(0.1)
    time.sleep(1.5)  # the query is running in DuckDB by now
    proc.send_signal(signum)
    signalled = time.monotonic()
    code, out, err = _ended(proc, BOUND_S)
    assert (code, err) == (status, said), (code, err[-2000:])
    assert time.monotonic() - signalled < BOUND_S and out == ""


def test_timeout_stops_a_query_with_exit_1(tmp_path):
    started = time.monotonic()
    code, out, err = _ended(_query(_output(tmp_path), "--timeout", "2"), BOUND_S + 30)
    assert (code, err) == (1, "query_failed: timed out after 2 s\n"), (code, err[-2000:])
    assert time.monotonic() - started < BOUND_S + 30 and out == ""  # no DuckDB progress bar on stdout either


def test_a_stopped_query_puts_the_signal_handlers_back(tmp_path):
    output = _output(tmp_path)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    with pytest.raises(QueryStopped) as stopped:
        run_query(output, LONG, timeout=0.5)
    assert str(stopped.value) == "timed out after 0.5 s" and stopped.value.status == 1
    assert stopped.value.code == "query_failed" and time.monotonic() - started < BOUND_S
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert run_query(output, "SELECT label FROM videos", timeout=60)[1] == [("FAKE",)]  # a query in time: its rows


def test_timeout_is_bounded_like_the_other_flags(tmp_path):
    from typer.testing import CliRunner

    from jobs.cli import app

    output = _output(tmp_path)
    for bad in ("0", "-1"):
        result = CliRunner().invoke(app, ["query", "SELECT 1", "-o", output, "--timeout", bad])
        assert result.exit_code == 2 and result.output.startswith("invalid_configuration: --timeout: "), result.output


def test_leaving_a_stream_early_ends_its_query(tmp_path):
    """The table format takes its first rows and leaves: the rest of the query is interrupted, not run to its end
    (nor run again on empty views, as a failed query is to tell the user's own mistakes)."""
    import threading

    from jobs.query.sql import stream_query

    endless = "SELECT range FROM range(1000000000000) WHERE range < 2048 OR range % 100000000 = 0"  # then hours
    started = time.monotonic()
    with stream_query(_output(tmp_path), endless, batch_rows=2048) as (columns, batches):
        assert columns == ["range"] and len(next(batches)) == 2048  # the next is being read when it leaves
    assert not [t for t in threading.enumerate() if t.name == "query" and t.is_alive()]
    assert time.monotonic() - started < 5
