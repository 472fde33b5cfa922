"""Scan outputs for the report tests, made from a real scan of the bundled samples.

- ``one_fake_output``: a small output written directly (one FAKE object, one face, no thumbnail).
- ``drop_thumbnails``: the same output as an older scan (or one with thumbnails off) wrote it: no
  ``thumb_jpeg`` column in the ``faces`` parts.
- ``add_shifted_run``: a later scan whose scores were shifted on purpose, written the way a scan writes
  (videos/faces parts under tomorrow's ``scan_date``, a ``_runs`` record), to test the drift flag.
- ``widen``: every row copied as ``NAME_copyN.EXT`` beside its object, so a scan of the samples has enough objects for drift
  to be judged (``jobs.report.drift.MIN_OBJECTS``).
- ``write_scan`` (with ``video_row``/``face_row``): a hand-made scan, its parts and run record, for the cases the
  samples do not cover (errors, rescans, odd keys, a scan still running).
"""

from __future__ import annotations

import json
import posixpath
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.thumbs import THUMB_COLUMN
from jobs.scan.records import RUNS_DIR, RunRecord, record_bytes


def _parts(dest: Path, table: str, scan_id: str | None = None) -> list[Path]:
    parts = sorted((dest / table).glob("scan_date=*/part-*.parquet"))
    return [p for p in parts if scan_id is None or scan_id in p.name]


def drop_thumbnails(dest: Path, scan_id: str | None = None) -> int:
    """Remove ``thumb_jpeg`` from the ``faces`` parts under ``dest`` (all, or ``scan_id``'s), as an output
    written before schema 3 or with ``scan.thumbnails: 0`` looks; returns the thumbnails removed."""
    removed = 0
    for part in _parts(dest, "faces", scan_id):
        table = pq.read_table(part, partitioning=None)
        if THUMB_COLUMN in table.column_names:
            removed += table.num_rows - table[THUMB_COLUMN].null_count
            pq.write_table(table.drop_columns([THUMB_COLUMN]), part, compression="zstd")
    return removed


def widen(dest: Path, copies: int) -> None:
    """Add ``copies`` copies of every row of every part, each named ``NAME_copyN.EXT`` beside its object, so the
    folders (the report's prefixes) stay as scanned (23: the 5 scored samples become 120 per scan, enough for
    drift to be judged)."""
    for table in ("faces", "videos"):
        for part in _parts(dest, table):
            t = pq.read_table(part, partitioning=None)
            uris = t["uri"].to_pylist()
            copied = [t] + [t.set_column(t.schema.get_field_index("uri"), t.schema.field("uri"), pa.array(
                [f"{posixpath.splitext(u)[0]}_copy{k}{posixpath.splitext(u)[1]}" for u in uris]))
                for k in range(1, copies + 1)]
            pq.write_table(pa.concat_tables(copied), part, compression="zstd")


def add_shifted_run(dest: Path, shift: float, days: int = 1, suffix: str = "shift") -> str:
    """Copy the latest scan as a scan ``days`` later whose object and face scores moved by ``shift``."""
    records = sorted((dest / RUNS_DIR).glob("*.json"))
    base = RunRecord.model_validate(json.loads(records[-1].read_text()))
    started = base.started_at + timedelta(days=days)
    scan_id = f"{started:%Y%m%dT%H%M%SZ}-{suffix}"
    day = f"{started:%Y-%m-%d}"
    labels: dict[str, int] = {}
    for table in ("faces", "videos"):  # faces first, like a commit
        for i, part in enumerate(_parts(dest, table, base.scan_id)):
            t = pq.read_table(part, partitioning=None)
            score = np.asarray(t["score"].to_numpy(zero_copy_only=False), np.float64)
            moved = pa.array(np.clip(score + shift, 0, 1), t.schema.field("score").type,
                             mask=np.isnan(score) | t["score"].is_null().to_numpy(zero_copy_only=False))
            t = t.set_column(t.schema.get_field_index("score"), "score", moved)
            t = t.set_column(t.schema.get_field_index("scan_id"), "scan_id", pa.array([scan_id] * t.num_rows))
            at = t["scanned_at"].to_pylist()
            t = t.set_column(t.schema.get_field_index("scanned_at"), "scanned_at",
                             pa.array([a + timedelta(days=days) for a in at], t.schema.field("scanned_at").type))
            if table == "videos":
                label = [("FAKE" if s >= th else "REAL") if s is not None else old
                         for s, th, old in zip(t["score"].to_pylist(), t["threshold"].to_pylist(), t["label"].to_pylist())]
                t = t.set_column(t.schema.get_field_index("label"), "label", pa.array(label))
                for value in label:
                    labels[value] = labels.get(value, 0) + 1
            out = dest / table / f"scan_date={day}" / f"part-{scan_id}-{i:05d}.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(t.replace_schema_metadata(t.schema.metadata), out, compression="zstd")
    record = base.model_copy(update={"scan_id": scan_id, "started_at": started, "labels": labels,
                                     "ended_at": base.ended_at + timedelta(days=days) if base.ended_at else None})
    (dest / RUNS_DIR / f"{scan_id}.json").write_text(record.model_dump_json(indent=2) + "\n")
    return scan_id


