"""The scan output (jobs/scan/output.py, jobs/scan/rows.py, jobs/query/sql.py): atomic commits, the schema version
and its error codes, how outputs of schema version 1 are still read and appended to, and the docs of every column."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.query.sql import run_query
from jobs.scan.output import FACES_SCHEMA, MANIFEST, PARTITION, SCHEMA_VERSION, VIDEOS_SCHEMA, OutputStore
from jobs.scan.rows import lost_rows, nest, tables_from_batch, unnest
from pipeline.batch import object_column
from pipeline.decode import DecodeStage
from pipeline.errors import WORKER_LOST, EmptyMediaError, UnsupportedMediaError

from scan_fixtures import latest_rows

ROOT = Path(__file__).resolve().parents[3]



def test_the_code_travels_from_the_stage_to_the_row():
    batch = DecodeStage()({"uri": object_column(["empty.jpg", "text.jpg"]),
                           "data": object_column([b"", b"hello, not a picture\n" * 40])})
    assert list(batch["error_code"]) == [EmptyMediaError.code, UnsupportedMediaError.code]
    out = {**batch, "frames_sampled": batch["frame_count"], "face_scores": object_column([[], []]),
           "face_track": object_column([[], []]), "face_frame": object_column([[], []]),
           "face_boxes": object_column([[], []]), "face_landmarks": object_column([[], []]),
           "face_probs": object_column([[], []]), "score": [float("nan")] * 2, "label": object_column(["ERROR"] * 2),
           "threshold": [0.5, 0.5], "model_version": object_column(["v", "v"]), "aggregation": object_column(["mean"] * 2)}
    videos, faces = (t.to_pylist() for t in tables_from_batch(out, "scan1", datetime.now(timezone.utc)))
    assert [v["error_code"] for v in videos] == ["media_empty", "unsupported_media"] and not faces
    lost = lost_rows([{"uri": "x", "fingerprint": "f", "size": 3}], "crashed", "scan1", datetime.now(timezone.utc),
                     "v", 0.5, "mean").to_pylist()
    assert [(r["error_code"], r["label"], r["size"], r["fingerprint"]) for r in lost] == [(WORKER_LOST, "ERROR", 3, "f")]


def test_a_schema_1_output_is_read_and_appended_to(tmp_path):
    """Version 1 had neither `error_code` nor `scoring_key`: its parts read them as null, in `query` and in what a
    scan reads back to skip (its rows match any scoring key; the part is not taken for a broken one)."""
    store = OutputStore(str(tmp_path))
    store.prepare()
    old_schema = pa.schema([f for f in VIDEOS_SCHEMA if f.name not in ("error_code", "scoring_key")])
    row = {"schema_version": 1, "scan_id": "old", "uri": "/a.jpg", "fingerprint": "f", "label": "ERROR",
           "model_version": "v", "error": "file is empty (0 bytes)", "scanned_at": datetime.now(timezone.utc)}
    part = tmp_path / "videos" / f"{PARTITION}=2026-01-01" / "part-old-00000.parquet"
    part.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row], schema=old_schema), part)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    (tmp_path / MANIFEST).write_text(json.dumps({**manifest, "schema_version": 1}))

    columns, rows = run_query(str(tmp_path), "SELECT uri, error, error_code FROM videos")
    assert rows == [("/a.jpg", "file is empty (0 bytes)", None)]

    OutputStore(str(tmp_path)).prepare()  # a new scan into the old output raises its version
    assert json.loads((tmp_path / MANIFEST).read_text())["schema_version"] == SCHEMA_VERSION == 6
    new = {**row, "schema_version": SCHEMA_VERSION, "scan_id": "new", "uri": "/b.jpg", "error_code": "media_empty",
           "scoring_key": "K"}
    store.commit("part-new-00000", "2026-01-02", [new], [])
    _, rows = run_query(str(tmp_path), "SELECT uri, error_code, scoring_key FROM videos ORDER BY uri")
    assert rows == [("/a.jpg", None, None), ("/b.jpg", "media_empty", "K")]
    latest = store.latest("scan2").to_pylist()  # the old part is read first
    assert [(r["uri"], r["scoring_key"]) for r in latest] == [("/a.jpg", None), ("/b.jpg", "K")]
    assert not store.quarantined
    from jobs.scan.incremental import work

    listing = [{"uri": "/a.jpg", "fingerprint": "f"}, {"uri": "/b.jpg", "fingerprint": "f"}]
    assert [(e["uri"], why) for e, why in work(listing, store.latest(), "v", "K2")] == [("/b.jpg", "settings")]


def test_the_last_actor_hands_the_driver_arrow_rows(detector_env, samples_dir, tmp_path):
    """What a fused-plan actor runs (the graph, then the rows stage), in-process: one Arrow table per batch
    with each object's faces nested, which the driver splits and writes as they are."""
    from jobs.scan.output import FACES_SCHEMA
    from jobs.scan.rows import RowsStage, unnest
    from pipeline.config import load_settings
    from pipeline.graph import Graph, StageSpec, stage_specs

    graph = Graph(stage_specs(load_settings(**{"decode.num_frames": 4}))
                  + [StageSpec("rows", RowsStage, {"scan_id": "scan1"})])
    uris = [str(samples_dir / "pair_pan.mp4"), str(samples_dir / "coffee.jpg"), str(tmp_path / "gone.mp4")]
    table = graph({"uri": object_column(uris), "fingerprint": object_column(["a", "b", "c"])})
    assert isinstance(table, pa.Table) and table.num_rows == 3
    videos, faces = unnest(table)
    assert videos.schema.equals(VIDEOS_SCHEMA) and faces.schema.equals(FACES_SCHEMA)
    rows = videos.to_pylist()
    assert [r["label"] for r in rows[1:]] == ["NO_FACE", "ERROR"] and rows[0]["label"] in ("FAKE", "REAL")
    assert (rows[0]["faces"], rows[0]["tracks"], rows[0]["frames_sampled"]) == (8, 2, 4)
    assert rows[2]["error_code"] and rows[0]["error_code"] is None and all(r["scan_id"] == "scan1" for r in rows)
    assert faces.column("uri").to_pylist() == [uris[0]] * 8 and faces.column("face").to_pylist() == list(range(8))
    OutputStore(str(tmp_path / "out")).commit("part-scan1-00000", "2026-01-02", videos, faces)  # written as received
    assert pq.read_table(tmp_path / "out" / "faces" / f"{PARTITION}=2026-01-02" / "part-scan1-00000.parquet").num_rows == 8


