"""The scan driver (jobs/scan/driver.py) before any work: no torch in it, clear exits for a missing model or source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_scan_driver_never_imports_torch(detector_checkpoint, tmp_path):
    """The fused plan's driver reads the card, plans and ships stage specs; only the actors import torch and
    timm (about 4.5 s of start-up on 2 cores). Run in a fresh interpreter: this one has torch loaded."""
    code = f"""
import sys
import jobs.cli
from jobs.scan.config import ScanConfig
from jobs.scan.driver import run_scan
from jobs.scan.plan import map_plan, plan_pools
from pipeline.card import pack_checkpoint
from pipeline.config import Settings
from pipeline.graph import Graph, stage_specs

class Recorder:
    calls = []
    def map_batches(self, fn, **kw):
        self.calls.append((fn, kw))
        return self

settings = Settings(classify={{"checkpoint": {str(detector_checkpoint)!r}}})
packed = pack_checkpoint(settings.classify.checkpoint)
options = ScanConfig(source="x")
plan = plan_pools({{"CPU": 2.0}}, options)
specs = stage_specs(settings, packed=packed, torch_threads=1)
[(fn, kw)] = map_plan(Recorder(), specs, plan, options, "scan1").calls
assert fn is Graph and [s.name for s in kw["fn_constructor_kwargs"]["specs"]] == ["decode", "detect", "score", "rows"]
print(sorted(m for m in ("torch", "timm", "torchvision", "onnxruntime", "facenet_pytorch") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_scan_without_a_trained_model_exits_2_before_starting(tmp_path, samples_dir, monkeypatch):
    from typer.testing import CliRunner

    from jobs.cli import app

    monkeypatch.setenv("DFS_CLASSIFY__CHECKPOINT", str(tmp_path / "missing.safetensors"))
    result = CliRunner().invoke(app, ["scan", str(samples_dir), "-o", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2
    assert "no trained detector" in result.output
    assert not (tmp_path / "out").exists()


def test_scan_of_a_missing_source_exits_2(tmp_path, detector_env):
    from typer.testing import CliRunner

    from jobs.cli import app

    result = CliRunner().invoke(app, ["scan", str(tmp_path / "nope"), "-o", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2 and "source not found" in result.output
