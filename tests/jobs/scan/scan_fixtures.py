"""Media (the bundled samples plus one file of every kind of bad input), readers, the CLI app, run records and an
output holding unreadable parts: what several scan test modules share."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from jobs.scan.output import OutputStore


GOOD = ("astronaut_zoom.mp4", "pair_pan.mp4", "astronaut.jpg", "coffee.jpg")


ERRORS = {  # object name → words its `error` text must contain
    "empty.mp4": "empty",
    "truncated.mp4": "corrupt",
    "corrupt.mp4": "corrupt",
    "notavideo.mp4": "not a supported image or video",
    "huge.png": "over the",
}


ERROR_ROW = {"schema_version": 1, "scan_id": "old", "uri": "/media/a.mp4", "fingerprint": "size:1:mtime:0",
             "label": "ERROR", "error": "x", "model_version": "m"}


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height), (90, 120, 150) if mode == "RGB" else 1).save(buffer, format="PNG")
    return buffer.getvalue()


def media(samples_dir: Path) -> dict[str, bytes]:
    """Relative key → bytes: the bundled samples plus one file of every kind of bad input."""
    video = (samples_dir / "astronaut_zoom.mp4").read_bytes()
    corrupt = bytearray(video)
    corrupt[2000:60000] = np.random.default_rng(0).integers(0, 256, 58000, dtype=np.uint8).tobytes()
    files = {f"good/{name}": (samples_dir / name).read_bytes() for name in GOOD}
    files.update({
        "bad/empty.mp4": b"",
        "bad/truncated.mp4": video[: len(video) // 3],
        "bad/corrupt.mp4": bytes(corrupt),
        "bad/notavideo.mp4": b"this is a text file, not a video\n" * 20,
        "bad/huge.png": png(10000, 9000, mode="1"),  # 90 Mpx: a photo that big is refused, not scaled down (PIL's limit)
        "notes.txt": b"not media: never listed\n",
    })
    return files


def object_name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


def read_table(store: OutputStore, table: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(store.list_parts(table).values())
    if not parts:
        return []
    return pa.concat_tables([pq.read_table(io.BytesIO(store.fs.cat_file(p))) for p in parts]).to_pylist()


def latest_rows(store: OutputStore, scan_id: str | None = None, prefix: str = "") -> dict[tuple[str, str, str], str]:
    """(uri, fingerprint, model_version) → label of each object's latest row (``OutputStore.latest``)."""
    table = store.latest(scan_id, prefix=prefix)
    return {(u, f, m): label for u, f, m, label in zip(*(table.column(c).to_pylist()
                                                         for c in ("uri", "fingerprint", "model_version", "label")))}


def _app():
    from jobs.cli import app

    return app


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "_runs").glob("*.json"))]


def _store_with_parts(out: Path) -> OutputStore:
    """An output holding one good committed part, a non-Parquet `part-*.parquet` in videos and in faces."""
    store = OutputStore(str(out))
    store.prepare()
    store.commit("part-old-00000", "2026-01-02", [{**ERROR_ROW, "scanned_at": datetime.now(timezone.utc)}], [])
    for table in ("videos", "faces"):
        bad = out / table / "scan_date=2026-01-03" / "part-garbage-00000.parquet"
        bad.parent.mkdir(parents=True, exist_ok=True)
        bad.write_bytes(b"this is not parquet\n" * 10)
    return store
