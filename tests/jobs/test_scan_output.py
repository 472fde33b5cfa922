"""The scan output's error codes (schema version 2) and how outputs of schema version 1 are still read
and appended to (jobs/scan/output.py, jobs/scan/rows.py, jobs/query/sql.py)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.query.sql import run_query
from jobs.scan.output import MANIFEST, PARTITION, SCHEMA_VERSION, VIDEOS_SCHEMA, OutputStore
from jobs.scan.rows import lost_rows, tables_from_batch
from pipeline.batch import object_column
from pipeline.decode import DecodeStage
from pipeline.errors import WORKER_LOST, EmptyMediaError, UnsupportedMediaError


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
    store = OutputStore(str(tmp_path))
    store.prepare()
    old_schema = pa.schema([f for f in VIDEOS_SCHEMA if f.name != "error_code"])
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
    assert json.loads((tmp_path / MANIFEST).read_text())["schema_version"] == SCHEMA_VERSION == 3
    new = {**row, "schema_version": SCHEMA_VERSION, "scan_id": "new", "uri": "/b.jpg", "error_code": "media_empty"}
    store.commit("part-new-00000", "2026-01-02", [new], [])
    _, rows = run_query(str(tmp_path), "SELECT uri, error_code FROM videos ORDER BY uri")
    assert rows == [("/a.jpg", None), ("/b.jpg", "media_empty")]


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
