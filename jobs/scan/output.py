"""The batch scan's output: versioned Parquet tables ``videos`` and ``faces``, committed atomically.

Layout under DEST (any fsspec URI: local path, ``s3://bucket/prefix``, ``gs://…``)::

    DEST/_deepfakestream.json                                   manifest (schema version, tables)
    DEST/videos/scan_date=YYYY-MM-DD/part-<scan_id>-<seq>.parquet
    DEST/faces/scan_date=YYYY-MM-DD/part-<scan_id>-<seq>.parquet  (same name as its videos part)

Every commit writes one ``faces`` part and then the ``videos`` part of the same name. A ``videos`` row
is the commit record of an object: an object counts as scanned only once its ``videos`` part exists.
On a local filesystem each part is written to a hidden ``.part-….tmp`` file and renamed into place; on
object stores a part is one PUT (or a completed multipart upload), which appears whole or not at all.
A crash between the two files leaves a ``faces`` part without its ``videos`` part: it is ignored by the
query views and deleted by the next scan, together with stale ``.tmp`` files.
"""

from __future__ import annotations

import io
import json
import logging
import os
import posixpath
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.scan.listing import is_local
from pipeline.atomic import write_atomic
from pipeline.errors import DeepfakeStreamError
from pipeline.media import normalize_uri

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
# older versions whose parts this scanner reads and appends to (2 added `videos.error_code`, 3
# `faces.thumb_jpeg`): the manifest is raised to SCHEMA_VERSION, old parts keep their columns and read
# the new ones as null
READABLE_VERSIONS = (1, 2, 3)
MANIFEST = "_deepfakestream.json"
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
    _field("label", pa.string(), "FAKE, REAL, NO_FACE or ERROR", False),
    _field("threshold", pa.float64(), "decision threshold: score >= threshold is FAKE"),
    _field("aggregation", pa.string(), "how face scores became the object score (mean, confident, track_max)"),
    _field("model_version", pa.string(), "detector checkpoint version (model card)", False),
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


class OutputError(DeepfakeStreamError):
    """DEST cannot be used (unwritable, or written by an incompatible schema version)."""

    code = "output_error"


def schema_doc() -> dict[str, list[dict[str, str]]]:
    """The documented schema, as written to the manifest and shown in docs/scan.md."""
    doc = {}
    for table, schema in SCHEMAS.items():
        doc[table] = [{"name": f.name, "type": str(f.type), "doc": (f.metadata or {}).get(b"doc", b"").decode()}
                      for f in schema]
        doc[table].append({"name": PARTITION, "type": "date (Hive partition)", "doc": "UTC date the scan started"})
    return doc


# --------------------------------------------------------------------------------------- the store
@dataclass
class CommitInfo:
    part: str
    videos: int
    faces: int
    total_videos: int


