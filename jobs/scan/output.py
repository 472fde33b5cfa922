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

from jobs.scan.listing import is_local, object_uri
from jobs.scan.schema import (FACES_SCHEMA, MANIFEST, PARTITION, READABLE_VERSIONS, SCHEMA_VERSION, SCHEMAS, TABLES,
                              VIDEOS_SCHEMA, schema_doc)
from pipeline.atomic import write_atomic
from pipeline.errors import DeepfakeStreamError, one_line
from pipeline.media import normalize_uri

log = logging.getLogger(__name__)

class OutputError(DeepfakeStreamError):
    """DEST cannot be used (unwritable, or written by an incompatible schema version)."""

    code = "output_error"


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
    prepared: bool = False  # prepare() passed: DEST is a usable output of this schema

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
        """DEST as messages and the run record's ``output`` name it: on Azure with its account (two accounts'
        outputs of one container name are two outputs), as the listing names objects."""
        return object_uri(self.fs, self.root)

    def table_path(self, table: str) -> str:
        return f"{self.root}/{table}"

    # ---- set-up
    def check_schema(self) -> dict | None:
        """DEST's manifest (None before the first scan); ``OutputError`` for a schema this scanner cannot write to.
        Reads only: a scan refused here writes nothing there, not even its run record."""
        manifest_path = f"{self.root}/{MANIFEST}"
        self.fs.invalidate_cache(self.root)
        try:
            if not self.fs.exists(manifest_path):
                return None
            manifest = json.loads(self.fs.cat_file(manifest_path))
            version = int(manifest.get("schema_version", 0))
        except Exception as exc:  # noqa: BLE001 - any storage failure means the scan cannot run
            raise OutputError(f"cannot read output {self.display}: {one_line(exc)}") from exc
        if version not in READABLE_VERSIONS:
            raise OutputError(f"{self.display} holds scan output of schema version {version}; this scanner writes "
                              f"version {SCHEMA_VERSION}. Scan into a new --output.")
        return manifest

    def prepare(self) -> None:
        """Create DEST and its manifest, refuse an incompatible schema, clean up after crashed runs."""
        manifest_path = f"{self.root}/{MANIFEST}"
        manifest = self.check_schema()
        try:
            if manifest is not None:
                version = int(manifest.get("schema_version", 0))
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
            raise OutputError(f"cannot write to output {self.display}: {one_line(exc)}") from exc
        self.cleanup()
        self.prepared = True

    def list_parts(self, table: str) -> dict[str, str]:
        """part name → full path, for committed parts of ``table``.

        Each folder is listed afresh (fsspec instances are shared and cache listings; others may have written) and
        with details, which fsspec keeps: what reads the parts next (DuckDB globs and sizes every part it is given,
        several times a query) is answered from them, not with a request per part per call (on S3 a HEAD each:
        141,122 for one report). Only this table's folders are refreshed."""
        from concurrent.futures import ThreadPoolExecutor

        parts: dict[str, str] = {}
        folders, seen = [self.table_path(table)], set()
        with ThreadPoolExecutor(max_workers=16) as pool:  # the partition folders of a year of nightly scans
            while folders:
                seen.update(folders)
                entries = [entry for listing in pool.map(self._listing, folders) for entry in listing]
                folders = [e["name"].rstrip("/") for e in entries if e["type"] == "directory"]
                folders = [f for f in dict.fromkeys(folders) if f not in seen]
                names = ((posixpath.basename(e["name"]), e["name"]) for e in entries if e["type"] == "file")
                parts.update((n, p) for n, p in names if n.startswith("part-") and n.endswith(".parquet"))
        return parts

    def _listing(self, folder: str) -> list[dict]:
        self.fs.invalidate_cache(folder)
        try:
            return self.fs.ls(folder, detail=True)
        except (FileNotFoundError, NotADirectoryError):  # no such folder; a file given as the output
            return []

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
        """Move parts that cannot be read to ``_quarantine/<scan_id>/``; returns their original URIs. Every column
        of every part is read (not only what incremental scans key on): a part whose ``score`` data alone is bad
        broke every ``query`` and ``report`` that read it. Raises ``OutputError`` when the storage itself fails a
        read (nothing is moved then)."""
        from jobs.scan.quarantine import StorageUnreadable, unreadable_parts

        moved: list[str] = []
        for table in TABLES:
            try:
                bad = unreadable_parts(self.fs, sorted(self.list_parts(table).values()), table, whole=True)
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
        schema = empty().schema  # columns an older part lacks (scoring_key before version 4) read as null
        try:
            dataset = pads.dataset(parts, schema=schema, filesystem=self.fs, format="parquet")
            return fold_latest(dataset.to_batches(columns=COLUMNS, filter=under))
        except Exception:  # noqa: BLE001 - find the culprit(s) below
            if scan_id is None:
                raise
        return fold_latest(self._readable_parts(parts, schema, under, scan_id))

    def _readable_parts(self, parts: list[str], schema: pa.Schema, under: Any, scan_id: str):
        """Each part's ``schema`` columns (rows matching ``under``), quarantining the parts whose data is unreadable."""
        from jobs.scan.quarantine import StorageUnreadable, confirmed_read

        for path in parts:
            try:
                part, why = confirmed_read(self.fs, path, lambda f: pq.read_table(f, columns=schema.names, schema=schema))
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
        """Write ``DEST/<relative>`` atomically (parts, run records: what must appear whole); ``OutputError`` when
        the storage refuses (a full disk, no permission, no credentials)."""
        try:
            self._put(f"{self.root}/{relative}", data)
        except Exception as exc:  # noqa: BLE001 - OSError, botocore, fsspec: all mean the output is unusable
            raise OutputError(f"cannot write {relative} to output {self.display}: {one_line(exc)}") from exc

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
            self.put(f"{table}/{PARTITION}={scan_date}/{name}", data)
