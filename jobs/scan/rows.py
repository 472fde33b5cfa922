"""The scan's ``videos`` and ``faces`` rows (``jobs/scan/schema.py`` has their schemas), built as Arrow
columns in the scan's last actor (``RowsStage``) from the objects' ``ScoreResult`` records plus the
listing's columns: one ``videos`` row per object, one ``faces`` row per face of a scored object. The
driver only splits, counts and writes them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.scan.schema import FACES_SCHEMA, SCHEMA_VERSION, TS, VIDEOS_SCHEMA
from pipeline.batch import Batch, as_text, batch_size
from pipeline.errors import WORKER_LOST
from pipeline.logsafe import redact_uri, redact_uris
from pipeline.result import FaceBox, ScoreResult

TIMINGS = ("decode", "detect", "classify")
FACES = "face_rows"  # the column of a row's faces between the last actor and the driver
NESTED = pa.struct(list(FACES_SCHEMA))
LISTING = ("size", "etag", "mtime", "fingerprint")  # the listing's columns, carried through the graph


def _floats(values: list[float | None]) -> pa.Array:
    """float64 with None and NaN as null."""
    values = np.array([np.nan if v is None else v for v in values], np.float64)
    return pa.array(values, pa.float64(), mask=np.isnan(values))


def _times(epochs: list[Any]) -> pa.Array:
    """Epoch seconds (None or NaN: unknown) as UTC microsecond timestamps."""
    seconds = np.array([np.nan if v is None else float(v) for v in epochs], np.float64)
    missing = np.isnan(seconds)
    return pa.array(np.where(missing, 0, np.round(seconds * 1e6)).astype(np.int64), TS, mask=missing)


def _lists(values: list[list[float] | None], width: int) -> pa.Array:
    """Rows of ``width`` floats as list<float32> values (null where a row has none)."""
    flat = np.array([x for v in values if v is not None for x in v], np.float32)
    sizes = np.array([0 if v is None else width for v in values], np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(flat), mask=pa.array([v is None for v in values], pa.bool_()))


def listing_of(batch: Batch) -> list[dict[str, Any]]:
    """Each row's listing columns (absent ones as None)."""
    n = batch_size(batch)
    columns = {k: list(batch[k]) if k in batch else [None] * n for k in LISTING}
    return [{k: columns[k][i] for k in LISTING} for i in range(n)]


def tables_from_batch(batch: Batch, scan_id: str, scanned_at: datetime,
                      scoring_key: str | None = None) -> tuple[pa.Table, pa.Table]:
    """One aggregated graph batch (plus the listing's columns) as ``videos`` and ``faces`` tables."""
    return tables_from_results(ScoreResult.from_batch(batch), listing_of(batch), scan_id, scanned_at, scoring_key)


