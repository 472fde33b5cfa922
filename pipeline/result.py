"""The one record of a scored object. CLI ``--json``, evaluation, the HTTP API and the scan's Parquet rows
(``jobs/scan/rows.py``) all build it from a row of the graph's output here (``ScoreResult.from_row``) and
nowhere else.

The record keeps full precision; rounding is JSON presentation (``mode="json"``). Per-face fields the JSON
result does not show (landmarks, thumbnails, the face's number) ride along hidden: excluded from dumps
and from the JSON schema, read by the Parquet writer and the API's explanations.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, PlainSerializer, field_serializer
from pydantic.json_schema import SkipJsonSchema

from pipeline.aggregate import label_for, track_scores
from pipeline.batch import Batch, as_text, batch_size

Label = Literal["FAKE", "REAL", "NO_FACE", "ERROR"]


def _rounded(digits: int) -> Any:
    return Annotated[float, PlainSerializer(lambda v: round(v, digits), return_type=float, when_used="json")]


R1, R3, R4, R6 = _rounded(1), _rounded(3), _rounded(4), _rounded(6)


def shown_score(score: float, threshold: float | None, digits: int = 6) -> float:
    """``score`` rounded to ``digits`` decimals, but never across ``threshold``: a REAL 0.46319560 against
    0.46319565 shows 0.463195, not 0.463196, which would read FAKE (``label_for``). Rounded towards its own
    side there (exactly: Decimal, and float conversion keeps the order), so the shown score and the label agree."""
    rounded = round(score, digits)
    if threshold is None or label_for(rounded, threshold) == label_for(score, threshold):
        return rounded
    side = ROUND_CEILING if label_for(score, threshold) == "FAKE" else ROUND_FLOOR
    return float(Decimal(score).quantize(Decimal(1).scaleb(-digits), side))


def _hidden(default: Any) -> Any:
    return Field(default, exclude=True)


class FaceBox(BaseModel):
    frame: int
    timestamp: R3
    box: list[R1]
    probability: R4
    score: R6
    face: SkipJsonSchema[int] = _hidden(-1)  # number within the object (frames, then boxes)
    landmarks: SkipJsonSchema[list[float] | None] = _hidden(None)  # 5 (x, y) pairs, source pixels
    thumb_jpeg: SkipJsonSchema[bytes | None] = _hidden(None)  # kept for the object's top faces by the scan


class TrackResult(BaseModel):
    track: int
    score: R6
    frames_seen: int
    counted: bool = True  # False: seen too briefly (fewer than the card's min_track_frames) to count in the verdict
    boxes: list[FaceBox]


class FrameResult(BaseModel):
    index: int
    frame_number: int
    timestamp: R3
    faces: int
    scores: list[R6]


class MediaInfo(BaseModel):
    type: str
    duration: R3
    fps: R3
    frame_count: int
    width: int
    height: int
    frames_sampled: int


class ScoreResult(BaseModel):
    uri: str
    label: Label
    score: float | None  # in JSON to 6 decimals on its label's side of the threshold (``shown_score``)
    threshold: float | None
    model_version: str | None
    aggregation: str | None = None
    error: str | None
    error_code: str | None = None
    media: MediaInfo | None = None
    tracks: list[TrackResult] = []
    frames: list[FrameResult] = []
    timings_ms: dict[str, R1] = {}

    @field_serializer("score", when_used="json")
    def _shown_score(self, score: float | None) -> float | None:
        return None if score is None else shown_score(score, self.threshold)

    @classmethod
    def failed(cls, uri: str, message: str, threshold: float | None = None, model_version: str | None = None,
               code: str = "error", aggregation: str | None = None,
               timings_ms: dict[str, float] | None = None) -> "ScoreResult":
        return cls(uri=uri, label="ERROR", score=None, threshold=threshold, model_version=model_version,
                   aggregation=aggregation, error=message, error_code=code, timings_ms=timings_ms or {})

    @classmethod
    def from_batch(cls, batch: Batch) -> list["ScoreResult"]:
        return [cls.from_row({k: v[i] for k, v in batch.items()}) for i in range(batch_size(batch))]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "ScoreResult":
        """The public result of one aggregated row of the stage graph."""
        return _from_row(row)

    def faces(self) -> list[tuple[int, FaceBox]]:
        """Every face of the object with its track, in face number order (frames, then boxes)."""
        return sorted(((track.track, box) for track in self.tracks for box in track.boxes), key=lambda p: p[1].face)


def _num(value: Any) -> float:
    return float(np.asarray(value).item())


def _text(row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    return None if value is None else as_text(value) or None


def _from_row(row: dict[str, Any]) -> ScoreResult:
    score = _num(row["score"])
    threshold, version, aggregation = _num(row["threshold"]), str(row["model_version"]), _text(row, "aggregation")
    error = _text(row, "error")
    timings = {k[:-3]: _num(row[k]) for k in ("decode_ms", "detect_ms", "classify_ms") if k in row}
    if error:
        return ScoreResult.failed(str(row["uri"]), error, threshold, version, _text(row, "error_code") or "error",
                                  aggregation, timings)
    frame_ids = np.asarray(row["face_frame"], np.int64).reshape(-1)
    tracks = np.asarray(row["face_track"], np.int64).reshape(-1)
    scores = np.asarray(row["face_scores"], np.float32).reshape(-1).astype(np.float64)
    boxes = np.asarray(row["face_boxes"], np.float32).reshape(-1, 4).astype(np.float64)
    landmarks = np.asarray(row["face_landmarks"], np.float32).reshape(-1, 10) if "face_landmarks" in row else None
    probs = np.asarray(row["face_probs"], np.float32).reshape(-1).astype(np.float64)
    thumbs = list(row["face_thumbs"]) if "face_thumbs" in row else []
    counted = np.asarray(row["face_counted"], bool).reshape(-1) if "face_counted" in row else np.ones(len(scores), bool)
    timestamps = np.asarray(row["timestamps"], np.float64)
    frame_numbers = np.asarray(row["frame_indices"], np.int64)

    def face(m: int) -> FaceBox:
        f = int(frame_ids[m])
        return FaceBox(frame=f, timestamp=float(timestamps[f]) if f < len(timestamps) else math.nan,
                       box=boxes[m].tolist(), probability=probs[m], score=scores[m], face=m,
                       landmarks=None if landmarks is None else landmarks[m].tolist(),
                       thumb_jpeg=thumbs[m] if m < len(thumbs) else None)

    track_results = []
    for track, track_score in track_scores(scores, tracks).items() if len(scores) else []:
        members = np.flatnonzero(tracks == track)
        track_results.append(TrackResult(track=track, score=track_score, frames_seen=len(np.unique(frame_ids[members])),
                                         counted=bool(counted[members].any()), boxes=[face(int(m)) for m in members]))
    frames = [FrameResult(index=i, frame_number=int(frame_numbers[i]), timestamp=float(timestamps[i]),
                          faces=int((frame_ids == i).sum()), scores=scores[frame_ids == i].tolist())
              for i in range(len(timestamps))]
    media = MediaInfo(type=str(row["media_type"]), duration=_num(row["duration"]), fps=_num(row["fps"]),
                      frame_count=int(_num(row["frame_count"])), width=int(_num(row["width"])),
                      height=int(_num(row["height"])), frames_sampled=int(_num(row["frames_sampled"])))
    return ScoreResult(uri=str(row["uri"]), label=str(row["label"]), score=None if math.isnan(score) else score,
                       threshold=threshold, model_version=version, aggregation=aggregation, error=None, media=media,
                       tracks=track_results, frames=frames, timings_ms=timings)
