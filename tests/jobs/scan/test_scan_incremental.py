"""What an incremental scan skips (jobs/scan/incremental.py, OutputStore.latest, the driver's ``_changed``): only
objects whose latest row (by ``scan_id``, then ``scanned_at``) has the listing's fingerprint and the model's
version, the row the ``videos`` view shows."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import jobs.scan.incremental as incremental
from jobs.scan.config import ScanConfig
from jobs.scan.driver import _changed, new_scan_id
from jobs.scan.output import OutputStore

from scan_fixtures import latest_rows

NIGHT = datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc)


def _scan_id(night: int) -> str:
    return new_scan_id(NIGHT + timedelta(days=night))


def _commit(store: OutputStore, night: int, rows: list[tuple], clock_skew_s: float = 0.0) -> str:
    """One night's scan: rows of (uri, fingerprint, model_version, label), produced on a worker whose clock is
    ``clock_skew_s`` off."""
    scan_id = _scan_id(night)
    at = NIGHT + timedelta(days=night, minutes=5, seconds=clock_skew_s)
    store.commit(f"part-{scan_id}-00000", (NIGHT + timedelta(days=night)).date().isoformat(), [
        {"schema_version": 3, "scan_id": scan_id, "uri": uri, "fingerprint": fp, "model_version": model,
         "label": label, "scanned_at": at} for uri, fp, model, label in rows], [])
    return scan_id


def _todo(store: OutputStore, listing: dict[str, str], model: str = "v1", **options) -> list[str]:
    entries = [{"uri": uri, "fingerprint": fp} for uri, fp in sorted(listing.items())]
    return [e["uri"] for e in _changed(store, entries, "now", model, ScanConfig(source="x", **options))]


@pytest.fixture()
def store(tmp_path) -> OutputStore:
    store = OutputStore(str(tmp_path / "out"))
    store.prepare()
    return store


def test_content_that_comes_back_under_its_key_is_scanned_again(store):
    _commit(store, 1, [("s3://b/in/x.mp4", "etag:A", "v1", "REAL")])
    _commit(store, 2, [("s3://b/in/x.mp4", "etag:B", "v1", "FAKE")])
    assert _todo(store, {"s3://b/in/x.mp4": "etag:A"}) == ["s3://b/in/x.mp4"]  # A re-uploaded: B's FAKE is stale
    assert _todo(store, {"s3://b/in/x.mp4": "etag:B"}) == []


def test_a_model_rollback_rescans(store):
    _commit(store, 1, [("s3://b/in/x.mp4", "etag:A", "v1", "REAL")])
    _commit(store, 2, [("s3://b/in/x.mp4", "etag:A", "v2", "FAKE")])
    assert _todo(store, {"s3://b/in/x.mp4": "etag:A"}, model="v1") == ["s3://b/in/x.mp4"]
    assert _todo(store, {"s3://b/in/x.mp4": "etag:A"}, model="v2") == []


def test_latest_is_by_scan_id_not_by_the_workers_clocks(store):
    """Night 2's worker clock runs a day behind night 1's: its row is still the latest."""
    assert _scan_id(1) < _scan_id(2) and _scan_id(2).startswith("20261129T020000Z-")  # the driver's start time
    _commit(store, 1, [("s3://b/in/x.mp4", "etag:A", "v1", "REAL")])
    _commit(store, 2, [("s3://b/in/x.mp4", "etag:B", "v1", "FAKE")], clock_skew_s=-2 * 86400)
    assert latest_rows(store) == {("s3://b/in/x.mp4", "etag:B", "v1"): "FAKE"}
    assert _todo(store, {"s3://b/in/x.mp4": "etag:B"}) == []


def test_retry_errors_rescans_only_a_latest_error(store):
    _commit(store, 1, [("/m/a.jpg", "f", "v1", "ERROR"), ("/m/b.jpg", "f", "v1", "ERROR")])
    _commit(store, 2, [("/m/b.jpg", "f", "v1", "REAL")])
    listing = {"/m/a.jpg": "f", "/m/b.jpg": "f", "/m/new.jpg": "f"}
    assert _todo(store, listing) == ["/m/new.jpg"]
    assert _todo(store, listing, retry_errors=True) == ["/m/a.jpg", "/m/new.jpg"]


def test_history_is_reduced_to_one_row_per_uri_under_the_prefix(store, monkeypatch):
    for night in range(1, 5):
        last = _commit(store, night, [("s3://b/in/x.mp4", f"etag:{night}", "v1", "REAL"),
                                      ("s3://b/in/y.mp4", "etag:Y", "v1", "FAKE"),
                                      ("s3://b/other/z.mp4", "etag:Z", "v1", "REAL")])
    monkeypatch.setattr(incremental, "FOLD_ROWS", 2)  # reduce after every part, as a long history would
    latest = store.latest("now", prefix="s3://b/in/")
    assert latest.column_names == incremental.COLUMNS
    assert [(r["uri"], r["fingerprint"], r["scan_id"]) for r in latest.to_pylist()] == [
        ("s3://b/in/x.mp4", "etag:4", last), ("s3://b/in/y.mp4", "etag:Y", last)]
    assert incremental.uri_prefix([{"uri": "s3://b/in/a/x.mp4"}, {"uri": "s3://b/in/b.mp4"}]) == "s3://b/in/"
    assert _todo(store, {"s3://b/in/x.mp4": "etag:4", "s3://b/in/y.mp4": "etag:Y"}) == []
