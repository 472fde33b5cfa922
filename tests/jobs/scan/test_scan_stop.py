"""SIGTERM handling (jobs/scan/stop.py): held during a commit and raised after it, in-process; and a real
`deepfakestream scan` subprocess that commits its finished rows and run record, then exits 143."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from jobs.scan.output import OutputStore

from scan_fixtures import _records, latest_rows


def test_sigterm_is_held_during_a_commit_and_raised_after_it():
    from jobs.scan.stop import GracefulStop, Terminated

    stop = GracefulStop(grace_s=30)
    stop.install()
    try:
        done = []
        with pytest.raises(Terminated):
            with stop.critical():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.1)  # the handler has run by now; the commit goes on
                done.append("committed")
        assert done == ["committed"] and stop.requested
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) is not stop._handle


def test_a_second_sigterm_and_one_in_the_last_step_raise_nothing_more(monkeypatch):
    """After the first SIGTERM's ``Terminated`` the clean-up runs: a second SIGTERM must not cut it (the watchdog
    bounds it). One inside ``critical(then_stop=False)`` (the scan's last step) is not raised after it either."""
    from jobs.scan.stop import GracefulStop, Terminated

    monkeypatch.setattr(GracefulStop, "_expire", lambda self: None)  # a watchdog left over must not end pytest
    stop = GracefulStop(grace_s=30)
    stop.install()
    try:
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
        try:  # a KeyboardInterrupt let out would end the whole session, not fail this test
            os.kill(os.getpid(), signal.SIGTERM)  # during the clean-up
            time.sleep(0.1)
        except Terminated:
            pytest.fail("a second SIGTERM cut the clean-up short")
    finally:
        stop.restore()
    last = GracefulStop(grace_s=30)
    last.install()
    try:
        with last.critical(then_stop=False):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
        assert last.requested
    except Terminated:
        pytest.fail("a SIGTERM in the scan's last step was raised after it")
    finally:
        last.restore()


@pytest.mark.slow
def test_sigterm_commits_finished_rows_and_the_run_record(detector_env, tmp_path, samples_dir):
    """A real `deepfakestream scan` process (its own Ray) gets SIGTERM after its first commit: it commits
    what is finished, writes a `terminated` run record, releases the lease and exits 143 promptly."""
    import shutil

    source, out = tmp_path / "media", tmp_path / "out"
    source.mkdir()
    for i in range(12):
        shutil.copy(samples_dir / ("astronaut.jpg" if i % 2 else "coffee.jpg"), source / f"img{i:02d}.jpg")
    env = {**os.environ, "DFS_DECODE__NUM_FRAMES": "2", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "scan", str(source), "-o", str(out), "--no-progress",
                             "--num-cpus", "2", "--commit-every", "1", "--classify-batch", "1", "--stop-timeout", "30", "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list((out / "videos").rglob("part-*.parquet")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no commit within 240 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        stdout, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr
    assert took < 35, f"exited {took:.1f} s after SIGTERM"
    assert "terminated: stopped (SIGTERM)" in stderr and "Traceback" not in stderr
    (record,) = _records(out)
    assert (record["status"], record["exit_code"]) == ("terminated", 143)
    (line,) = stdout.splitlines()  # the summary alone: Ray's "(raylet) Task … failed" lines go to stderr
    summary = json.loads(line)
    assert summary["status"] == "terminated"
    rows = latest_rows(OutputStore(str(out)))
    assert 1 <= record["scanned"] == len(rows) < 12 and record["parts"] == len(list((out / "videos").rglob("*.parquet")))
    # the time it scanned, and its rate over it (they said 0.0 after 36 s of scanning)
    assert 0 < summary["scan_s"] < summary["elapsed_s"] and summary["scanned"] == record["scanned"]
    assert summary["videos_per_s"] == round(summary["scanned"] / summary["scan_s"], 3) > 0
    assert not (out / "_lease.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigterm_while_ray_starts_is_a_stop_not_a_crash(detector_env, tmp_path, samples_dir):
    """`ray.init` (about 10 s) puts in its own SIGTERM handler, a bare `sys.exit(15)`: a SIGTERM then must still end
    the scan as a stop (exit 143, one `--json` line, a `terminated` record), not as status 15 and a crashed record."""
    import json
    import shutil

    from helpers import process_title, process_tree

    source, out = tmp_path / "media", tmp_path / "out"
    source.mkdir()
    shutil.copy(samples_dir / "coffee.jpg", source / "a.jpg")
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "scan", str(source), "-o", str(out), "--no-progress",
                             "--json", "--num-cpus", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any("gcs_server" in process_title(pid) for pid in process_tree(proc.pid)[1:]):  # Ray is starting
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "Ray never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not [line for line in stderr.splitlines() if line.startswith("plan: ")], "SIGTERM came after Ray started"
    assert proc.returncode == 143, stderr[-3000:]
    (line,) = stdout.splitlines()
    summary = json.loads(line)
    assert (summary["status"], summary["exit_code"], summary["error_code"]) == ("terminated", 143, "terminated")
    (record,) = _records(out)
    assert (record["status"], record["exit_code"], record["scan_id"]) == ("terminated", 143, summary["scan_id"])
    assert not (out / "_lease.json").exists()


def test_sigterm_that_lands_inside_ray_get_is_still_terminated(ray_session, tmp_path, samples_dir, monkeypatch):
    """Ray's ray.get catches the KeyboardInterrupt our SIGTERM handler raises (``Terminated``) and raises a bare
    KeyboardInterrupt in its place; most of a scan waits inside Ray, so a SIGTERM (`ray job stop`, a pod deleted)
    ended it as `interrupted`, exit 130, not `terminated`, 143. Here the scan's work is one real ray.get."""
    import shutil
    import threading

    import jobs.scan.driver as driver
    from jobs.scan.config import ScanConfig
    from jobs.scan.stop import Terminated
    from pipeline.config import load_settings
    from scan_fixtures import _records

    @ray_session.remote
    def slow() -> int:
        time.sleep(30)
        return 0

    sent = []

    def waits_in_ray(*_args, **_kwargs) -> None:
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
        sent.append(slow.remote())
        ray_session.get(sent[0])

    monkeypatch.setattr(driver, "_scan", waits_in_ray)
    (tmp_path / "src").mkdir()
    shutil.copy(samples_dir / "coffee.jpg", tmp_path / "src")
    ended = []
    try:
        with pytest.raises(KeyboardInterrupt) as stopped:
            driver.run_scan(load_settings(), ScanConfig(source=str(tmp_path / "src"), output=str(tmp_path / "out"),
                                                        progress=False), on_end=ended.append)
    finally:
        for ref in sent:
            ray_session.cancel(ref, force=True)  # its CPU back to the session's other tests
    assert type(stopped.value) is Terminated  # what the command turns into exit 143 and `terminated: …`
    (record,) = _records(tmp_path / "out")
    assert (record["status"], record["exit_code"]) == (ended[0].status, ended[0].exit_code) == ("terminated", 143)
