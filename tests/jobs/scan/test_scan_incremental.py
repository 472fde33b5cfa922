"""What an incremental scan skips and in which order (jobs/scan/incremental.py, OutputStore.latest, the driver's
``_work``): only objects whose latest row (by ``scan_id``, then ``scanned_at``) has the listing's fingerprint, the
model's version and the scoring key (a row without one matches), the row the ``videos`` view shows; a capped run
takes new objects first, then changed ones, then rescans oldest first."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import jobs.scan.incremental as incremental
from jobs.scan.config import ScanConfig
from jobs.scan.driver import _work
from jobs.scan.ids import new_scan_id
from jobs.scan.output import OutputStore

from scan_fixtures import latest_rows, read_table

NIGHT = datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc)


def _scan_id(night: int) -> str:
    return new_scan_id(NIGHT + timedelta(days=night))


def _commit(store: OutputStore, night: int, rows: list[tuple], clock_skew_s: float = 0.0, key: str | None = None) -> str:
    """One night's scan: rows of (uri, fingerprint, model_version, label[, error_code]), produced on a worker whose
    clock is ``clock_skew_s`` off, with scoring key ``key`` (None: a row written before the key existed)."""
    scan_id = _scan_id(night)
    at = NIGHT + timedelta(days=night, minutes=5, seconds=clock_skew_s)
    store.commit(f"part-{scan_id}-00000", (NIGHT + timedelta(days=night)).date().isoformat(), [
        {"schema_version": 3, "scan_id": scan_id, "uri": uri, "fingerprint": fp, "model_version": model,
         "scoring_key": key, "label": label, "error_code": code[0] if code else None, "scanned_at": at}
        for uri, fp, model, label, *code in rows], [])
    return scan_id


def _why(store: OutputStore, listing: dict[str, str], model: str = "v1", key: str = "K", **options) -> list[tuple[str, str]]:
    """(uri, why) of what a scan of ``listing`` takes, in its order."""
    entries = [{"uri": uri, "fingerprint": fp} for uri, fp in sorted(listing.items())]
    return [(e["uri"], why) for e, why in _work(store, entries, "now", model, key, ScanConfig(source="x", **options))[0]]


def _todo(store: OutputStore, listing: dict[str, str], model: str = "v1", key: str = "K", **options) -> list[str]:
    return [uri for uri, _why in _why(store, listing, model, key, **options)]


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
    assert _todo(store, listing, retry_errors=True) == ["/m/new.jpg", "/m/a.jpg"]  # new first


def test_retry_errors_rescans_only_errors_a_retry_can_change(store):
    """An unchanged `media_corrupt` failed again every --retry-errors night (and with the error-rate rule, one corrupt
    upload made a quiet night exit 4 for ever): only errors of the store, the server, the worker or our code are
    retried (pipeline.errors.ROW_CODES); the media's own wait for new content, or --full."""
    from pipeline.errors import ROW_CODES

    codes = ["media_corrupt", "media_empty", "unsupported_media", "no_video_stream", "media_too_large", "not_found",
             "storage_error", "access_denied", "worker_lost", "out_of_memory", "decode_failed", "detect_failed", "error",
             None]  # None: a row written before codes existed
    _commit(store, 1, [(f"/m/{i:02d}.jpg", "f", "v1", "ERROR", code) for i, code in enumerate(codes)])
    listing = {f"/m/{i:02d}.jpg": "f" for i in range(len(codes))}
    retried = [codes[int(uri[3:5])] for uri in _todo(store, listing, retry_errors=True)]
    assert retried == ["not_found", "storage_error", "access_denied", "worker_lost", "out_of_memory", "decode_failed",
                       "detect_failed", "error", None]
    assert [c for c in codes[:-1] if not ROW_CODES[c]] == codes[:5]  # the classification the skip rule reads
    import pipeline.errors as errors

    def family(cls):
        return {cls.code} | {code for sub in cls.__subclasses__() for code in family(sub)}

    row_codes = family(errors.MediaError) | {errors.DECODE_FAILED, errors.DETECT_FAILED, errors.WORKER_LOST,
                                             errors.OUT_OF_MEMORY, errors.DeepfakeStreamError.code}
    assert row_codes == set(ROW_CODES)  # every code a row may carry is classified, in one place
    assert len(_todo(store, listing, full=True)) == len(codes)  # --full: every one
    assert _todo(store, {**listing, "/m/00.jpg": "g"}, retry_errors=True)[0] == "/m/00.jpg"  # new content: rescanned


def test_an_object_that_comes_back_after_its_tombstone_is_new(store):
    """A tombstone (label DELETED) ends an object: it is no longer latest for the skip rule, so the object, back under
    the same key (same content even), is scanned as new, and nothing marks it gone twice."""
    from jobs.scan.incremental import gone, tombstones

    _commit(store, 1, [("/m/a.jpg", "f", "v1", "FAKE"), ("/m/b.jpg", "f", "v1", "REAL")], key="K")
    latest = store.latest("now")
    missing = gone(latest, ["/m/b.jpg"], lambda uri: uri.startswith("/m/"))
    assert missing.column("uri").to_pylist() == ["/m/a.jpg"]
    assert gone(latest, ["/m/b.jpg"], lambda uri: False).num_rows == 0  # what the listing does not vouch for stays
    night = _scan_id(2)
    store.commit(f"part-{night}-00000", "2026-11-29", tombstones(missing, night, NIGHT + timedelta(days=2)), [])
    assert latest_rows(store) == {("/m/b.jpg", "f", "v1"): "REAL"}  # a.jpg: gone, as if never scanned
    assert gone(store.latest("now"), ["/m/b.jpg"], lambda uri: True).num_rows == 0
    assert _why(store, {"/m/a.jpg": "f", "/m/b.jpg": "f"}) == [("/m/a.jpg", "new")]
    (row,) = [r for r in read_table(store, "videos") if r["scan_id"] == night]
    assert (row["label"], row["fingerprint"], row["model_version"], row["scoring_key"], row["size"], row["score"]) == (
        "DELETED", "f", "v1", "K", None, None)


