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
