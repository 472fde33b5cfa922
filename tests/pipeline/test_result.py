"""The one record of a scored object (pipeline/result.py), built from a real row of the graph's output."""

from __future__ import annotations

import numpy as np

from pipeline.batch import object_column
from pipeline.config import Settings
from pipeline.graph import Graph, stage_specs
from pipeline.result import ScoreResult


def test_a_row_becomes_the_public_record_and_says_which_people_the_verdict_counted(detector_checkpoint, samples_dir):
    graph = Graph(stage_specs(Settings(classify={"checkpoint": detector_checkpoint})))
    out = graph({"uri": object_column([str(samples_dir / "astronauts_pair.jpg")])})
    row = {k: v[0] for k, v in out.items()}
    result = ScoreResult.from_row(row)
    assert result.label in ("REAL", "FAKE") and len(result.tracks) == 2 and all(t.counted for t in result.tracks)
    assert sum(len(t.boxes) for t in result.tracks) == len(row["face_scores"]) == result.frames[0].faces
    row["face_counted"] = np.array([True, False])  # as the stage marks a passer-by beside a long track
    shown = ScoreResult.from_row(row)
    assert [t.counted for t in shown.tracks] == [True, False]
    assert "counted" in shown.model_dump(mode="json")["tracks"][1]


def test_the_shown_score_never_crosses_the_threshold_by_rounding():
    """JSON rounds to 6 decimals, the label uses full precision: a REAL 0.46319560 at --threshold 0.46319565
    showed "score": 0.463196, over its threshold."""
    from pipeline.result import shown_score

    real = ScoreResult(uri="x", label="REAL", score=0.4631956, threshold=0.46319565, model_version="v", error=None)
    assert real.model_dump(mode="json")["score"] == 0.463195 < real.threshold
    fake = real.model_copy(update={"label": "FAKE", "score": 0.46319549, "threshold": 0.46319545})
    assert fake.model_dump(mode="json")["score"] == 0.463196 >= fake.threshold  # up, not down to 0.463195
    plain = real.model_copy(update={"score": 0.4631956, "threshold": 0.5})
    assert plain.model_dump(mode="json")["score"] == 0.463196  # far from the threshold: rounded as ever
    assert shown_score(0.46319566, 0.46319566) == 0.463196 and shown_score(0.5626, 0.563, 3) == 0.562
    assert shown_score(0.5630004, 0.563, 3) == 0.563 and shown_score(0.4321, None) == 0.4321
    assert real.model_dump()["score"] == 0.4631956  # the record keeps full precision
