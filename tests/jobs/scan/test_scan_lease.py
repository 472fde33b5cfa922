"""The output lease (jobs/scan/lease.py): it excludes a second scan, its writes are conditional, its heartbeat keeps
it, a busy output exits 3; and its own deadline: a scan whose renewals keep failing (S3 throttling) or whose
machine was paused stops committing before its lease may lapse, even though nobody took the output over.
Failures are injected into a real filesystem's calls (local, and s3fs against the local S3 server)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest
from typer.testing import CliRunner

import jobs.scan.lease as lease_module
from jobs.scan.cas import Contended
from jobs.scan.lease import SAFETY, LeaseHeld, LeaseLost, OutputLease
from jobs.scan.output import OutputStore

from scan_fixtures import _app

ROW = {"schema_version": 3, "scan_id": "s", "uri": "/media/a.mp4", "fingerprint": "size:1:mtime:0", "label": "REAL",
       "model_version": "m"}


def _fs(where: str, tmp_path, s3_server, s3_bucket):
    import fsspec

    if where == "local":
        return fsspec.filesystem("file"), str(tmp_path / "out")
    return fsspec.filesystem("s3", **s3_server["storage_options"]), f"{s3_bucket}/out"


def _throttle(monkeypatch, fs, where: str) -> None:
    """Every renewal fails as a throttled store fails it: locally the read, on S3 the conditional PUT."""
    def slow_down(*args, **kwargs):
        raise OSError("SlowDown: please reduce your request rate")

    monkeypatch.setattr(fs, "cat_file" if where == "local" else "pipe_file", slow_down)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_failing_renewals_stop_the_scan_before_its_lease_lapses(where, tmp_path, s3_server, s3_bucket, monkeypatch):
    fs, root = _fs(where, tmp_path, s3_server, s3_bucket)
    lease = OutputLease(fs, root, root, "A", ttl_s=2.0)
    lease.acquire()
    acquired = time.monotonic()
    _throttle(monkeypatch, fs, where)
    with lease.kept_alive():
        lease.check()  # just taken: ours
        time.sleep(max(0.0, acquired + 2.0 * (1 - SAFETY) + 0.1 - time.monotonic()))
        with pytest.raises(LeaseLost, match="not renewed"):
            lease.check()
    assert lease.lost is None  # nobody took it over: its own deadline passed
    monkeypatch.undo()
    lease.release()  # still ours in storage: deleted
    fs.invalidate_cache()
    assert not fs.exists(f"{root}/_lease.json")


def test_working_renewals_keep_the_deadline_ahead(tmp_path):
    import fsspec

    fs, root = fsspec.filesystem("file"), str(tmp_path / "out")
    lease = OutputLease(fs, root, root, "A", ttl_s=1.0)
    lease.acquire()
    with lease.kept_alive():
        time.sleep(2.0)  # twice the ttl: renewed every quarter of it
        lease.check()
    lease.release()


def test_a_paused_machine_finds_its_lease_past_its_deadline(tmp_path, monkeypatch):
    """A frozen VM renews nothing while it is stopped; when it runs again, its first check refuses."""
    import fsspec

    fs, root = fsspec.filesystem("file"), str(tmp_path / "out")
    lease = OutputLease(fs, root, root, "A", ttl_s=120.0)
    lease.acquire()
    lease.check()
    real = lease_module._clock
    monkeypatch.setattr(lease_module, "_clock", lambda: real() + 120.0 * (1 - SAFETY))
    with pytest.raises(LeaseLost, match="not renewed for 90 s"):
        lease.check()
    lease.renew()  # the lease is still ours in storage: a successful renewal makes it safe again
    lease.check()
    lease.release()


def test_the_lease_is_checked_before_the_videos_part_too(tmp_path):
    """A deadline passing while the faces part is written stops the commit before its videos part: the object
    stays unscanned (no videos row) and the faces part is ignored by readers and deleted by the next scan."""
    store = OutputStore(str(tmp_path / "out"))
    store.prepare()
    checks = []

    def check():
        checks.append(sorted(store.list_parts("faces")))
        if len(checks) == 2:
            raise LeaseLost("stopped: the lease was not renewed")

    with pytest.raises(LeaseLost):
        store.commit("part-s-00000", "2026-01-02", [{**ROW, "scanned_at": datetime.now(timezone.utc)}], [], check=check)
    assert checks == [[], ["part-s-00000.parquet"]]
    assert store.list_parts("videos") == {}


@pytest.mark.slow
def test_a_scan_whose_renewals_fail_commits_nothing_after_its_deadline(ray_session, tmp_path, samples_dir, monkeypatch):
    """The driver checks the lease at each commit: with a 1 s lease that cannot be renewed, the first commit
    (seconds later: Ray's actors load the models first) is refused, the scan ends `lease_lost` (exit 1)."""
    import shutil

    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from pipeline.config import load_settings

    source, out = tmp_path / "media", tmp_path / "out"
    source.mkdir()
    shutil.copy(samples_dir / "coffee.jpg", source / "a.jpg")

    def throttled(self):
        raise OSError("SlowDown: please reduce your request rate")

    monkeypatch.setattr(OutputLease, "renew", throttled)
    options = ScanConfig(source=str(source), output=str(out), progress=False, lease_seconds=1.0, commit_every=1)
    with pytest.raises(LeaseLost, match="not renewed"):
        run_scan(load_settings(**{"decode.num_frames": 2}), options)
    assert not list((out / "videos").rglob("*.parquet"))
    (record,) = [json.loads(p.read_text()) for p in (out / "_runs").glob("*.json")]
    assert (record["status"], record["exit_code"], record["parts"]) == ("lease_lost", 1, 0)


def _lease_cases(tmp_path, s3_server, s3_bucket) -> list[tuple]:
    import fsspec

    local = fsspec.filesystem("file")
    s3 = fsspec.filesystem("s3", **s3_server["storage_options"])
    return [(local, str(tmp_path / "out")), (s3, f"{s3_bucket}/out")]


def test_lease_excludes_a_second_scan_and_lapses_when_not_renewed(tmp_path, s3_server, s3_bucket):
    for fs, root in _lease_cases(tmp_path, s3_server, s3_bucket):
        first = OutputLease(fs, root, root, "scan-A", ttl_s=1.0)
        first.acquire()
        second = OutputLease(fs, root, root, "scan-B", ttl_s=1.0)
        with pytest.raises(LeaseHeld, match="in use by scan scan-A"):
            second.acquire()
        time.sleep(1.1)  # scan-A was killed: nobody renews its lease
        second.acquire()
        first.renew()
        assert first.lost and "scan-B" in first.lost
        with pytest.raises(LeaseLost):
            first.check()
        first.release()  # must not delete scan-B's lease
        assert json.loads(fs.cat_file(f"{root}/_lease.json"))["scan_id"] == "scan-B"
        second.release()
        assert not fs.exists(f"{root}/_lease.json")


def test_s3_lease_writes_are_conditional(s3_server, s3_bucket):
    """Two scans that both read "no lease" cannot both win: the second create and a stale replace fail."""
    import fsspec

    fs = fsspec.filesystem("s3", **s3_server["storage_options"])
    root = f"{s3_bucket}/out"
    winner, loser = OutputLease(fs, root, root, "A"), OutputLease(fs, root, root, "B")
    winner.acquire()
    at = datetime.now(timezone.utc)
    with pytest.raises(Contended):
        loser._write(loser._info(at), exists=False, etag=None)
    with pytest.raises(Contended):
        loser._write(loser._info(at), exists=True, etag='"0123456789abcdef0123456789abcdef"')
    assert json.loads(fs.cat_file(f"{root}/_lease.json"))["scan_id"] == "A"


def test_heartbeat_keeps_the_lease_past_its_ttl(tmp_path):
    import fsspec

    fs, root = fsspec.filesystem("file"), str(tmp_path / "out")
    lease = OutputLease(fs, root, root, "A", ttl_s=0.6)
    lease.acquire()
    first_expiry = json.loads(fs.cat_file(f"{root}/_lease.json"))["expires_at"]
    with lease.kept_alive():
        time.sleep(1.5)
        with pytest.raises(LeaseHeld):
            OutputLease(fs, root, root, "B", ttl_s=0.6).acquire()
    assert json.loads(fs.cat_file(f"{root}/_lease.json"))["expires_at"] > first_expiry
    lease.release()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_scan_on_a_busy_output_exits_3_with_one_line(where, detector_env, tmp_path, samples_dir, s3_server, s3_bucket):
    import fsspec

    if where == "local":
        fs, root, output = fsspec.filesystem("file"), str(tmp_path / "out"), str(tmp_path / "out")
    else:
        fs, root = fsspec.filesystem("s3", **s3_server["storage_options"]), f"{s3_bucket}/out"
        output = f"s3://{root}"
    holder = OutputLease(fs, root, output, "the-nightly-run", ttl_s=60)
    holder.acquire()
    result = CliRunner().invoke(_app(), ["scan", str(samples_dir), "-o", output, "--no-progress"])
    assert result.exit_code == 3, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("output_busy: ") and "the-nightly-run" in lines[0], result.output
    assert not fs.exists(f"{root}/_deepfakestream.json")  # nothing of DEST was touched
    records = [json.loads(fs.cat_file(p)) for p in fs.find(f"{root}/_runs")]
    assert [(r["status"], r["exit_code"]) for r in records] == [("busy", 3)]
    holder.release()


def test_a_scan_stopped_by_its_own_deadline_leaves_the_new_holders_lease(tmp_path):
    """A froze past its lease, B took the output; A's check stops it (no renewal told it it lost), and its
    release on the way out must not delete B's lease (a third scan could then start beside B)."""
    import fsspec

    fs, root = fsspec.filesystem("file"), str(tmp_path / "out")
    first = OutputLease(fs, root, root, "scan-A", ttl_s=0.5)
    first.acquire()
    time.sleep(0.6)
    second = OutputLease(fs, root, root, "scan-B", ttl_s=60)
    second.acquire()
    with pytest.raises(LeaseLost):
        first.check()
    first.release()
    assert json.loads(fs.cat_file(f"{root}/_lease.json"))["scan_id"] == "scan-B"
