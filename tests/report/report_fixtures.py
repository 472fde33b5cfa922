"""Scan outputs for the report tests, made from a real scan of the bundled samples.

- ``add_thumbnails``: what the scan will do once wired (see jobs/report/thumbs.py): re-decode each object
  with the scan's own decode settings, crop each stored face box as the detector did, and keep JPEG
  thumbnails of its top-scoring faces in a ``thumb_jpeg`` column of the ``faces`` parts.
- ``add_shifted_run``: a later scan whose scores were shifted on purpose, written the way a scan writes
  (videos/faces parts under tomorrow's ``scan_date``, a ``_runs`` record), to test the drift flag.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.report.thumbs import THUMB_COLUMN, top_face_thumbnails
from jobs.scan.records import RUNS_DIR, RunRecord

CROP = 160


def _parts(dest: Path, table: str, scan_id: str | None = None) -> list[Path]:
    parts = sorted((dest / table).glob("scan_date=*/part-*.parquet"))
    return [p for p in parts if scan_id is None or scan_id in p.name]


def add_thumbnails(dest: Path, settings=None, k: int = 3, scan_id: str | None = None) -> int:
    """Add ``thumb_jpeg`` to the ``faces`` parts under ``dest`` (all, or ``scan_id``'s), decoded with the
    scan's ``settings``; returns the thumbnails written."""
    from pipeline.config import load_settings
    from pipeline.crop import crop_face
    from pipeline.decode import decode_bytes

    settings = settings or load_settings()
    written = 0
    for part in _parts(dest, "faces", scan_id):
        table = pq.read_table(part, partitioning=None)
        thumbs: list[bytes | None] = [None] * table.num_rows
        uris = table.column("uri").to_pylist()
        for uri in dict.fromkeys(uris):
            rows = [i for i, u in enumerate(uris) if u == uri]
            frames = decode_bytes(Path(uri).read_bytes(), settings.decode).frames
            crops = np.stack([crop_face(frames[table["frame"][i].as_py()], np.asarray(table["box"][i].as_py()),
                                        CROP, settings.detect.margin)[0] for i in rows])
            scores = np.asarray([table["score"][i].as_py() for i in rows])
            for i, jpeg in zip(rows, top_face_thumbnails(crops, scores, k=k)):
                thumbs[i] = jpeg
                written += jpeg is not None
        table = table.append_column(pa.field(THUMB_COLUMN, pa.binary()), pa.array(thumbs, pa.binary()))
        pq.write_table(table, part, compression="zstd")
    return written


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


if __name__ == "__main__":  # refresh docs/images/report.png: python tests/report/report_fixtures.py SCAN [PNG]
    import shutil
    import sys
    import tempfile

    from jobs.report.browser import screenshot
    from jobs.report.html import write_html_report

    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "scan-output"
        shutil.copytree(sys.argv[1], dest)
        add_thumbnails(dest)
        add_shifted_run(dest, shift=0.25)
        page = write_html_report(str(dest), Path(tmp) / "report.html")
        png = screenshot(page, Path(sys.argv[2] if len(sys.argv) > 2 else "docs/images/report.png"))
        from PIL import Image

        Image.open(png).convert("RGB").quantize(256).save(png, optimize=True)  # a third of the bytes, same look
        print(png)