@dataclass
class OutputStore:
    """DEST: reads what earlier scans wrote, commits new parts atomically."""

    uri: str
    storage_options: dict = field(default_factory=dict)
    quarantined: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.uri = normalize_uri(self.uri)
        self.fs, self.root = fsspec.core.url_to_fs(self.uri, **self.storage_options)
        if is_local(self.fs):
            self.root = os.path.abspath(self.root)
        self.root = self.root.rstrip("/")
        self.local = is_local(self.fs)

    # ---- display
    @property
    def display(self) -> str:
        return self.root if self.local else self.fs.unstrip_protocol(self.root)

    def table_path(self, table: str) -> str:
        return f"{self.root}/{table}"

    # ---- set-up
    def prepare(self) -> None:
        """Create DEST and its manifest, refuse an incompatible schema, clean up after crashed runs."""
        manifest_path = f"{self.root}/{MANIFEST}"
        self.fs.invalidate_cache(self.root)
        try:
            if self.fs.exists(manifest_path):
                manifest = json.loads(self.fs.cat_file(manifest_path))
                version = int(manifest.get("schema_version", 0))
                if version not in READABLE_VERSIONS:
                    raise OutputError(
                        f"{self.display} holds scan output of schema version {version}; this scanner writes "
                        f"version {SCHEMA_VERSION}. Scan into a new --output.")
                if version != SCHEMA_VERSION:
                    log.info("raising %s from schema version %d to %d", self.display, version, SCHEMA_VERSION)
                    manifest.update(schema_version=SCHEMA_VERSION, tables=schema_doc())
                    self._put(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
            else:
                if self.local:
                    os.makedirs(self.root, exist_ok=True)
                manifest = {"format": "deepfakestream-scan", "schema_version": SCHEMA_VERSION,
                            "partitioning": f"hive ({PARTITION})", "tables": schema_doc(),
                            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                self._put(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
        except OutputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any storage failure means the scan cannot run
            raise OutputError(f"cannot write to output {self.display}: {type(exc).__name__}: {exc}") from exc
        self.cleanup()

    def list_parts(self, table: str) -> dict[str, str]:
        """part name → full path, for committed parts of ``table``."""
        base = self.table_path(table)
        self.fs.invalidate_cache()  # fsspec instances are shared and cache listings; others may have written
        try:
            paths = self.fs.find(base) if self.fs.exists(base) else []
        except FileNotFoundError:
            paths = []
        return {posixpath.basename(p): p for p in paths if posixpath.basename(p).startswith("part-") and p.endswith(".parquet")}

    def cleanup(self) -> None:
        """Delete stale temporary files and ``faces`` parts whose ``videos`` part was never committed."""
        if self.local:
            for table in TABLES:
                base = self.table_path(table)
                for dirpath, _dirs, files in os.walk(base):
                    for name in files:
                        if name.startswith(".part-") and name.endswith(".tmp"):
                            log.info("removing temporary file of an interrupted scan: %s", name)
                            os.remove(os.path.join(dirpath, name))
        videos = self.list_parts("videos")
        for name, path in self.list_parts("faces").items():
            if name not in videos:
                log.info("removing faces part of an interrupted commit: %s", path)
                self.fs.rm(path)

    def quarantine_unreadable(self, scan_id: str) -> list[str]:
        """Move parts that cannot be read to ``_quarantine/<scan_id>/``; returns their original URIs.
        Raises ``OutputError`` when the storage itself fails a read (nothing is moved then)."""
        from jobs.scan.quarantine import StorageUnreadable, unreadable_parts

        moved: list[str] = []
        for table in TABLES:
            try:
                bad = unreadable_parts(self.fs, sorted(self.list_parts(table).values()), table)
            except StorageUnreadable as exc:
                raise OutputError(f"cannot read output {self.display}: {exc}") from exc
            for path, why in bad.items():
                moved += self._quarantine(path, why, scan_id)
        return moved

    def _quarantine(self, path: str, why: str, scan_id: str) -> list[str]:
        """Move one bad part aside; a ``videos`` part takes its ``faces`` twin (those faces belong to rows that
        are gone, and ``cleanup`` would delete a twin left alone)."""
        from jobs.scan.quarantine import move_aside

        pair = [path]
        if path.startswith(self.table_path("videos") + "/"):
            twin = self.list_parts("faces").get(posixpath.basename(path))
            pair += [twin] if twin else []
        moved = []
        for victim in pair:
            if not self.fs.exists(victim):  # a faces part listed bad on its own, already moved with its twin
                continue
            target = move_aside(self.fs, self.root, victim, scan_id, self.local)
            moved.append(self.uri_of(victim))
            log.warning("quarantined unreadable part %s (%s) -> %s", self.uri_of(victim), why, self.uri_of(target))
        self.quarantined.extend(moved)
        return moved

    def uri_of(self, path: str) -> str:
        return path if self.local else self.fs.unstrip_protocol(path)

    # ---- reading
    def latest(self, scan_id: str | None = None, prefix: str = "") -> pa.Table:
        """The latest row of each object whose URI starts with ``prefix`` (``jobs.scan.incremental``: columns
        ``COLUMNS``, one row per URI), over every committed scan; reduced in Arrow while it is read.

        A part whose footer is fine but whose data is not fails the read as a whole: with ``scan_id``,
        such parts are found one by one and quarantined, and the read is done again.
        """
        from jobs.scan.incremental import COLUMNS, empty, fold_latest

        parts = sorted(self.list_parts("videos").values())
        if not parts:
            return empty()
        import pyarrow.compute as pc
        import pyarrow.dataset as pads

        under = pc.starts_with(pc.field("uri"), pattern=prefix) if prefix else None
        try:
            dataset = pads.dataset(parts, filesystem=self.fs, format="parquet")
            return fold_latest(dataset.to_batches(columns=COLUMNS, filter=under))
        except Exception:  # noqa: BLE001 - find the culprit(s) below
            if scan_id is None:
                raise
        return fold_latest(self._readable_parts(parts, COLUMNS, under, scan_id))

    def _readable_parts(self, parts: list[str], columns: list[str], under: Any, scan_id: str):
        """Each part's ``columns`` (rows matching ``under``), quarantining the parts whose data is unreadable."""
        from jobs.scan.quarantine import StorageUnreadable, confirmed_read

        for path in parts:
            try:
                part, why = confirmed_read(self.fs, path, lambda f: pq.read_table(f, columns=columns))
            except StorageUnreadable as exc:
                raise OutputError(f"cannot read output {self.display}: {exc}") from exc
            if why:
                self._quarantine(path, why, scan_id)
            else:
                yield part if under is None else part.filter(under)

    # ---- writing
    def _put(self, path: str, data: bytes) -> None:
        if self.local:
            write_atomic(path, data, durable=True)
        else:
            self.fs.pipe_file(path, data)

    def put(self, relative: str, data: bytes) -> None:
        """Write ``DEST/<relative>`` atomically (run records, anything that must appear whole)."""
        self._put(f"{self.root}/{relative}", data)

    @staticmethod
    def _parquet_bytes(rows: pa.Table | list[dict], schema: pa.Schema) -> bytes:
        table = rows.select(schema.names).cast(schema) if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema)
        table = table.replace_schema_metadata({b"deepfakestream.schema_version": str(SCHEMA_VERSION).encode()})
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        return buffer.getvalue()

    def commit(self, part: str, scan_date: str, videos: pa.Table | list[dict], faces: pa.Table | list[dict],
               check: Callable[[], None] | None = None) -> None:
        """Write one part of both tables (Arrow tables, or rows as dicts): faces first, then the videos part
        that commits them. ``check`` runs before each write and may raise to stop it (the lease's check: a
        faces part left without its videos part is ignored by readers and deleted by the next scan)."""
        name = f"{part}.parquet"
        faces_bytes = self._parquet_bytes(faces, FACES_SCHEMA)
        videos_bytes = self._parquet_bytes(videos, VIDEOS_SCHEMA)
        for table, data in (("faces", faces_bytes), ("videos", videos_bytes)):
            if check is not None:
                check()
            self._put(f"{self.table_path(table)}/{PARTITION}={scan_date}/{name}", data)
