"""The one record of a scored object: CLI ``--json``, evaluation and the HTTP API all build it from a row
of the graph's output here (``ScoreResult.from_row``) and nowhere else."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from pipeline.aggregate import track_scores

Label = Literal["FAKE", "REAL", "NO_FACE", "ERROR"]


class FaceBox(BaseModel):
    frame: int
    timestamp: float
    box: list[float]
    probability: float
    score: float


class TrackResult(BaseModel):
    track: int
    score: float
    frames_seen: int
    boxes: list[FaceBox]


class FrameResult(BaseModel):
    index: int
    frame_number: int
    timestamp: float
    faces: int
    scores: list[float]


class MediaInfo(BaseModel):
    type: str
    duration: float
    fps: float
    frame_count: int
    width: int
    height: int
    frames_sampled: int


class ScoreResult(BaseModel):
    uri: str
    label: Label
    score: float | None
    threshold: float | None
    model_version: str | None
    aggregation: str | None = None
    error: str | None
    error_code: str | None = None
    media: MediaInfo | None = None
    tracks: list[TrackResult] = []
    frames: list[FrameResult] = []
    timings_ms: dict[str, float] = {}

    @classmethod
    def failed(cls, uri: str, message: str, threshold: float | None = None, model_version: str | None = None,
               code: str = "error") -> "ScoreResult":
        return cls(uri=uri, label="ERROR", score=None, threshold=threshold, model_version=model_version,
                   error=message, error_code=code)

    @classmethod
    def from_batch(cls, batch: dict[str, np.ndarray]) -> list["ScoreResult"]:
        n = len(batch["uri"])
        return [cls.from_row({k: v[i] for k, v in batch.items()}) for i in range(n)]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "ScoreResult":
        """The public result of one aggregated row of the stage graph."""
        return _from_row(row)


def _num(value: Any) -> float:
    return float(np.asarray(value).item())


def _from_row(row: dict[str, Any]) -> ScoreResult:
    error = str(row.get("error") or "") or None
    score = _num(row["score"])
    score = None if math.isnan(score) else score
    if error:
        return ScoreResult.failed(str(row["uri"]), error, _num(row["threshold"]), str(row["model_version"]),
                                  str(row.get("error_code") or "error"))
    frame_ids = np.asarray(row["face_frame"], np.int64)
    tracks = np.asarray(row["face_track"], np.int64)
    scores = np.asarray(row["face_scores"], np.float64)
    boxes = np.asarray(row["face_boxes"], np.float64).reshape(-1, 4)
    probs = np.asarray(row["face_probs"], np.float64)
    timestamps = np.asarray(row["timestamps"], np.float64)
    frame_numbers = np.asarray(row["frame_indices"], np.int64)
    track_results = []
    for track, track_score in track_scores(scores, tracks).items() if len(scores) else []:
        members = np.flatnonzero(tracks == track)
        track_results.append(TrackResult(
            track=track, score=round(track_score, 6), frames_seen=len(np.unique(frame_ids[members])),
            boxes=[FaceBox(frame=int(frame_ids[m]), timestamp=round(float(timestamps[frame_ids[m]]), 3),
                           box=[round(float(v), 1) for v in boxes[m]], probability=round(float(probs[m]), 4),
                           score=round(float(scores[m]), 6)) for m in members],
        ))
    frames = [
        FrameResult(index=i, frame_number=int(frame_numbers[i]), timestamp=round(float(timestamps[i]), 3),
                    faces=int((frame_ids == i).sum()), scores=[round(float(s), 6) for s in scores[frame_ids == i]])
        for i in range(len(timestamps))
    ]
    media = MediaInfo(type=str(row["media_type"]), duration=round(_num(row["duration"]), 3), fps=round(_num(row["fps"]), 3),
                      frame_count=int(_num(row["frame_count"])), width=int(_num(row["width"])),
                      height=int(_num(row["height"])), frames_sampled=int(_num(row["frames_sampled"])))
    timings = {k[:-3]: round(_num(row[k]), 1) for k in ("decode_ms", "detect_ms", "classify_ms") if k in row}
    return ScoreResult(uri=str(row["uri"]), label=str(row["label"]), score=None if score is None else round(score, 6),
                       threshold=_num(row["threshold"]), model_version=str(row["model_version"]),
                       aggregation=str(row.get("aggregation") or "") or None, error=None, media=media,
                       tracks=track_results, frames=frames, timings_ms=timings)
