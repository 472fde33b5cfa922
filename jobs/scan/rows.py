"""The scan's ``videos`` and ``faces`` rows (``jobs/scan/output.py`` has their schemas), built as Arrow
columns in the scan's last actor (``RowsStage``) from the graph's output batch: one ``videos`` row per
object, one ``faces`` row per face of a scored object. The driver only splits, counts and writes them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.scan.output import FACES_SCHEMA, SCHEMA_VERSION, TS, VIDEOS_SCHEMA
from pipeline.batch import Batch, as_text, batch_size
from pipeline.errors import WORKER_LOST

TIMINGS = ("decode_ms", "detect_ms", "classify_ms")
FACES = "face_rows"  # the column of a row's faces between the last actor and the driver
NESTED = pa.struct(list(FACES_SCHEMA))


def _texts(batch: Batch, key: str, n: int) -> list[str]:
    return ["" if v is None else as_text(v) for v in batch[key]] if key in batch else [""] * n


def _or_null(texts: list[str]) -> list[str | None]:
    return [t or None for t in texts]


def _floats(values: Any) -> pa.Array:
    """float64 with NaN as null."""
    values = np.asarray(values, np.float64)
    return pa.array(values, pa.float64(), mask=np.isnan(values))


def _times(epochs: Any) -> pa.Array:
    """Epoch seconds (NaN: unknown) as UTC microsecond timestamps."""
    seconds = np.asarray(epochs, np.float64)
    missing = np.isnan(seconds)
    return pa.array(np.where(missing, 0, np.round(seconds * 1e6)).astype(np.int64), TS, mask=missing)


def _lists(values: list[np.ndarray], width: int) -> pa.Array:
    """(k, width) float32 rows as list<float32> values."""
    flat = np.concatenate([v.reshape(-1) for v in values]) if values else np.zeros(0, np.float32)
    count = len(flat) // width
    return pa.ListArray.from_arrays(pa.array(np.arange(count + 1, dtype=np.int32) * width),
                                    pa.array(flat.astype(np.float32)))


def _thumbs(batch: Batch, i: int, count: int) -> list[bytes | None]:
    """Row ``i``'s face thumbnails (``face_thumbs`` from the score stage), None where it kept none."""
    if "face_thumbs" not in batch:
        return [None] * count
    thumbs = list(batch["face_thumbs"][i])
    return [thumbs[j] if j < len(thumbs) else None for j in range(count)]