def test_local_commits_are_atomic_and_crash_leftovers_are_cleaned(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    store.prepare()
    manifest = json.loads((tmp_path / "out" / "_deepfakestream.json").read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION and "videos" in manifest["tables"]
    row = {"schema_version": 1, "scan_id": "s", "uri": "/a.mp4", "fingerprint": "size:1:mtime:0", "label": "ERROR",
           "error": "x", "model_version": "m", "scanned_at": __import__("datetime").datetime.now()}
    store.commit("part-s-00000", "2026-01-02", [row], [])
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert files == ["_deepfakestream.json", "faces/scan_date=2026-01-02/part-s-00000.parquet",
                     "videos/scan_date=2026-01-02/part-s-00000.parquet"]  # no temporary file left behind
    # What a crash leaves: a half-written temporary file and a faces part whose videos part never landed.
    day = tmp_path / "out" / "faces" / "scan_date=2026-01-02"
    (day / ".part-s-00001.parquet.tmp").write_bytes(b"PAR1 half")
    shutil.copy(day / "part-s-00000.parquet", day / "part-s-00001.parquet")
    assert latest_rows(store) == {("/a.mp4", "size:1:mtime:0", "m"): "ERROR"}
    OutputStore(str(tmp_path / "out")).prepare()
    assert sorted(p.name for p in day.iterdir()) == ["part-s-00000.parquet"]


def test_output_of_another_schema_version_is_refused(tmp_path):
    from jobs.scan.output import OutputError

    (tmp_path / "_deepfakestream.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(OutputError, match="schema version"):
        OutputStore(str(tmp_path)).prepare()


def test_rows_keep_faces_of_scored_objects_only():
    from datetime import datetime, timezone

    from pipeline.batch import object_column

    batch = {
        "uri": object_column(["s3://b/a.mp4", "s3://b/bad.mp4"]), "size": np.array([10, 0]),
        "etag": object_column(["e1", ""]), "mtime": np.array([1.7e9, np.nan]),
        "fingerprint": object_column(["etag:e1", "size:0:mtime:none"]),
        "error": object_column(["", "file is empty (0 bytes)"]), "media_type": object_column(["video/mp4", ""]),
        "duration": np.array([4.0, 0]), "fps": np.array([25.0, 0]), "frame_count": np.array([100, 0]),
        "width": np.array([480, 0]), "height": np.array([360, 0]), "frames_sampled": np.array([2, 0]),
        "frame_indices": object_column([np.array([0, 99]), np.zeros(0, np.int64)]),
        "timestamps": object_column([np.array([0.0, 3.96], np.float32), np.zeros(0, np.float32)]),
        "face_frame": object_column([np.array([0, 1]), np.zeros(0, np.int64)]),
        "face_boxes": object_column([np.ones((2, 4), np.float32), np.zeros((0, 4), np.float32)]),
        "face_landmarks": object_column([np.ones((2, 5, 2), np.float32), np.zeros((0, 5, 2), np.float32)]),
        "face_probs": object_column([np.array([0.99, 0.98], np.float32), np.zeros(0, np.float32)]),
        "face_track": object_column([np.array([0, 0]), np.zeros(0, np.int64)]),
        "face_scores": object_column([np.array([0.2, 0.4], np.float32), np.zeros(0, np.float32)]),
        "score": np.array([0.3, np.nan]), "label": object_column(["REAL", "ERROR"]), "threshold": np.array([0.5, 0.5]),
        "model_version": object_column(["v1", "v1"]), "aggregation": object_column(["mean", "mean"]),
        "decode_ms": np.array([1.0, 0.1]), "detect_ms": np.array([2.0, 0.0]), "classify_ms": np.array([3.0, 0.0]),
    }
    tables = tables_from_batch(batch, "scan1", datetime.now(timezone.utc))
    assert all(a.equals(b) for a, b in zip(unnest(nest(*tables)), tables))  # as the driver gets them from the actor
    videos, faces = (t.to_pylist() for t in tables)
    assert [v["label"] for v in videos] == ["REAL", "ERROR"]
    assert videos[0]["error"] is None and videos[1]["error"] == "file is empty (0 bytes)"
    assert videos[1]["score"] is None and videos[1]["mtime"] is None and videos[0]["processing_ms"] == 6.0
    assert (videos[0]["faces"], videos[0]["tracks"]) == (2, 1)
    assert [(f["frame"], f["frame_number"], f["timestamp"]) for f in faces] == [(0, 0, 0.0), (1, 99, pytest.approx(3.96))]
    assert set(faces[0]) == set(FACES_SCHEMA.names) and [f["counted"] for f in faces] == [True, True]
    # two people, one seen too briefly to count in the verdict: each face row says whether its person counted
    two = {**batch, "face_track": object_column([np.array([0, 1]), np.zeros(0, np.int64)]),
           "face_counted": object_column([np.array([True, False]), np.zeros(0, bool)])}
    faces = tables_from_batch(two, "scan1", datetime.now(timezone.utc))[1].to_pylist()
    assert [(f["track"], f["counted"]) for f in faces] == [(0, True), (1, False)]


def test_docs_describe_every_output_column():
    from jobs.scan.output import SCHEMAS

    text = (ROOT / "docs" / "scan.md").read_text()
    for schema in SCHEMAS.values():
        for name in schema.names + ["scan_date"]:
            assert f"`{name}`" in text, f"docs/scan.md does not document column {name}"


def test_an_output_the_store_refuses_is_said_in_one_line(refusing_store, detector_env, tmp_path, monkeypatch):
    """Azure's refusals (an HttpResponseError with its XML body) ran to ten lines in the scan's message, record and
    `--json` line; the docs promise one. Reading, writing and opening the output."""
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from jobs.scan.output import OutputError
    from pipeline.config import load_settings

    store = OutputStore("refusing://out")
    with pytest.raises(OutputError) as unreadable:
        store.check_schema()
    assert str(unreadable.value) == f"cannot read output refusing://out: PermissionError: {refusing_store}"
    monkeypatch.setattr(store.fs, "exists", lambda path: False)  # a first scan: no manifest yet, and the write refused
    with pytest.raises(OutputError) as unwritable:
        store.prepare()
    assert str(unwritable.value) == f"cannot write to output refusing://out: PermissionError: {refusing_store}"
    with pytest.raises(OutputError) as unopened:
        run_scan(load_settings(), ScanConfig(source=str(tmp_path), output="unopenable://out", progress=False))
    assert str(unopened.value) == ("cannot open output unopenable://out: ValueError: unable to connect to account for "
                                   f"{refusing_store}")


def test_an_azure_output_is_named_with_its_account():
    """Two accounts' outputs of one container name were both `abfs://media/out` in the run record's `output` and the
    CLI's messages: DEST is named as the listing names objects, with the account it connected to. A stand-in for
    adlfs's file system (an optional extra; its protocols, and its account as adlfs keeps it), under a protocol of
    this test's own; test_scan_listing.py checks adlfs itself against Azurite where they are installed."""
    import fsspec
    from fsspec.spec import AbstractFileSystem

    from jobs.scan.output import OutputError

    class Blob(AbstractFileSystem):
        protocol = ("abfs", "az", "abfss", "azstandin")

        def __init__(self, account_name=None, **kwargs):
            super().__init__(**kwargs)
            self.account_name = account_name

        def exists(self, path, **kwargs):
            raise PermissionError("refused")

    fsspec.register_implementation("azstandin", Blob, clobber=True)  # left registered: this test's own protocol
    stores = {name: OutputStore("azstandin://media/out/", {"account_name": name}) for name in ("acct1", "acct2")}
    assert {name: store.display for name, store in stores.items()} == {
        name: f"abfs://media@{name}.dfs.core.windows.net/out" for name in stores}
    with pytest.raises(OutputError) as refused:
        stores["acct1"].check_schema()
    assert str(refused.value) == ("cannot read output abfs://media@acct1.dfs.core.windows.net/out: "
                                  "PermissionError: refused")
    assert OutputStore("azstandin://media/out").display == "abfs://media/out"  # no account known: fsspec's own
    assert OutputStore("/srv/out/").display == "/srv/out"


def test_reading_an_s3_output_sends_no_request_per_part_per_call(s3_server, s3_bucket):
    """DuckDB globs and sizes every part it is given, several times a query, through the registered fsspec file system;
    with fsspec's listing cache thrown away by each listing (and not filled by `find`), each call was a HEAD: 141,122
    for one report. The listing (a LIST per partition folder, with details) answers them, and is still made afresh
    each time: a part another client writes or deletes is seen."""
    from collections import Counter

    import boto3

    from jobs.report.text import report

    options = s3_server["storage_options"]
    output = f"s3://{s3_bucket}/out"
    store = OutputStore(output, options)
    store.prepare()
    at = datetime(2026, 1, 3, tzinfo=timezone.utc)
    for k in range(30):  # 30 parts a table, over 3 scan days
        scan, uri = f"s{k % 3}", f"/m/{k}.mp4"
        store.commit(f"part-{scan}-{k:05d}", f"2026-01-0{1 + k % 3}",
                     [{"schema_version": SCHEMA_VERSION, "scan_id": scan, "uri": uri, "fingerprint": "f",
                       "label": "FAKE", "score": 0.9, "faces": 1, "model_version": "m", "scanned_at": at}],
                     [{"schema_version": SCHEMA_VERSION, "scan_id": scan, "uri": uri, "face": 0, "frame": 0,
                       "score": 0.9, "model_version": "m", "scanned_at": at}])
    sent = Counter()  # the requests of the client every reader of this output shares (fsspec caches the instance)
    store.fs.s3.meta.events.register("before-call.s3", lambda event_name, **_: sent.update([event_name.split(".")[-1]]))
    assert run_query(output, "SELECT count(*) FROM videos JOIN faces USING (uri)", options)[1] == [(30,)]
    assert sent["HeadObject"] <= 2 and sent["ListObjectsV2"] <= 10, sent  # 1 + 3 a table, the run records
    sent.clear()
    assert report(output, options)["objects"] == 30
    assert sent["HeadObject"] <= 2, sent

    s3 = boto3.client("s3", endpoint_url=s3_server["endpoint_url"])
    key = "out/videos/scan_date=2026-01-01/part-s0-00000.parquet"
    copy = key.replace("s0-00000", "s9-00000")
    s3.copy_object(Bucket=s3_bucket, Key=copy, CopySource={"Bucket": s3_bucket, "Key": key})
    assert run_query(output, "SELECT count(*) FROM videos_history", options)[1] == [(31,)]
    s3.delete_object(Bucket=s3_bucket, Key=copy)
    s3.delete_object(Bucket=s3_bucket, Key=key)
    assert run_query(output, "SELECT count(*) FROM videos_history", options)[1] == [(29,)]
    assert len(store.list_parts("videos")) == 29