def tables_from_results(results: list[ScoreResult], listing: list[dict[str, Any]], scan_id: str,
                        scanned_at: datetime, scoring_key: str | None = None) -> tuple[pa.Table, pa.Table]:
    """Scored objects and their listing entries as ``videos`` and ``faces`` tables (``scoring_key``: the scan's,
    ``pipeline/scoring_key.py``). URIs and errors are stored without credentials (``redact_uri``): the rows' ``uri``
    is the redacted one, and the key incremental scans compare (``jobs/scan/driver.py``)."""
    n = len(results)
    uris = [redact_uri(r.uri) for r in results]
    uri_of = {id(r): uri for r, uri in zip(results, uris)}
    media = [r.media for r in results]
    timings = {k: [r.timings_ms.get(k) for r in results] for k in TIMINGS}
    at = pa.scalar(scanned_at, TS)

    def of_media(key: str, type_: pa.DataType) -> pa.Array:
        return pa.array([None if m is None else getattr(m, key) for m in media], type_)

    etags = [None if e is None else as_text(e) or None for e in (x["etag"] for x in listing)]
    videos = pa.Table.from_arrays([
        pa.array(np.full(n, SCHEMA_VERSION, np.int16)),
        pa.array([scan_id] * n, pa.string()),
        pa.array(uris, pa.string()),
        pa.array([None if x["size"] is None else int(x["size"]) for x in listing], pa.int64()),
        pa.array(etags, pa.string()),
        _times([x["mtime"] for x in listing]),
        pa.array([as_text(x["fingerprint"] or "") for x in listing], pa.string()),
        pa.array([None if m is None else m.type or None for m in media], pa.string()),
        of_media("duration", pa.float64()), of_media("fps", pa.float64()), of_media("frame_count", pa.int64()),
        of_media("width", pa.int32()), of_media("height", pa.int32()), of_media("frames_sampled", pa.int32()),
        pa.array([sum(len(t.boxes) for t in r.tracks) for r in results], pa.int32()),
        pa.array([len(r.tracks) for r in results], pa.int32()),
        _floats([r.score for r in results]),
        pa.array([r.label for r in results], pa.string()),
        _floats([r.threshold for r in results]),
        pa.array([r.aggregation for r in results], pa.string()),
        pa.array([r.model_version or "" for r in results], pa.string()),
        pa.array([scoring_key] * n, pa.string()),
        pa.array([r.error and redact_uris(r.error) for r in results], pa.string()),
        pa.array([(r.error_code or "error") if r.error else None for r in results], pa.string()),
        pa.array([at] * n, TS) if n else pa.array([], TS),
        *(_floats(timings[k]) for k in TIMINGS),
        _floats([sum(r.timings_ms.values()) if r.timings_ms else None for r in results]),
    ], schema=VIDEOS_SCHEMA)

    owned = [(r, t, f) for r in results if not r.error for t, f in r.faces()]
    total = len(owned)
    counted = {(id(r), t.track): t.counted for r in results for t in r.tracks}

    def frame_number(r: ScoreResult, f: FaceBox) -> int | None:
        return r.frames[f.frame].frame_number if f.frame < len(r.frames) else None

    faces = pa.Table.from_arrays([
        pa.array(np.full(total, SCHEMA_VERSION, np.int16)),
        pa.array([scan_id] * total, pa.string()),
        pa.array([uri_of[id(r)] for r, _, _ in owned], pa.string()),
        pa.array([f.face for _, _, f in owned], pa.int32()),
        pa.array([f.frame for _, _, f in owned], pa.int32()),
        pa.array([frame_number(r, f) for r, _, f in owned], pa.int64()),
        _floats([f.timestamp for _, _, f in owned]),
        pa.array([t for _, t, _ in owned], pa.int32()),
        pa.array([counted[id(r), t] for r, t, _ in owned], pa.bool_()),
        _lists([f.box for _, _, f in owned], 4),
        _lists([f.landmarks for _, _, f in owned], 10),
        pa.array([f.probability for _, _, f in owned], pa.float32()),
        pa.array([f.score for _, _, f in owned], pa.float32()),
        pa.array([f.thumb_jpeg for _, _, f in owned], pa.binary()),
        pa.array([r.model_version or "" for r, _, _ in owned], pa.string()),
        pa.array([at] * total, TS) if total else pa.array([], TS),
    ], schema=FACES_SCHEMA)
    return videos, faces


def nest(videos: pa.Table, faces: pa.Table) -> pa.Table:
    """``videos`` with each row's faces in a list column (faces come grouped by row, in row order)."""
    counts = pc.if_else(pc.is_null(videos.column("error")), videos.column("faces"), 0).to_numpy()
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    values = pa.StructArray.from_arrays([c.combine_chunks() for c in faces.columns], fields=list(FACES_SCHEMA))
    return videos.append_column(pa.field(FACES, pa.list_(NESTED)), pa.ListArray.from_arrays(offsets, values))


def unnest(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The inverse of ``nest``: (videos, faces)."""
    faces = pc.list_flatten(table.column(FACES))
    faces = pa.Table.from_struct_array(faces) if len(faces) else FACES_SCHEMA.empty_table()
    return table.drop_columns([FACES]).cast(VIDEOS_SCHEMA), faces.cast(FACES_SCHEMA)


class RowsStage:
    """Batch stage, the scan's last: the graph's output batch → ``videos`` rows with their ``faces`` nested,
    one Arrow table per batch, so no row is built on the driver."""

    def __init__(self, scan_id: str, scoring_key: str | None = None):
        self.scan_id, self.scoring_key = scan_id, scoring_key

    def __call__(self, batch: Batch) -> pa.Table:
        return nest(*tables_from_batch(batch, self.scan_id, datetime.now(timezone.utc), self.scoring_key))


def lost_rows(entries: list[dict[str, Any]], message: str, scan_id: str, scanned_at: datetime, model_version: str,
              threshold: float | None, aggregation: str | None, scoring_key: str | None = None) -> pa.Table:
    """``videos`` rows for objects the pipeline never returned (their worker kept crashing)."""
    results = [ScoreResult.failed(e["uri"], message, threshold, model_version, WORKER_LOST, aggregation) for e in entries]
    listing = [{k: e.get(k) for k in LISTING} for e in entries]
    return tables_from_results(results, listing, scan_id, scanned_at, scoring_key)[0]
