"""The scan's ``videos`` and ``faces`` rows (``jobs/scan/output.py`` has their schemas) from the graph's
output batch: one ``videos`` row per object, one ``faces`` row per face of a scored object."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import numpy as np

from jobs.scan.output import SCHEMA_VERSION
from pipeline.errors import WORKER_LOST


def _float_or_none(value: Any) -> float | None:
    value = float(np.asarray(value).item())
    return None if math.isnan(value) else value


def _ts(epoch: Any) -> datetime | None:
    if epoch is None:
        return None
    value = float(np.asarray(epoch).item())
    return None if math.isnan(value) else datetime.fromtimestamp(value, timezone.utc)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def rows_from_batch(batch: dict[str, np.ndarray], scan_id: str, scanned_at: datetime) -> tuple[list[dict], list[dict]]:
    """Turn one aggregated stage batch (plus the listing columns) into ``videos`` and ``faces`` rows."""
    n = len(batch["uri"])
    videos, faces = [], []
    for i in range(n):
        uri = _text(batch["uri"][i])
        error = _text(batch["error"][i]) if "error" in batch else ""
        code = _text(batch["error_code"][i]) if "error_code" in batch else ""
        face_scores = np.asarray(batch["face_scores"][i], np.float32).reshape(-1)
        face_track = np.asarray(batch["face_track"][i], np.int64).reshape(-1)
        face_frame = np.asarray(batch["face_frame"][i], np.int64).reshape(-1)
        boxes = np.asarray(batch["face_boxes"][i], np.float32).reshape(-1, 4)
        landmarks = np.asarray(batch["face_landmarks"][i], np.float32).reshape(-1, 10)
        probs = np.asarray(batch["face_probs"][i], np.float32).reshape(-1)
        frame_indices = np.asarray(batch["frame_indices"][i], np.int64).reshape(-1)
        timestamps = np.asarray(batch["timestamps"][i], np.float64).reshape(-1)
        model_version = _text(batch["model_version"][i])
        thumbs = list(batch["face_thumbs"][i]) if "face_thumbs" in batch else []
        timings = {k: float(batch[k][i]) for k in ("decode_ms", "detect_ms", "classify_ms") if k in batch}
        etag = _text(batch["etag"][i]) if "etag" in batch else ""
        videos.append({
            "schema_version": SCHEMA_VERSION,
            "scan_id": scan_id,
            "uri": uri,
            "size": int(batch["size"][i]) if "size" in batch else None,
            "etag": etag or None,
            "mtime": _ts(batch["mtime"][i]) if "mtime" in batch else None,
            "fingerprint": _text(batch["fingerprint"][i]) if "fingerprint" in batch else "",
            "content_type": _text(batch["media_type"][i]) or None,
            "duration": float(batch["duration"][i]),
            "fps": float(batch["fps"][i]),
            "frame_count": int(batch["frame_count"][i]),
            "width": int(batch["width"][i]),
            "height": int(batch["height"][i]),
            "frames_sampled": int(batch["frames_sampled"][i]),
            "faces": int(len(face_scores)),
            "tracks": int(len(np.unique(face_track))),
            "score": _float_or_none(batch["score"][i]),
            "label": _text(batch["label"][i]),
            "threshold": _float_or_none(batch["threshold"][i]),
            "aggregation": _text(batch["aggregation"][i]) or None,
            "model_version": model_version,
            "error": error or None,
            "error_code": (code or "error") if error else None,
            "scanned_at": scanned_at,
            **timings,
            "processing_ms": sum(timings.values()),
        })
        if error:
            continue
        for j in range(len(face_scores)):
            frame = int(face_frame[j])
            faces.append({
                "schema_version": SCHEMA_VERSION,
                "scan_id": scan_id,
                "uri": uri,
                "face": j,
                "frame": frame,
                "frame_number": int(frame_indices[frame]) if frame < len(frame_indices) else None,
                "timestamp": float(timestamps[frame]) if frame < len(timestamps) else None,
                "track": int(face_track[j]) if j < len(face_track) else None,
                "box": boxes[j].tolist(),
                "landmarks": landmarks[j].tolist() if j < len(landmarks) else None,
                "probability": float(probs[j]),
                "score": float(face_scores[j]),
                "thumb_jpeg": thumbs[j] if j < len(thumbs) else None,
                "model_version": model_version,
                "scanned_at": scanned_at,
            })
    return videos, faces


def error_row(entry: dict[str, Any], message: str, scan_id: str, scanned_at: datetime, model_version: str,
              threshold: float | None, aggregation: str | None) -> dict[str, Any]:
    """A ``videos`` row for an object the pipeline never returned (its worker kept crashing)."""
    return {
        "schema_version": SCHEMA_VERSION, "scan_id": scan_id, "uri": entry["uri"], "size": entry.get("size"),
        "etag": entry.get("etag") or None, "mtime": _ts(entry.get("mtime")), "fingerprint": entry["fingerprint"],
        "label": "ERROR", "error": message, "error_code": WORKER_LOST, "model_version": model_version, "threshold": threshold,
        "aggregation": aggregation, "scanned_at": scanned_at,
    }