if __name__ == "__main__":  # refresh docs/images/report.png: python tests/jobs/report/report_fixtures.py SCAN [PNG]
    import shutil
    import sys
    import tempfile

    from jobs.report.browser import screenshot
    from jobs.report.html import write_html_report

    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "scan-output"
        shutil.copytree(sys.argv[1], dest)
        widen(dest, 23)  # 5 scored samples x 24: enough objects for drift to be judged
        add_shifted_run(dest, shift=0.25)
        page = write_html_report(str(dest), Path(tmp) / "report.html")
        png = screenshot(page, Path(sys.argv[2] if len(sys.argv) > 2 else "docs/images/report.png"))
        from PIL import Image

        Image.open(png).convert("RGB").quantize(256).save(png, optimize=True)  # a third of the bytes, same look
        print(png)


def one_fake_output(dest: Path):
    """An output of one scored FAKE object (/m/a.mp4) and its one face, no thumbnail, as a schema-3 scan writes it
    with ``scan.thumbnails: 0``; returns its OutputStore."""
    from datetime import datetime, timezone

    from jobs.scan.output import OutputStore

    store = OutputStore(str(dest))
    store.prepare()
    now = datetime.now(timezone.utc)
    store.commit("part-s0-00000", "2026-01-02",
                 [{"schema_version": 3, "scan_id": "s0", "uri": "/m/a.mp4", "fingerprint": "f", "label": "FAKE",
                   "score": 0.9, "model_version": "m", "scanned_at": now}],
                 [{"schema_version": 3, "scan_id": "s0", "uri": "/m/a.mp4", "face": 0, "frame": 0, "frame_number": 0,
                   "score": 0.9, "model_version": "m", "scanned_at": now}])
    return store


def video_row(scan_id: str, uri: str, label: str, score: float | None, at: datetime, **extra) -> dict:
    """A schema-3 ``videos`` row; ``extra`` sets or overrides columns (``error``, ``error_code``, ``faces``…)."""
    return {"schema_version": 3, "scan_id": scan_id, "uri": uri, "fingerprint": "f", "label": label, "score": score,
            "faces": 0 if score is None else 1, "tracks": 0 if score is None else 1, "model_version": "m",
            "scanned_at": at, "threshold": 0.5, **extra}


def face_row(scan_id: str, uri: str, face: int, score: float, at: datetime, **extra) -> dict:
    return {"schema_version": 3, "scan_id": scan_id, "uri": uri, "face": face, "frame": face, "timestamp": float(face),
            "track": 0, "score": score, "model_version": "m", "scanned_at": at, **extra}


def write_scan(dest: Path, scan_id: str, at: datetime, videos: list[dict], faces: list[dict] = (),
               status: str = "succeeded", exit_code: int | None = 0, **record):
    """Commit ``videos``/``faces`` as scan ``scan_id`` under ``at``'s day and write its run record (``status``
    "running": no exit code, no end yet; ``record`` sets other fields, e.g. ``options``, ``deferred``); returns the
    OutputStore."""
    from jobs.scan.output import OutputStore

    store = OutputStore(str(dest))
    store.prepare()
    if videos:
        store.commit(f"part-{scan_id}-00000", f"{at:%Y-%m-%d}", videos, list(faces))
    labels: dict[str, int] = {}
    for row in videos:
        labels[row["label"]] = labels.get(row["label"], 0) + 1
    done = status != "running"
    record = RunRecord(scan_id=scan_id, status=status, exit_code=exit_code, source="s3://src/", output=str(dest),
                       started_at=at, ended_at=at + timedelta(minutes=5) if done else None,
                       elapsed_s=300.0 if done else None, model_version="m", settings_digest="x",
                       scanned=len(videos), labels=labels, **record)
    store.fs.makedirs(f"{store.root}/{RUNS_DIR}", exist_ok=True)
    store.fs.pipe(f"{store.root}/{RUNS_DIR}/{scan_id}.json", record_bytes(record))
    return store
