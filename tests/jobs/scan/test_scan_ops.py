"""The scan's nightly operation end to end, without Ray: a run with nothing new still writes its run record
(``running`` while it works, then ``succeeded``; ``not_started`` for a missing source), which query and report read;
and the record of a killed scan is ended (``killed``) by the scan that takes over its lapsed lease; a file name that
is not UTF-8 is counted (``unlisted``), not a crash."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime, timezone

import jobs.cli
import pytest

from scan_fixtures import _records


def test_a_scan_with_nothing_new_still_writes_its_run_record(detector_env, tmp_path, monkeypatch):
    import jobs.scan.driver
    import jobs.scan.errors
    from jobs.query.sql import run_query
    from jobs.report.text import report
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from pipeline.config import load_settings

    source, out = tmp_path / "media", tmp_path / "out"
    source.mkdir()
    (source / "notes.txt").write_text("not media\n")
    seen_while_running = []
    real_list = jobs.scan.driver.list_objects

    def list_and_look(*args, **kwargs):  # the record must say "running" while the scan works
        seen_while_running.extend(r["status"] for r in _records(out))
        assert json.loads((out / "_lease.json").read_text())["scan_id"]
        return real_list(*args, **kwargs)

    monkeypatch.setattr(jobs.scan.driver, "list_objects", list_and_look)
    summary = run_scan(load_settings(), ScanConfig(source=str(source), output=str(out), progress=False))
    assert seen_while_running == ["running"]
    (record,) = _records(out)
    assert (record["status"], record["exit_code"], record["scan_id"], record["swept"]) == ("succeeded", 0, summary.scan_id, True)
    assert (record["listed"], record["scanned"], record["source"]) == (0, 0, str(source))
    assert record["settings_digest"] and record["model_version"] == summary.model_version
    assert record["ended_at"] >= record["started_at"]
    assert not (out / "_lease.json").exists()

    with pytest.raises(jobs.scan.errors.ScanError):  # a source that is gone: exit 2, and a record saying why
        run_scan(load_settings(), ScanConfig(source=str(tmp_path / "gone"), output=str(out), progress=False))
    statuses = sorted((r["status"], r["exit_code"]) for r in _records(out))
    assert statuses == [("not_started", 2), ("succeeded", 0)]
    _columns, rows = run_query(str(out), "SELECT status, exit_code, listed FROM runs ORDER BY status")
    assert rows == [("not_started", 2, 0), ("succeeded", 0, 0)]
    data = report(str(out))
    assert [r["status"] for r in data["runs"]][-1] in ("succeeded", "not_started") and len(data["runs"]) == 2
    assert data["last_success"] is not None


def test_the_scan_that_takes_a_lapsed_lease_ends_the_killed_scans_record(detector_env, tmp_path):
    """A SIGKILLed scan leaves its record `running` and its lease to lapse: the next scan takes the lease over
    and ends that record as `killed` at its last sign of life, so "a running record older than the deadline"
    fires once, not forever. That is the latest of its last heartbeat, its committed rows' `scanned_at` and its parts'
    times (a lease is renewed every quarter of its term: a scan killed 16 s in ended at its start heartbeat, 0.012 s),
    and what it listed and skipped is what its `running` record said. A record that had ended is left alone."""
    from datetime import datetime, timedelta, timezone

    import fsspec

    from jobs.query.sql import run_query
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from jobs.scan.lease import OutputLease
    from jobs.scan.output import OutputStore
    from jobs.scan.records import RunRecord, record_bytes
    from pipeline.config import load_settings

    source, out = tmp_path / "media", tmp_path / "out"
    source.mkdir()
    store = OutputStore(str(out))
    store.prepare()
    started = datetime.now(timezone.utc) - timedelta(hours=3)
    ends = {}
    # each holds the lease in turn, writes its record and a part, and is killed: its lease lapses. The rows of one
    # were scanned 30 s after its last heartbeat, the part of the other written 45 s after it
    for scan_id, status, row_s, part_s in (("ended-one", "succeeded", None, None), ("killed-rows", "running", 30, None),
                                           ("killed-part", "running", None, 45)):
        OutputLease(fsspec.filesystem("file"), str(out), str(out), scan_id, ttl_s=0.05).acquire()
        beat = datetime.fromisoformat(json.loads((out / "_lease.json").read_text())["heartbeat_at"].replace("Z", "+00:00"))
        store.put(f"_runs/{scan_id}.json", record_bytes(RunRecord(scan_id=scan_id, status=status, source=str(source),
                                                                  output=str(out), started_at=started, model_version="m",
                                                                  settings_digest="d", listed=16, skipped=11)))
        store.commit(f"part-{scan_id}-00000", "2026-01-02", [{"schema_version": 4, "scan_id": scan_id, "uri": "/m/a.jpg",
                                                             "fingerprint": "f", "label": "REAL", "model_version": "m",
                                                             "scanned_at": beat + timedelta(seconds=row_s or -60)}], [])
        part = out / "videos" / "scan_date=2026-01-02" / f"part-{scan_id}-00000.parquet"
        os.utime(part, (at := (beat + timedelta(seconds=part_s or -60)).timestamp(), at))
        ends[scan_id] = beat + timedelta(seconds=row_s or part_s or 0)
        time.sleep(0.1)
        summary = run_scan(load_settings(), ScanConfig(source=str(source), output=str(out), progress=False))
    records = {r["scan_id"]: r for r in _records(out)}
    for scan_id in ("killed-rows", "killed-part"):
        killed = records[scan_id]
        assert (killed["status"], killed["exit_code"], killed["error_code"]) == ("killed", None, "killed")
        assert datetime.fromisoformat(killed["ended_at"].replace("Z", "+00:00")) == ends[scan_id], scan_id
        assert killed["elapsed_s"] == pytest.approx((ends[scan_id] - started).total_seconds(), abs=0.01)
        assert (killed["parts"], killed["scanned"], killed["labels"]) == (1, 1, {"REAL": 1})  # what it committed
        assert (killed["listed"], killed["skipped"]) == (16, 11)  # what its running record said
    assert summary.scan_id in records["killed-part"]["message"]
    assert records["ended-one"]["status"] == "succeeded" and records["ended-one"]["ended_at"] is None
    _columns, rows = run_query(str(out), "SELECT status FROM runs WHERE scan_id LIKE 'killed-%'")
    assert rows == [("killed",), ("killed",)]


def test_a_final_run_record_the_output_refuses_fails_the_scan_and_the_next_scan_ends_it(detector_env, tmp_path,
                                                                                        monkeypatch):
    """A full disk took the `running` record and refused the final one: that scan exited 0 (`succeeded`,
    record_written false) and its record said `running` forever, as the next scans (holding a lease that had been
    released, not lapsed) never looked. Now it exits 2 (`output_error`), and the next scan, holding the lease, ends
    every record still `running` as `killed` (end unknown: null), counting what that scan committed."""
    import jobs.scan.driver
    from jobs.query.sql import run_query
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from jobs.scan.output import OutputStore
    from pipeline.config import load_settings
    from typer.testing import CliRunner

    source, out = tmp_path / "media", tmp_path / "out"
    source.mkdir()
    running: dict = {}
    real_list = jobs.scan.driver.list_objects

    def refuse_the_final_record(*args, **kwargs):  # while the scan works: its record's place takes no file now
        (path,) = [p for p in (out / "_runs").glob("*.json") if p.is_file() and p not in running]
        running[path] = path.read_bytes()
        path.unlink()
        (path / "not-a-file").mkdir(parents=True)
        return real_list(*args, **kwargs)

    monkeypatch.setattr(jobs.scan.driver, "list_objects", refuse_the_final_record)
    summary = run_scan(load_settings(), ScanConfig(source=str(source), output=str(out), progress=False))
    assert (summary.status, summary.exit_code, summary.error_code, summary.record_written) == (
        "output_error", 2, "output_error", False)
    assert f"_runs/{summary.scan_id}.json" in summary.message and "committed" in summary.message
    cli = CliRunner().invoke(jobs.cli.app, ["scan", str(source), "-o", str(out), "--no-progress"])
    assert cli.exit_code == 2, cli.output  # the command exits with it, and does not point at a record it has not
    assert "could not be written" in cli.stderr and "run record: _runs/" not in cli.stderr
    monkeypatch.setattr(jobs.scan.driver, "list_objects", real_list)
    for path, data in running.items():  # what a full disk leaves: the `running` record, no final one
        shutil.rmtree(path)
        path.write_bytes(data)
    stuck = summary.scan_id
    rows = [{"schema_version": 5, "scan_id": stuck, "uri": f"/m/{name}", "fingerprint": "f", "label": label,
             "error_code": code, "model_version": "m", "scanned_at": datetime.now(timezone.utc)}
            for name, label, code in (("a.jpg", "REAL", None), ("b.mp4", "ERROR", "worker_lost"))]
    OutputStore(str(out)).commit(f"part-{stuck}-00000", "2026-01-02", rows, [])  # what it had committed

    after = run_scan(load_settings(), ScanConfig(source=str(source), output=str(out), progress=False))
    records = {r["scan_id"]: r for r in _records(out)}
    ended = records[stuck]
    assert (ended["status"], ended["exit_code"], ended["error_code"], ended["ended_at"]) == ("killed", None, "killed", None)
    assert after.scan_id in ended["message"] and "refused its final record" in ended["message"]
    assert (ended["parts"], ended["scanned"], ended["lost"], ended["labels"], ended["errors"]) == (
        1, 2, 1, {"REAL": 1, "ERROR": 1}, {"worker_lost": 1})
    assert sorted(r["status"] for r in records.values()) == ["killed", "killed", "succeeded"]  # the CLI's run too
    assert records[after.scan_id]["status"] == "succeeded"
    _columns, still = run_query(str(out), "SELECT scan_id FROM runs WHERE status = 'running'")
    assert still == []  # docs/scan.md's alert on an old `running` record fires no more


def test_a_file_name_that_is_not_utf8_no_longer_crashes_the_scan_and_is_counted(detector_env, tmp_path):
    """`caf\\xe9.jpg` (a Latin-1 name) made every scan of its folder crash (scan_crashed: UnicodeEncodeError in the
    skip rule's Arrow array of URIs), so nothing there was scanned, every night. It is left out and counted
    (`unlisted`, in the summary, the run record and the `runs` view); here it is the only file, so no Ray starts."""
    from jobs.query.sql import run_query
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from pipeline.config import load_settings

    source, out = tmp_path / "media", tmp_path / "out"
    source.mkdir()
    with open(os.fsencode(source) + b"/caf\xe9.jpg", "wb") as handle:
        handle.write(b"\xff\xd8\xff not scanned")
    summary = run_scan(load_settings(), ScanConfig(source=str(source), output=str(out), progress=False))
    assert (summary.status, summary.exit_code, summary.seen, summary.unlisted) == ("succeeded", 0, 0, 1)
    (record,) = _records(out)
    assert (record["status"], record["listed"], record["unlisted"]) == ("succeeded", 0, 1)
    assert run_query(str(out), "SELECT unlisted FROM runs")[1] == [(1,)]
    import jobs.cli
    from typer.testing import CliRunner

    cli = CliRunner().invoke(jobs.cli.app, ["scan", str(source), "-o", str(out), "--no-progress"])
    assert cli.exit_code == 0 and "1 not listed" in cli.stderr, cli.output  # the person reading it is told too


def test_the_lease_is_kept_alive_through_the_start_up_reads(detector_env, tmp_path, monkeypatch):
    """Listing and reading run records on a slow store took longer than the lease while nothing renewed it, and a
    second scan took the output over and ran beside the first: the reads now run inside ``kept_alive``."""
    import fsspec

    import jobs.scan.driver
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from jobs.scan.lease import LeaseHeld, OutputLease
    from pipeline.config import load_settings

    source, out = tmp_path / "media", tmp_path / "out"
    source.mkdir()
    real_paths, tries = jobs.scan.driver.record_paths, []

    def slow_store(fs, root):
        time.sleep(2.5)  # 2.5 leases of 1 s
        try:
            OutputLease(fsspec.filesystem("file"), str(out), str(out), "the-other-scan", ttl_s=1).acquire()
            tries.append("taken")
        except LeaseHeld:
            tries.append("busy")
        return real_paths(fs, root)

    monkeypatch.setattr(jobs.scan.driver, "record_paths", slow_store)
    summary = run_scan(load_settings(), ScanConfig(source=str(source), output=str(out), progress=False, lease_seconds=1))
    assert tries == ["busy"] and summary.status == "succeeded"


@pytest.mark.parametrize("where", ["local", "s3"])
def test_objects_gone_from_the_source_get_a_tombstone_and_leave_the_current_state(where, detector_env, tmp_path,
                                                                                 s3_server, s3_bucket, monkeypatch):
    """A deleted file, a renamed one (its old name) and a `not_found` ERROR for one deleted kept their last rows in
    the `videos` view for ever (the report said 32 objects where the bucket held 27; --retry-errors could not clear
    the error: it was no longer listed). Now a scan whose listing vouches for them writes a tombstone each (label
    DELETED), counted in `deleted`; the views leave them out, the history keeps them. Not marked: what the filters
    leave out, what is beside the source (`inbox/` beside `in`), what is under a folder the listing could not read; a
    second scan, SOURCE with a trailing slash, marks nothing more. The `running` record says what was listed first."""
    import boto3

    import jobs.scan.driver
    import jobs.scan.records
    from jobs.query.sql import run_query
    from jobs.report.text import report
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from jobs.scan.listing import list_objects, storage_options_for
    from jobs.scan.output import OutputStore
    from pipeline.card import pack_checkpoint
    from pipeline.config import load_settings

    out = tmp_path / "out"
    present = {"in/a.jpg": b"\xff\xd8\xff a", "in/sub/b.jpg": b"\xff\xd8\xff b", "in/locked/c.jpg": b"\xff\xd8\xff c"}
    if where == "local":
        for key, data in present.items():
            (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / key).write_bytes(data)
        base = str(tmp_path)
        real_scandir = os.scandir

        def scandir(path="."):  # in/locked cannot be read (as root too): the listing leaves it out and counts it
            if os.fspath(path) == f"{base}/in/locked":
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
    else:
        client = boto3.client("s3", endpoint_url=s3_server["endpoint_url"])
        for key, data in present.items():
            client.put_object(Bucket=s3_bucket, Key=key, Body=data)
        base = f"s3://{s3_bucket}"
    listing = {e["uri"]: e["fingerprint"] for e in list_objects(f"{base}/in", storage_options_for(base))}
    model = pack_checkpoint(load_settings().classify.checkpoint)[0].version
    now = datetime.now(timezone.utc)
    rows = [(uri, fp, "REAL", None) for uri, fp in listing.items()] + [
        (f"{base}/in/gone.jpg", "f1", "REAL", None), (f"{base}/in/old-name.jpg", "f2", "FAKE", None),
        (f"{base}/in/err.jpg", "f3", "ERROR", "not_found"),  # listed, then deleted before it was read
        (f"{base}/in/gone.png", "f4", "REAL", None),  # --ext .jpg: not this scan's
        (f"{base}/inbox/x.jpg", "f5", "REAL", None)]  # beside the source, not under it
    if where == "local":  # under a folder the listing could not read
        rows.append((f"{base}/in/locked/c.jpg", "f6", "REAL", None))
    store = OutputStore(str(out))
    store.prepare()
    store.commit("part-20260101T000000Z-aaaaaa-00000", "2026-01-01", [
        {"schema_version": 5, "scan_id": "20260101T000000Z-aaaaaa", "uri": uri, "fingerprint": fp, "label": label,
         "error_code": code, "error": code, "model_version": model, "scanned_at": now} for uri, fp, label, code in rows],
        [{"schema_version": 5, "scan_id": "20260101T000000Z-aaaaaa", "uri": f"{base}/in/gone.jpg", "face": 0, "frame": 0,
          "model_version": model, "scanned_at": now}])
    written, real_write = [], jobs.scan.records.write_record

    def write_record(store, record):
        written.append((record.status, record.listed, record.skipped))
        real_write(store, record)

    monkeypatch.setattr(jobs.scan.driver, "write_record", write_record)
    summary = run_scan(load_settings(), ScanConfig(source=f"{base}/in", output=str(out), progress=False,
                                                   extensions=(".jpg",)))
    listed = 2 if where == "local" else 3
    assert (summary.status, summary.seen, summary.skipped, summary.scanned, summary.deleted, summary.parts) == (
        "succeeded", listed, listed, 0, 3, 1)
    assert summary.unlisted == (1 if where == "local" else 0)
    assert written == [("running", 0, 0), ("running", listed, listed), ("succeeded", listed, listed)]
    (record,) = [r for r in _records(out) if r["scan_id"] == summary.scan_id]
    assert (record["deleted"], record["scanned"], record["labels"]) == (3, 0, {})
    current = [uri for (uri,) in run_query(str(out), "SELECT uri FROM videos ORDER BY uri")[1]]
    assert current == sorted({*listing, f"{base}/in/gone.png", f"{base}/in/locked/c.jpg", f"{base}/inbox/x.jpg"})
    tombs = run_query(str(out), "SELECT uri, fingerprint, model_version, scan_id, size, score FROM videos_history "
                                "WHERE label = 'DELETED' ORDER BY uri")[1]
    assert tombs == [(f"{base}/in/{name}", fp, model, summary.scan_id, None, None)
                     for name, fp in (("err.jpg", "f3"), ("gone.jpg", "f1"), ("old-name.jpg", "f2"))]
    assert run_query(str(out), "SELECT count(*) FROM faces")[1] == [(0,)]  # gone.jpg's face went with it
    assert run_query(str(out), f"SELECT deleted FROM runs WHERE scan_id = '{summary.scan_id}'")[1] == [(3,)]
    data = report(str(out))
    assert (data["objects"], data["errors"], data["fakes"]) == (len(current), 0, 0)  # the not_found error is gone
    assert next(r for r in data["runs"] if r["scan_id"] == summary.scan_id)["deleted"] == 3  # its recent-runs row

    again = run_scan(load_settings(), ScanConfig(source=f"{base}/in/", output=str(out), progress=False,
                                                 extensions=(".jpg",)))
    assert (again.status, again.deleted, again.parts) == ("succeeded", 0, 0)
    if where == "s3":  # s3fs lists `//in` as `in/`: another spelling of the root vouches for nothing, skips as before
        other = run_scan(load_settings(), ScanConfig(source=f"{base}//in", output=str(out), progress=False,
                                                     extensions=(".jpg",)))
        assert (other.status, other.seen, other.skipped, other.scanned, other.deleted) == ("succeeded", 3, 3, 0, 0)


def test_a_source_that_lost_most_of_its_objects_or_a_dangling_link_marks_none_deleted(detector_env, tmp_path):
    """An unmounted volume (an empty folder, a link that dangles), a half-done sync: such a listing marked every
    object under it DELETED and their verdicts left the current state, exit 0. Now nothing under a dangling link is
    gone, and past scan.max_deleted_share of the source's objects none is marked (held, said); --max-deleted-share 1
    marks them."""
    from jobs.query.sql import run_query
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from jobs.scan.listing import list_objects
    from jobs.scan.output import OutputStore
    from pipeline.card import pack_checkpoint
    from pipeline.config import load_settings

    source, out = tmp_path / "in", tmp_path / "out"
    (source / "kept").mkdir(parents=True)
    (source / "kept" / "a.jpg").write_bytes(b"\xff\xd8\xff a")
    (source / "mnt").symlink_to(tmp_path / "volume")  # the volume is not mounted: the link dangles
    listing = {e["uri"]: e["fingerprint"] for e in list_objects(str(source), {})}
    model = pack_checkpoint(load_settings().classify.checkpoint)[0].version
    store = OutputStore(str(out))
    store.prepare()

    def rows(scan_id: str, named: dict[str, str]) -> None:  # an earlier scan's REAL verdicts
        store.commit(f"part-{scan_id}-00000", "2026-01-01", [
            {"schema_version": 6, "scan_id": scan_id, "uri": uri, "fingerprint": fp, "label": "REAL",
             "model_version": model, "scanned_at": datetime.now(timezone.utc)} for uri, fp in named.items()], [])

    def scan(**options):
        return run_scan(load_settings(), ScanConfig(source=str(source), output=str(out), progress=False, **options))

    under_link = {f"{source}/mnt/x{i}.jpg": f"m{i}" for i in range(3)}
    rows("20260101T000000Z-aaaaaa", {**listing, **under_link, **{f"{source}/kept/gone{i}.jpg": f"g{i}" for i in range(2)}})
    first = scan()  # 2 gone of 6 current: marked; the dangling link's 3 are not known to be gone
    assert (first.status, first.deleted, first.deletions_held) == ("succeeded", 2, 0)
    assert [u for (u,) in run_query(str(out), "SELECT uri FROM videos ORDER BY uri")[1]] == sorted({*listing, *under_link})

    rows("20260102T000000Z-bbbbbb", {f"{source}/kept/more{i}.jpg": f"n{i}" for i in range(5)})
    held = scan()  # 5 gone of 9 current, over the default 0.5: none marked, said
    assert (held.status, held.deleted, held.deletions_held, held.exit_code) == ("succeeded", 0, 5, 0)
    assert run_query(str(out), f"SELECT deleted, deletions_held FROM runs WHERE scan_id = '{held.scan_id}'")[1] == [(0, 5)]
    assert run_query(str(out), "SELECT count(*) FROM videos")[1] == [(9,)]
    marked = scan(max_deleted_share=1.0)
    assert (marked.deleted, marked.deletions_held) == (5, 0)
    assert run_query(str(out), "SELECT count(*) FROM videos")[1] == [(4,)]
