"""The shipped default detector: it loads, its card is complete, and `score` agrees with its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import DEFAULT_CHECKPOINT, load_settings

ROOT = Path(__file__).resolve().parents[1]
REPORTS = [ROOT / "docs" / "reports" / f"report-{split}.json" for split in ("val", "test")]

pytestmark = pytest.mark.skipif(not DEFAULT_CHECKPOINT.exists(), reason="no default checkpoint shipped yet")


def test_default_checkpoint_and_card():
    from pipeline.checkpoint import load_checkpoint

    model, card = load_checkpoint(DEFAULT_CHECKPOINT)
    assert card.trained and card.version
    assert 0 < card.threshold < 1 and card.aggregation in ("mean", "confident", "track_max")
    assert card.metrics.get("validation_fit"), "threshold/aggregation must come from the validation split"
    assert card.training.get("source") and card.training.get("hyperparameters") and card.training.get("splits")
    assert DEFAULT_CHECKPOINT.stat().st_size < 25 * 1024 * 1024


@pytest.mark.parametrize("report_path", REPORTS, ids=["val", "test"])
def test_score_agrees_with_the_shipped_report(ffpp_dir, report_path):
    """Rescore a few validation / held-out videos in-process; scores must match the report within fp noise."""
    from pipeline.graph import ScoringPipeline

    report = json.loads(report_path.read_text())
    scorer = ScoringPipeline(load_settings())
    assert report["model_version"] == scorer.card.version
    checked = 0
    for row in report["per_video"][:: max(1, len(report["per_video"]) // 2)][:2]:
        path = ffpp_dir / Path(row["path"]).relative_to(Path(row["path"]).parents[1])
        result = scorer.score(str(path))
        assert result.score == pytest.approx(row["score"], abs=2e-3), path
        assert result.label == ("FAKE" if row["score"] >= report["threshold"] else "REAL")
        checked += 1
    assert checked >= 2
