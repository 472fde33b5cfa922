"""An evaluation report as Markdown and its reliability diagram (jobs/training/report_md.py)."""

from __future__ import annotations

from jobs.training.evaluate import report
from jobs.training.report_md import markdown, reliability_plot

from training_fixtures import score_records


def _result() -> dict:
    records = (score_records("r", "ffpp", "REAL", [0.1, 0.3]) + score_records("f", "ffpp", "FAKE", [0.6, 0.9])
               + score_records("p", "photos", "REAL", [0.2, 0.7]))
    result = report(records, 0.5, "mean")
    return {**result, "model_version": "t", "split": "test", "sources": ["ffpp", "photos"],
            "threshold_source": "from the model card", "strategies": {}}


def test_markdown_has_every_subset_and_real_source_row():
    text = markdown(_result(), "Evaluation report — test split")
    assert text.startswith("# Evaluation report — test split\n")
    assert "| all | 6 | 2 |" in text and "| ffpp only | 4 | 2 |" in text and "| reals vs X | 4 | 2 |" in text
    assert "| photos | 2 | 1 | 0.500 |" in text and "| ffpp | 2 | 0 | 0.000 |" in text
    assert "threshold 0.5000 (from the model card)" in text and "![reliability]" not in text


def test_reliability_plot_is_written_and_linked(tmp_path):
    result = _result()
    plot = reliability_plot(result, tmp_path / "reliability-test.png", "t — test")
    assert plot is not None and plot.read_bytes().startswith(b"\x89PNG")
    assert f"![reliability]({plot.name})" in markdown({**result, "plot": plot.name}, "report")