def test_objects_gone_past_max_deleted_share_are_held_and_a_share_of_one_marks_them_all(store, tmp_path):
    """An existing folder now empty (an unmounted volume looks so) and one that lost half its objects, listed for
    real: past scan.max_deleted_share of the source's objects none is marked (held, counted), up to it they are, and
    a share of 1 marks even a source gone whole. An empty listing is looked at too: it is the likeliest to be held."""
    from jobs.scan.listing import Coverage, list_objects

    source = tmp_path / "in"
    source.mkdir()
    _commit(store, 1, [(f"{source}/{i}.jpg", "f", "v1", "REAL") for i in range(4)])

    def gone_and_held(share: float = 0.5) -> tuple[int, int]:
        coverage = Coverage()
        entries = list_objects(str(source), {}, coverage=coverage)
        _chosen, missing, held = _work(store, entries, "now", "v1", "K", ScanConfig(source="x", max_deleted_share=share),
                                       coverage)
        return (0 if missing is None else missing.num_rows), held

    assert gone_and_held() == (0, 4)
    assert gone_and_held(1.0) == (4, 0)
    for i in range(2):
        (source / f"{i}.jpg").write_bytes(b"\xff\xd8\xff")
    assert gone_and_held() == (2, 0)  # 2 of 4: not more than half


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


def test_a_capped_run_takes_new_objects_first_then_changed_then_the_oldest_rescans(store):
    """Two objects that fail every night (--retry-errors) and an old row rescanned (--full) must not keep a
    --max-objects 1 run from new uploads, and among rescans the one whose latest row is oldest goes first."""
    _commit(store, 1, [("/m/a.jpg", "f", "v1", "ERROR"), ("/m/b.jpg", "f", "v1", "ERROR"), ("/m/c.jpg", "f", "v1", "REAL")])
    _commit(store, 2, [("/m/b.jpg", "f", "v1", "ERROR"), ("/m/c.jpg", "f", "v1", "REAL")])
    _commit(store, 3, [("/m/a.jpg", "f", "v1", "ERROR")])
    listing = {"/m/a.jpg": "f", "/m/b.jpg": "f", "/m/c.jpg": "g", "/m/d.jpg": "f", "/m/z.jpg": "f"}
    assert _why(store, listing, retry_errors=True) == [
        ("/m/d.jpg", "new"), ("/m/z.jpg", "new"), ("/m/c.jpg", "changed"),  # listing order within a class
        ("/m/b.jpg", "retry"), ("/m/a.jpg", "retry")]  # b's latest row is night 2's, a's night 3's
    listing["/m/c.jpg"] = "f"
    assert _why(store, listing, full=True) == [("/m/d.jpg", "new"), ("/m/z.jpg", "new"), ("/m/b.jpg", "full"),
                                               ("/m/c.jpg", "full"), ("/m/a.jpg", "full")]


def test_a_changed_scoring_key_rescans_and_a_row_without_one_does_not(store):
    """Rows carry the scoring key of the settings that made them: another threshold or weights (another key)
    rescans them, under the same model version; rows written before keys existed (null) count as matching."""
    _commit(store, 1, [("/m/old.jpg", "f", "v1", "REAL")])  # written by a scanner before schema version 4
    _commit(store, 2, [("/m/a.jpg", "f", "v1", "REAL"), ("/m/b.jpg", "f", "v1", "FAKE")], key="K")
    listing = {"/m/old.jpg": "f", "/m/a.jpg": "f", "/m/b.jpg": "f"}
    assert _todo(store, listing, key="K") == []
    assert _why(store, listing, key="K2") == [("/m/a.jpg", "settings"), ("/m/b.jpg", "settings")]
    # with --full too, a changed key is what they are rescanned for (counted as rescored), and ranked before rescans
    assert _why(store, listing, key="K2", full=True) == [("/m/a.jpg", "settings"), ("/m/b.jpg", "settings"),
                                                         ("/m/old.jpg", "full")]
    assert _todo(store, listing, model="v2", key="K") == ["/m/a.jpg", "/m/b.jpg", "/m/old.jpg"]  # a new model: all


def test_within_one_scan_the_later_scanned_at_is_latest():
    import pyarrow as pa

    table = pa.table({"uri": ["a", "a"], "fingerprint": ["old", "new"], "model_version": ["v", "v"], "label": ["REAL"] * 2,
                      "scan_id": ["s1", "s1"], "scanned_at": [datetime(2026, 1, 1, tzinfo=timezone.utc),
                                                             datetime(2026, 1, 2, tzinfo=timezone.utc)]})
    assert incremental.latest_per_uri(table).column("fingerprint").to_pylist() == ["new"]