def tables_from_batch(batch: Batch, scan_id: str, scanned_at: datetime) -> tuple[pa.Table, pa.Table]:
    """One aggregated graph batch (plus the listing's columns) as ``videos`` and ``faces`` tables."""
    n = batch_size(batch)
    errors, codes = _texts(batch, "error", n), _texts(batch, "error_code", n)
    scores = [np.asarray(batch["face_scores"][i], np.float32).reshape(-1) for i in range(n)]
    tracks = [np.asarray(batch["face_track"][i], np.int64).reshape(-1) for i in range(n)]
    timings = {k: np.asarray(batch[k], np.float64) for k in TIMINGS if k in batch}
    uris, versions = _texts(batch, "uri", n), _texts(batch, "model_version", n)
    at = pa.scalar(scanned_at, TS)
    videos = pa.Table.from_arrays([
        pa.array(np.full(n, SCHEMA_VERSION, np.int16)),
        pa.array([scan_id] * n, pa.string()),
        pa.array(uris, pa.string()),
        pa.array(np.asarray(batch["size"], np.int64)) if "size" in batch else pa.nulls(n, pa.int64()),
        pa.array(_or_null(_texts(batch, "etag", n)), pa.string()),
        _times(batch["mtime"]) if "mtime" in batch else pa.nulls(n, TS),
        pa.array(_texts(batch, "fingerprint", n), pa.string()),
        pa.array(_or_null(_texts(batch, "media_type", n)), pa.string()),
        *(pa.array(np.asarray(batch[k], np.float64)) for k in ("duration", "fps")),
        pa.array(np.asarray(batch["frame_count"], np.int64)),
        *(pa.array(np.asarray(batch[k], np.int32)) for k in ("width", "height", "frames_sampled")),
        pa.array(np.array([len(s) for s in scores], np.int32)),
        pa.array(np.array([len(np.unique(t)) for t in tracks], np.int32)),
        _floats(batch["score"]),
        pa.array(_texts(batch, "label", n), pa.string()),
        _floats(batch["threshold"]),
        pa.array(_or_null(_texts(batch, "aggregation", n)), pa.string()),
        pa.array(versions, pa.string()),
        pa.array(_or_null(errors), pa.string()),
        pa.array([(c or "error") if e else None for e, c in zip(errors, codes)], pa.string()),
        pa.array([at] * n, TS) if n else pa.array([], TS),
        *(pa.array(timings[k]) if k in timings else pa.nulls(n, pa.float64()) for k in TIMINGS),
        pa.array(sum(timings.values()) if timings else np.zeros(n)),
    ], schema=VIDEOS_SCHEMA)

    rows = [i for i in range(n) if not errors[i]]  # an ERROR object has no faces rows
    counts = [len(scores[i]) for i in rows]
    frames = [np.asarray(batch["face_frame"][i], np.int64).reshape(-1) for i in rows]
    total = sum(counts)

    def flat(parts: list[np.ndarray], dtype) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    def where(column: str, dtype, missing) -> np.ndarray:
        """Each face's ``column`` value at its sampled frame (``missing`` where the frame is out of range)."""
        parts = []
        for i, frame in zip(rows, frames):
            values = np.asarray(batch[column][i], dtype).reshape(-1)
            part = np.full(len(frame), missing, dtype)
            inside = frame < len(values)
            part[inside] = values[frame[inside]]
            parts.append(part)
        return flat(parts, dtype)

    number = where("frame_indices", np.int64, -1)
    faces = pa.Table.from_arrays([
        pa.array(np.full(total, SCHEMA_VERSION, np.int16)),
        pa.array([scan_id] * total, pa.string()),
        pa.array([uris[i] for i, c in zip(rows, counts) for _ in range(c)], pa.string()),
        pa.array(flat([np.arange(c) for c in counts], np.int32)),
        pa.array(flat(frames, np.int32)),
        pa.array(number, pa.int64(), mask=number < 0),
        _floats(where("timestamps", np.float64, np.nan)),
        pa.array(flat([tracks[i] for i in rows], np.int32)),
        _lists([np.asarray(batch["face_boxes"][i], np.float32) for i in rows], 4),
        _lists([np.asarray(batch["face_landmarks"][i], np.float32) for i in rows], 10),
        pa.array(flat([np.asarray(batch["face_probs"][i], np.float32).reshape(-1) for i in rows], np.float32)),
        pa.array(flat([scores[i] for i in rows], np.float32)),
        pa.array([t for i, c in zip(rows, counts) for t in _thumbs(batch, i, c)], pa.binary()),
        pa.array([versions[i] for i, c in zip(rows, counts) for _ in range(c)], pa.string()),
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

    def __init__(self, scan_id: str):
        self.scan_id = scan_id

    def __call__(self, batch: Batch) -> pa.Table:
        return nest(*tables_from_batch(batch, self.scan_id, datetime.now(timezone.utc)))


def error_row(entry: dict[str, Any], message: str, scan_id: str, scanned_at: datetime, model_version: str,
              threshold: float | None, aggregation: str | None) -> dict[str, Any]:
    """A ``videos`` row for an object the pipeline never returned (its worker kept crashing)."""
    mtime = entry.get("mtime")
    return {
        "schema_version": SCHEMA_VERSION, "scan_id": scan_id, "uri": entry["uri"], "size": entry.get("size"),
        "etag": entry.get("etag") or None, "fingerprint": entry["fingerprint"],
        "mtime": None if mtime is None or mtime != mtime else datetime.fromtimestamp(float(mtime), timezone.utc),
        "label": "ERROR", "error": message, "error_code": WORKER_LOST, "model_version": model_version, "threshold": threshold,
        "aggregation": aggregation, "scanned_at": scanned_at,
    }
