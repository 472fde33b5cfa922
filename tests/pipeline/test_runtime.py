"""The classifier's engines (pipeline/runtime.py): ONNX Runtime scores real crops as PyTorch does."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import photo_crops
from pipeline.checkpoint import load_checkpoint
from pipeline.classify import FaceClassifier
from pipeline.config import load_settings
from pipeline.errors import RuntimeUnavailableError
from pipeline.graph import stage_specs
from pipeline.runtime import onnx_available, resolve_runtime

ROOT = Path(__file__).resolve().parents[2]
needs_onnx = pytest.mark.skipif(not onnx_available(), reason="onnx/onnxruntime not installed")


@needs_onnx
@pytest.mark.parametrize("tta_flip", [False, True])
def test_onnx_runtime_scores_the_shipped_detector_as_torch(tta_flip):
    model, card = load_checkpoint(ROOT / "pipeline" / "checkpoints" / "detector.safetensors")
    crops = photo_crops(card.architecture.input_size, count=5)  # 5 with batches of 2: a short last batch
    torch_scores = FaceClassifier(model, card, "cpu", batch_size=2, tta_flip=tta_flip, runtime="torch").predict(crops)
    onnx = FaceClassifier(model, card, "cpu", batch_size=2, tta_flip=tta_flip, runtime="onnx")
    assert onnx.runtime == "onnx" and isinstance(onnx.model, torch.nn.Module)  # Grad-CAM keeps the module
    assert torch_scores.std() > 0.01  # real, varied scores, so agreement means something
    np.testing.assert_allclose(onnx.predict(crops), torch_scores, atol=1e-5)


def test_auto_picks_onnx_on_cpu_only_and_onnx_refuses_a_gpu():
    assert resolve_runtime("auto", torch.device("cpu")) == ("onnx" if onnx_available() else "torch")
    assert resolve_runtime("auto", torch.device("cuda")) == "torch"
    assert resolve_runtime("torch", torch.device("cpu")) == "torch"
    with pytest.raises(RuntimeUnavailableError) as error:
        resolve_runtime("onnx", torch.device("cuda"))
    assert error.value.code == "runtime_unavailable"


def test_the_setting_reaches_the_score_stage():
    spec = stage_specs(load_settings(**{"classify.runtime": "torch", "classify.onnx_cache": "/tmp/x"}))[-1]
    assert spec.kwargs["runtime"] == "torch" and str(spec.kwargs["onnx_cache"]) == "/tmp/x"
    with pytest.raises(ValueError, match="runtime"):
        load_settings(**{"classify.runtime": "tensorrt"})


@needs_onnx
def test_the_exported_graph_is_cached_and_a_damaged_entry_is_exported_again(tmp_path, monkeypatch):
    import pipeline.runtime

    model, card = load_checkpoint(ROOT / "pipeline" / "checkpoints" / "detector.safetensors")
    crops = photo_crops(card.architecture.input_size, count=3)
    first = FaceClassifier(model, card, "cpu", runtime="onnx", onnx_cache=tmp_path)
    (entry,) = tmp_path.glob("*.onnx")
    assert first.network.source == "export" and entry.stat().st_size > 1_000_000

    def no_export(*args, **kwargs):
        raise AssertionError("exported although the graph was cached")

    with monkeypatch.context() as patch:
        patch.setattr(pipeline.runtime, "export_onnx", no_export)
        second = FaceClassifier(model, card, "cpu", runtime="onnx", onnx_cache=tmp_path)
    assert second.network.source == "cache"
    np.testing.assert_array_equal(second.predict(crops), first.predict(crops))

    other = load_checkpoint(ROOT / "pipeline" / "checkpoints" / "detector.safetensors")[0]
    with torch.no_grad():
        other.head[-1].bias += 1.0  # other weights, other key: never served the first model's graph
    assert FaceClassifier(other, card, "cpu", runtime="onnx", onnx_cache=tmp_path).network.source == "export"
    assert len(list(tmp_path.glob("*.onnx"))) == 2

    entry.write_bytes(b"not an onnx graph")
    third = FaceClassifier(model, card, "cpu", runtime="onnx", onnx_cache=tmp_path)
    assert third.network.source == "export" and entry.stat().st_size > 1_000_000  # re-exported and re-cached
    np.testing.assert_array_equal(third.predict(crops), first.predict(crops))


@needs_onnx
def test_an_unwritable_cache_only_costs_the_export(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its fallback (test below) here, not in /tmp
    model, card = load_checkpoint(ROOT / "pipeline" / "checkpoints" / "detector.safetensors")
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would be")
    classifier = FaceClassifier(model, card, "cpu", runtime="onnx", onnx_cache=blocked / "onnx")
    assert classifier.network.source == "export" and classifier.predict(photo_crops(card.architecture.input_size, 2)).shape == (2,)


@needs_onnx
def test_a_process_that_finds_its_graph_cached_never_imports_onnx(tmp_path):
    """``import onnx`` is about a second of every scan actor's and serve replica's start-up on 2 cores; only
    the exporter needs it."""
    import subprocess
    import sys

    build = ("import sys; from pipeline.classify import FaceClassifier; "
             f"c = FaceClassifier.from_checkpoint({str(ROOT / 'pipeline' / 'checkpoints' / 'detector.safetensors')!r}, "
             f"'cpu', runtime='onnx', onnx_cache={str(tmp_path)!r}); print(c.network.source, 'onnx' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", build], cwd=ROOT, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    assert runs[1].stdout.split()[-2:] == ["cache", "False"]  # cached: no onnx import
    assert runs[0].stdout.split()[0] == "export"


@needs_onnx
def test_the_cache_keeps_the_most_recently_used_graphs_and_survives_other_processes(tmp_path, monkeypatch):
    """One graph per checkpoint scored (~14 MB for Lite0) would fill the disk over many runs: the cache keeps the
    ``CACHE_ENTRIES`` most recently written or loaded, and pruning never breaks a reader or a writer."""
    import os

    import onnxruntime

    import pipeline.runtime
    from pipeline.runtime import OnnxNetwork, graph_key

    monkeypatch.setattr(pipeline.runtime, "CACHE_ENTRIES", 2)
    nets = []
    for seed in range(3):  # small real networks: three weights, three graphs
        torch.manual_seed(seed)
        nets.append(torch.nn.Conv2d(3, 1, 3))
    a, b, c = (tmp_path / f"{graph_key(net, 8)}.onnx" for net in nets)
    assert [OnnxNetwork(net, 8, tmp_path).source for net in nets[:2]] == ["export", "export"]
    os.utime(a, (1, 1))  # a written long before b ...
    os.utime(b, (2, 2))
    assert OnnxNetwork(nets[0], 8, tmp_path).source == "cache"  # ... but loaded since: b is the least recently used
    stuck = tmp_path / f"{'0' * 32}.onnx"  # older still, and cannot be removed (a directory)
    stuck.mkdir()
    os.utime(stuck, (0, 0))
    theirs = tmp_path / "my-exported-model.onnx"  # the folder may be shared: what the cache did not write stays
    theirs.write_bytes(b"a user's graph")
    os.utime(theirs, (0, 0))
    with b.open("rb") as reader:  # another process has b open when it is pruned
        assert OnnxNetwork(nets[2], 8, tmp_path).source == "export"
        assert sorted(tmp_path.glob("*.onnx")) == sorted([a, c, stuck, theirs])  # b out; the stuck one left, the write done
        onnxruntime.InferenceSession(reader.read(), providers=["CPUExecutionProvider"])  # the reader gets it whole
    assert OnnxNetwork(nets[1], 8, tmp_path).source == "export"  # and b is exported again when next needed
    assert sorted(tmp_path.glob("*.onnx")) == sorted([b, c, stuck, theirs])


GRAPH = "0123456789abcdef0123456789abcdef.onnx"  # a graph_key's name; the bytes need not be a graph here


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_a_cache_that_cannot_be_written_falls_back_to_this_users_folder_under_the_temp_dir(tmp_path, temp_dir, caplog):
    """A read-only home: the warning named no setting, and every process (each scan actor) exported again."""
    from pipeline.config import temp_onnx_cache
    from pipeline.runtime import _cache, _entries

    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would be")
    with caplog.at_level(logging.WARNING, logger="pipeline.runtime"):
        _cache(blocked / "onnx" / GRAPH, b"graph")
    fallback = temp_onnx_cache()
    assert fallback.parent == temp_dir / f"deepfakestream-{os.geteuid()}" and (fallback / GRAPH).read_bytes() == b"graph"
    assert fallback.parent.stat().st_mode & 0o777 == 0o700
    assert "DFS_CLASSIFY__ONNX_CACHE" in caplog.text and str(fallback) in caplog.text
    assert _entries(blocked / "onnx", GRAPH[:-5]) == [blocked / "onnx" / GRAPH, fallback / GRAPH]  # the next process's
    assert _entries(tmp_path / "writable", GRAPH[:-5]) == [tmp_path / "writable" / GRAPH]  # only where it must


def test_a_temp_dir_folder_that_is_not_this_users_alone_is_never_read_nor_written(tmp_path, temp_dir, caplog):
    """Another user could make /tmp/deepfakestream-<uid> first and plant a graph there."""
    from pipeline.config import temp_onnx_cache
    from pipeline.runtime import _cache, _entries

    fallback = temp_onnx_cache()
    fallback.mkdir(parents=True)
    fallback.parent.chmod(0o777)
    (fallback / GRAPH).write_bytes(b"planted")
    assert _entries(fallback, GRAPH[:-5]) == []  # the default where there is no home
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert _entries(blocked / "onnx", GRAPH[:-5]) == [blocked / "onnx" / GRAPH]
    with caplog.at_level(logging.WARNING, logger="pipeline.runtime"):
        _cache(fallback / "0123456789abcdef0123456789abcde0.onnx", b"graph")
    assert (fallback / GRAPH).read_bytes() == b"planted" and len(list(fallback.iterdir())) == 1
    assert "every process exports it again" in caplog.text and "DFS_CLASSIFY__ONNX_CACHE" in caplog.text
