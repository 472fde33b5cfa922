"""notebooks/scan_analysis.ipynb runs top to bottom (nbclient, a real kernel) on a real scan of the samples
plus a shifted later run, and shows what it promises: plots, the drift flag, face thumbnails."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from report_fixtures import add_shifted_run, face_row, video_row, widen, write_scan

NOTEBOOK = Path(__file__).resolve().parents[3] / "notebooks" / "scan_analysis.ipynb"


def test_the_committed_notebook_is_valid_and_has_no_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert "jobs.report" in "".join("".join(c["source"]) for c in code)  # reuses the report, no copy of it


def _execute(output: Path, monkeypatch) -> list:
    """Run the notebook top to bottom on ``output`` with a real kernel; its cells' outputs."""
    nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[notebook]'")
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[notebook]'")
    pytest.importorskip("ipykernel", reason="pip install -e '.[notebook]'")
    monkeypatch.setenv("SCAN_OUTPUT", str(output))  # the kernel inherits the environment
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


@pytest.mark.slow
def test_the_notebook_executes_against_a_scan(scan_copy, monkeypatch):
    widen(scan_copy, 23)  # enough objects for drift to be judged
    add_shifted_run(scan_copy, shift=0.3)
    outputs = _execute(scan_copy, monkeypatch)
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert len(pngs) == 4 + 5  # runs, fake rate, scores per day, drift; one timeline per scored sample
    assert "DRIFT: latest scan differs" in text and "flags: score_shift" in text
    assert "2 run(s)" in text and "PSI recomputed here" in text
    assert html.count("data:image/jpeg;base64,") >= 5  # the suspects' face thumbnails
    assert len(re.findall(r'<img src="data:image/jpeg;base64,[^"]+" alt="face crop, score \d\.\d\d"', html)) \
        == html.count("data:image/jpeg;base64,")  # each with its text alternative, as on the page


def test_object_keys_are_shown_as_text_in_the_notebooks_html(tmp_path, monkeypatch):
    """A key is the uploader's to choose: written into the HTML output unescaped, it ran script in Jupyter."""
    at, scan = datetime(2026, 1, 1, 2, tzinfo=timezone.utc), "20260101T020000Z-aaaaaa"
    key = "s3://media/uploads/<img src=x onerror=alert(document.domain)>.mp4"
    write_scan(tmp_path / "out", scan, at, [video_row(scan, key, "FAKE", 0.9, at, faces=2)],
               [face_row(scan, key, 0, 0.9, at), face_row(scan, key, 1, 0.8, at)])
    outputs = _execute(tmp_path / "out", monkeypatch)
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "<b>s3://media/uploads/&lt;img src=x onerror=alert(document.domain)&gt;.mp4</b>: FAKE" in html, html
    assert "<img src=x" not in html and "onerror=alert(document.domain)>" not in html
