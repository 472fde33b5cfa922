"""The scan's tables: their Arrow schemas (each column's meaning in its metadata, shown in docs/scan.md and the
manifest), the schema version and the partition column. Only pyarrow: the query views, the rows the workers
build and the store all read them from here."""

from __future__ import annotations

import pyarrow as pa

MANIFEST = "_deepfakestream.json"
SCHEMA_VERSION = 6
# older versions whose parts this scanner reads and appends to (2 added `videos.error_code`, 3
# `faces.thumb_jpeg`, 4 `videos.scoring_key`, 5 `faces.counted`, 6 the `DELETED` label): the manifest is raised to
# SCHEMA_VERSION, old parts keep their columns and read the new ones as null. A new label is a new version too: a
# scanner of version 5 would read a tombstone as a verdict (and skip the object when it comes back), so it refuses
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)
# the label of a tombstone: the object was no longer under the source when scan ``scan_id`` listed it (deleted or
# renamed). The row ends the object's current state (the ``videos`` view leaves it out); history keeps it
DELETED = "DELETED"
PARTITION = "scan_date"
TABLES = ("videos", "faces")


def _field(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


TS = pa.timestamp("us", tz="UTC")

VIDEOS_SCHEMA = pa.schema([
    _field("schema_version", pa.int16(), "output schema version (this file format)", False),
    _field("scan_id", pa.string(), "run that wrote the row (UTC start time + random suffix)", False),
    _field("uri", pa.string(), "object URI (s3://…, gs://…) or absolute local path", False),
    _field("size", pa.int64(), "object size in bytes from the listing"),
    _field("etag", pa.string(), "object store ETag (quotes stripped); null on filesystems without one"),
    _field("mtime", TS, "object last-modified time from the listing"),
    _field("fingerprint", pa.string(), "object version used by incremental scans: generation:<n> (GCS), etag:<ETag> or "
           "size:<n>:mtime:<s>", False),
    _field("content_type", pa.string(), "MIME type sniffed from the object's bytes; null when unreadable"),
    _field("duration", pa.float64(), "seconds (0 for images)"),
    _field("fps", pa.float64(), "frames per second (0 for images)"),
    _field("frame_count", pa.int64(), "frames in the video (1 for images)"),
    _field("width", pa.int32(), "pixels"),
    _field("height", pa.int32(), "pixels"),
    _field("frames_sampled", pa.int32(), "frames decoded and searched for faces"),
    _field("faces", pa.int32(), "face crops found over the sampled frames (rows in `faces`)"),
    _field("tracks", pa.int32(), "distinct people (face tracks)"),
    _field("score", pa.float64(), "fake probability of the object (aggregated); null for NO_FACE and ERROR"),
    _field("label", pa.string(), "FAKE, REAL, NO_FACE or ERROR; DELETED for a tombstone: the object was gone from the "
           "source when this scan listed it (its fingerprint, model_version and scoring_key repeat its last row's, the "
           "other columns are null)", False),
    _field("threshold", pa.float64(), "decision threshold: score >= threshold is FAKE"),
    _field("aggregation", pa.string(), "how face scores became the object score (mean, confident, track_max)"),
    _field("model_version", pa.string(), "detector checkpoint version (model card)", False),
    _field("scoring_key", pa.string(), "hash of what made the score and the verdict: the weights' bytes, the model card's "
           "scoring fields and the decode/detect/classify settings, threshold, aggregation and min_track_frames included "
           "(pipeline/scoring_key.py); null in rows written before schema version 4"),
    _field("error", pa.string(), "why the object could not be scored; null when it was"),
    _field("error_code", pa.string(), "stable code of that error (pipeline/errors.py, e.g. media_too_large, "
           "unsupported_media, worker_lost); null when scored, and in parts of schema version 1"),
    _field("scanned_at", TS, "when the row was produced", False),
    _field("decode_ms", pa.float64(), "decode time"),
    _field("detect_ms", pa.float64(), "face detection time"),
    _field("classify_ms", pa.float64(), "classifier time (the batch's time shared over its objects)"),
    _field("processing_ms", pa.float64(), "decode + detect + classify"),
])

FACES_SCHEMA = pa.schema([
    _field("schema_version", pa.int16(), "output schema version", False),
    _field("scan_id", pa.string(), "run that wrote the row; (scan_id, uri) joins to `videos`", False),
    _field("uri", pa.string(), "object URI", False),
    _field("face", pa.int32(), "face number within the object", False),
    _field("frame", pa.int32(), "index among the sampled frames", False),
    _field("frame_number", pa.int64(), "frame number in the source video (0 for images)"),
    _field("timestamp", pa.float64(), "seconds into the video"),
    _field("track", pa.int32(), "person (track) id within the object"),
    _field("counted", pa.bool_(), "whether this person counts in the object's verdict: false when seen in fewer "
           "sampled frames than the model card's min_track_frames (the score ignores the face); null in rows written "
           "before schema version 5"),
    _field("box", pa.list_(pa.float32()), "x1, y1, x2, y2 in source pixels"),
    _field("landmarks", pa.list_(pa.float32()), "5 facial landmarks as x, y pairs (10 values), source pixels"),
    _field("probability", pa.float32(), "face detector probability"),
    _field("score", pa.float32(), "fake probability of this face crop"),
    _field("thumb_jpeg", pa.binary(), "small JPEG of the face crop, kept for the object's top-scoring faces "
           "(scan.thumbnails, scan.thumbnail_px); null for the others"),
    _field("model_version", pa.string(), "detector checkpoint version", False),
    _field("scanned_at", TS, "when the row was produced", False),
])

SCHEMAS = {"videos": VIDEOS_SCHEMA, "faces": FACES_SCHEMA}


def schema_doc() -> dict[str, list[dict[str, str]]]:
    """The documented schema, as written to the manifest and shown in docs/scan.md."""
    doc = {}
    for table, schema in SCHEMAS.items():
        doc[table] = [{"name": f.name, "type": str(f.type), "doc": (f.metadata or {}).get(b"doc", b"").decode()}
                      for f in schema]
        doc[table].append({"name": PARTITION, "type": "date (Hive partition)", "doc": "UTC date the scan started"})
    return doc
