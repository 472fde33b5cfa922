"""Batch scan (``deepfakestream scan``), its Parquet output, ``query`` and ``report``.

The end-to-end tests run a real local S3 server (moto in server mode on 127.0.0.1), upload real
videos and broken files, and scan ``s3://…`` into ``s3://…`` on the session's Ray instance with 4
frames per video to stay quick on 2 cores. Long on purpose: the end-to-end cases share one
module-scoped scan of one bucket (the costly part), so they stay in one module.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from jobs.scan.config import ScanConfig
from jobs.scan.driver import run_scan
from jobs.scan.listing import storage_options_for
from jobs.scan.plan import plan_pools
from jobs.scan.output import FACES_SCHEMA, OutputStore, SCHEMA_VERSION
from jobs.scan.rows import nest, tables_from_batch, unnest
from pipeline.decode import DecodeStage

from helpers import process_title, process_tree

ROOT = Path(__file__).resolve().parents[2]

FRAMES = 4
GOOD = ("astronaut_zoom.mp4", "pair_pan.mp4", "astronaut.jpg", "coffee.jpg")
ERRORS = {  # object name → words its `error` text must contain
    "empty.mp4": "empty",
    "truncated.mp4": "corrupt",
    "corrupt.mp4": "corrupt",
    "notavideo.mp4": "not a supported image or video",
    "huge.png": "over the",
}


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buffer, format="PNG")
    return buffer.getvalue()


def _media(samples_dir: Path) -> dict[str, bytes]:
    """Relative key → bytes: the bundled samples plus one file of every kind of bad input."""
    video = (samples_dir / "astronaut_zoom.mp4").read_bytes()
    corrupt = bytearray(video)
    corrupt[2000:60000] = np.random.default_rng(0).integers(0, 256, 58000, dtype=np.uint8).tobytes()
    files = {f"good/{name}": (samples_dir / name).read_bytes() for name in GOOD}
    files.update({
        "bad/empty.mp4": b"",
        "bad/truncated.mp4": video[: len(video) // 3],
        "bad/corrupt.mp4": bytes(corrupt),
        "bad/notavideo.mp4": b"this is a text file, not a video\n" * 20,
        "bad/huge.png": _png(5000, 4000),  # 20 Mpx, over the 16.7 Mpx decode limit
        "notes.txt": b"not media: never listed\n",
    })
    return files


def _name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


def _read_table(store: OutputStore, table: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(store.list_parts(table).values())
    if not parts:
        return []
    return pa.concat_tables([pq.read_table(io.BytesIO(store.fs.cat_file(p))) for p in parts]).to_pylist()


@pytest.fixture(scope="module")
def settings(detector_env):
    from pipeline.config import load_settings

    return load_settings(**{"decode.num_frames": FRAMES})


@pytest.fixture(scope="module")
def media_bucket(s3_server, samples_dir):
    """A bucket with the media under ``in/``: 4 good objects, 5 broken ones and one non-media file."""
    import uuid

    import boto3

    client = boto3.client("s3", endpoint_url=s3_server["endpoint_url"])
    bucket = f"dfs-scan-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    for key, data in _media(samples_dir).items():
        client.put_object(Bucket=bucket, Key=f"in/{key}", Body=data)
    return bucket


def _options(source: str, output: str, **overrides) -> ScanConfig:
    base = {"progress": False, "commit_every": 3, "classify_batch": 2}
    base.update(overrides)
    return ScanConfig(source=source, output=output, **base)


@pytest.fixture(scope="module")
def first_scan(ray_session, media_bucket, settings):
    source, output = f"s3://{media_bucket}/in", f"s3://{media_bucket}/out"
    summary = run_scan(settings, _options(source, output))
    return summary, source, output


# ------------------------------------------------------------------------- unit tests (no Ray)
def _cpus_asked(plan) -> float:
    return plan.cpus_per_actor * (plan.fused_actors + plan.decode_actors + plan.detect_actors + plan.classify_actors)


@pytest.mark.parametrize("kind", ["fused", "split"])
@pytest.mark.parametrize("cpus", [1, 2, 3, 4, 16, 64])
def test_actor_pools_leave_a_cpu_for_ray_data(cpus, kind):
    plan = plan_pools({"CPU": float(cpus)}, ScanConfig(source="x", plan=kind))
    assert plan.plan == kind and _cpus_asked(plan) <= max(cpus - 1, cpus / 2) + 1e-6
    assert plan.detect_gpus == plan.classify_gpus == 0
    forced = plan_pools({"CPU": float(cpus)}, ScanConfig(source="x", plan=kind, detect_actors=8, classify_actors=8,
                                                         fused_actors=16))
    assert _cpus_asked(forced) <= max(cpus - 1, cpus / 2) + 1e-3


def test_a_cpu_only_cluster_gets_the_fused_plan_one_actor_per_core():
    plan = plan_pools({"CPU": 2.0}, ScanConfig(source="x"))
    assert (plan.plan, plan.fused_actors, plan.torch_threads, plan.cpus_per_actor) == ("fused", 2, 1, 0.5)
    assert plan.decode_actors == plan.detect_actors == plan.classify_actors == 0
    assert plan.line() == "plan: fused (auto: no GPU): 2 actors decode→detect→score, 0.5 CPU and 1 torch thread(s) each"
    assert plan_pools({"CPU": 2.0}, ScanConfig(source="x", plan="split")).plan == "split"


def test_no_pool_is_larger_than_the_objects_it_will_see():
    fused = plan_pools({"CPU": 4.0}, ScanConfig(source="x"))
    split = plan_pools({"CPU": 16.0, "GPU": 2.0}, ScanConfig(source="x"))
    assert fused.fused_actors > 1 and min(split.decode_actors, split.detect_actors, split.classify_actors) > 1
    one = fused.at_most(1), split.at_most(1)
    assert one[0].fused_actors == 1 and one[0].decode_actors == one[0].detect_actors == one[0].classify_actors == 0
    assert (one[1].fused_actors, one[1].decode_actors, one[1].detect_actors, one[1].classify_actors) == (0, 1, 1, 1)
    assert one[1].detect_gpus == split.detect_gpus and fused.at_most(0).fused_actors == 1  # shares unchanged; never 0
    assert fused.at_most(10_000) == fused and split.at_most(10_000) == split


def test_model_actors_share_gpus_when_the_cluster_has_them():
    plan = plan_pools({"CPU": 16.0, "GPU": 2.0}, ScanConfig(source="x"))
    assert (plan.plan, plan.why) == ("split", "auto: 2 GPU in the cluster")
    assert plan.detect_actors == plan.classify_actors == 2 and plan.fused_actors == 0
    assert plan.detect_gpus == plan.classify_gpus == 0.5
    assert plan.line() == ("plan: split (auto: 2 GPU in the cluster): 8 decode → 2 detect → 2 score actors, 1 CPU and "
                           "1 torch thread(s) each; 0.5 GPU per model actor")
    on_cpu = plan_pools({"CPU": 16.0, "GPU": 2.0}, ScanConfig(source="x"), device="cpu")
    assert (on_cpu.plan, on_cpu.detect_gpus) == ("fused", 0)
    fused = plan_pools({"CPU": 4.0, "GPU": 1.0}, ScanConfig(source="x", plan="fused"))
    assert (fused.plan, fused.why, fused.fused_actors, fused.detect_gpus) == ("fused", "chosen", 4, 0.25)


class _RecordingDataset:
    """Stands in for a Ray dataset: records what each map_batches call asks for."""

    def __init__(self):
        self.calls = []

    def map_batches(self, fn, **kwargs):
        self.calls.append((fn, kwargs))
        return self


@pytest.mark.parametrize("cluster, kind", [({"CPU": 2.0}, "fused"), ({"CPU": 2.0, "GPU": 1.0}, "split")])
def test_the_plan_maps_the_graph_and_model_actors_ask_for_gpus(cluster, kind):
    from jobs.scan.plan import map_plan
    from jobs.scan.rows import RowsStage
    from pipeline.graph import Graph, StageSpec

    options = ScanConfig(source="x", classify_batch=3)
    plan = plan_pools(cluster, options)
    specs = [StageSpec(name, object, {"stage": name}) for name in ("decode", "detect", "score")]
    calls = map_plan(_RecordingDataset(), specs, plan, options, "scan1").calls
    assert all(fn is Graph for fn, _ in calls)  # every pool: the graph over its stages
    pools = [(fn, [s.name for s in kw["fn_constructor_kwargs"]["specs"]],
              kw["compute"].min_size, kw["batch_size"], kw["num_gpus"], kw["num_cpus"]) for fn, kw in calls]
    if kind == "fused":  # one pool, one actor per core, the whole graph and the rows in each
        assert pools == [(Graph, ["decode", "detect", "score", "rows"], 2, 1, None, 0.5)]
    else:  # decode on CPU; the model actors ask for the GPU (shared by two pools)
        assert plan.plan == "split" and [p[4] for p in pools] == [None, 0.5, 0.5]
        assert pools[0][1] == ["decode"] and pools[1][1] == ["detect"]
        assert pools[2][:2] == (Graph, ["score", "rows"]) and pools[2][3] == 3
    last = calls[-1][1]["fn_constructor_kwargs"]["specs"][-1]
    assert (last.cls, last.kwargs) == (RowsStage, {"scan_id": "scan1"})
    assert options.tasks_per_actor == 2  # the first pass's default: the next batch waits on the actor
    assert all(kw["max_task_retries"] == options.max_task_retries and kw["compute"].max_tasks_in_flight_per_actor == 2
               for _, kw in calls)
    rescan = options.model_copy(update={"tasks_per_actor": 1})  # what the driver's rescan passes use
    assert all(kw["compute"].max_tasks_in_flight_per_actor == 1
               for _, kw in map_plan(_RecordingDataset(), specs, plan, rescan, "scan1").calls)


def test_work_goes_out_largest_first_and_small_scans_queue_one_batch_per_actor(monkeypatch):
    """Longest-processing-time-first: big objects start early, small ones fill the end. With fewer objects
    than two per actor, each actor holds one, so the first actor up cannot take them all."""
    import ray.data

    from jobs.scan.plan import build_dataset, work_order
    from pipeline.graph import StageSpec

    entries = [{"uri": u, "size": s} for u, s in [("a", 5), ("b", 90), ("c", 5), ("d", None), ("e", 40)]]
    assert [e["uri"] for e in work_order(entries)] == ["b", "e", "a", "c", "d"]  # stable for equal sizes
    seen = {}

    def from_items(items, **kwargs):
        seen["uris"] = [item["uri"] for item in items]
        return _RecordingDataset()

    monkeypatch.setattr(ray.data, "from_items", from_items)
    options = ScanConfig(source="x")
    plan = plan_pools({"CPU": 2.0}, options)  # fused, two actors
    specs = [StageSpec(name, object, {}) for name in ("decode", "detect", "score")]
    in_flight = {n: build_dataset(entries[:n], specs, plan, options, "s").calls[0][1]["compute"].max_tasks_in_flight_per_actor
                 for n in (2, 3, 4, 5)}
    assert in_flight == {2: 1, 3: 1, 4: 2, 5: 2} and seen["uris"] == ["b", "e", "a", "c", "d"]


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
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_ray_data_advice_is_silenced_for_the_scan_and_restored_after():
    from ray.data import DataContext

    from jobs.scan.plan import data_context

    ctx = DataContext.get_current()
    before = list(ctx.issue_detectors_config.detectors)
    assert before  # Ray Data's default: detectors that print advice about its own API mid-scan
    with data_context(ScanConfig(source="x")):
        assert ctx.issue_detectors_config.detectors == []
    assert ctx.issue_detectors_config.detectors == before
    with data_context(ScanConfig(source="x", verbose=True)):  # --verbose keeps everything Ray says
        assert ctx.issue_detectors_config.detectors == before


def test_the_failed_batch_budget_counts_crashing_objects_whatever_the_batches_in_flight():
    from ray.data import DataContext

    from jobs.scan.plan import data_context

    ctx = DataContext.get_current()
    before = ctx.max_errored_blocks
    with data_context(ScanConfig(source="x", max_failed_batches=5, tasks_per_actor=2)):
        assert ctx.max_errored_blocks == 10  # each crash may fail the batch queued behind it too
    with data_context(ScanConfig(source="x", max_failed_batches=5, tasks_per_actor=1)):
        assert ctx.max_errored_blocks == 5
    with data_context(ScanConfig(source="x", max_failed_batches=0)):
        assert ctx.max_errored_blocks == 0  # 0 still stops at the first failure
    assert ctx.max_errored_blocks == before


def test_the_plan_is_a_setting_of_file_environment_and_flag(monkeypatch, tmp_path):
    from pydantic import ValidationError

    from pipeline.config import load_settings

    assert load_settings().scan.plan == "auto"
    (tmp_path / "c.yaml").write_text("scan:\n  plan: split\n")
    assert load_settings(tmp_path / "c.yaml").scan.plan == "split"
    monkeypatch.setenv("DFS_SCAN__PLAN", "fused")
    assert load_settings(tmp_path / "c.yaml").scan.plan == "fused"
    assert load_settings(tmp_path / "c.yaml", **{"scan.plan": "split"}).scan.plan == "split"
    with pytest.raises(ValidationError, match="plan"):
        load_settings(**{"scan.plan": "both"})


def test_the_plan_flag_reaches_the_scan(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import jobs.scan.driver
    from jobs.cli import app

    seen = []

    def fake_run_scan(settings, options=None, on_commit=None, on_plan=None):
        seen.append(settings.scan.plan)
        raise jobs.scan.driver.ScanError("stop here")

    monkeypatch.setattr(jobs.scan.driver, "run_scan", fake_run_scan)
    for flag in ("fused", "split", "auto"):
        result = CliRunner().invoke(app, ["scan", str(tmp_path), "--plan", flag, "--no-progress"])
        assert result.exit_code == 2 and "stop here" in result.output
    assert seen == ["fused", "split", "auto"]
    assert CliRunner().invoke(app, ["scan", str(tmp_path), "--plan", "both"]).exit_code == 2 and len(seen) == 3


def test_storage_options_take_the_endpoint_from_flag_or_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    assert storage_options_for("/local/path") == {}
    options = storage_options_for("s3://bucket/prefix")
    assert options["client_kwargs"] == {"endpoint_url": "http://127.0.0.1:1"}
    assert (options["key"], options["secret"]) == ("a", "b")
    assert storage_options_for("s3://b", endpoint_url="http://x:2")["client_kwargs"]["endpoint_url"] == "http://x:2"
    assert storage_options_for("s3://b", anon=True)["anon"] is True


def test_listing_filters_by_extension_glob_and_count(tmp_path, samples_dir):
    from jobs.scan.listing import list_objects

    for key, data in _media(samples_dir).items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(data)
    entries = list_objects(str(tmp_path), {})
    assert sorted(_name(e["uri"]) for e in entries) == sorted(list(GOOD) + list(ERRORS))
    assert all(e["fingerprint"].startswith("size:") and os.path.isabs(e["uri"]) for e in entries)
    assert [_name(e["uri"]) for e in list_objects(str(tmp_path), {}, include=("good/*",), exclude=("*.jpg",))] == \
        ["astronaut_zoom.mp4", "pair_pan.mp4"]
    assert len(list_objects(str(tmp_path), {}, max_objects=3)) == 3
    assert len(list_objects(str(tmp_path / "good" / "coffee.jpg"), {})) == 1
    # the scheme's case does not matter (URIs are normalised once, before fsspec)
    assert [e["uri"] for e in list_objects(f"FILE://{tmp_path}", {})] == [e["uri"] for e in entries]
    # symlinks are followed (a folder of links to videos elsewhere is scanned); dangling ones are skipped
    links = tmp_path / "links"
    links.mkdir()
    (links / "clip.mp4").symlink_to(tmp_path / "good" / "pair_pan.mp4")
    (links / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    (linked,) = list_objects(str(links), {})
    assert _name(linked["uri"]) == "clip.mp4" and linked["size"] == (tmp_path / "good" / "pair_pan.mp4").stat().st_size


def test_local_commits_are_atomic_and_crash_leftovers_are_cleaned(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    store.prepare()
    manifest = json.loads((tmp_path / "out" / "_deepfakestream.json").read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION and "videos" in manifest["tables"]
    row = {"schema_version": 1, "scan_id": "s", "uri": "/a.mp4", "fingerprint": "size:1:mtime:0", "label": "ERROR",
           "error": "x", "model_version": "m", "scanned_at": __import__("datetime").datetime.now()}
    store.commit("part-s-00000", "2026-01-02", [row], [])
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert files == ["_deepfakestream.json", "faces/scan_date=2026-01-02/part-s-00000.parquet",
                     "videos/scan_date=2026-01-02/part-s-00000.parquet"]  # no temporary file left behind
    # What a crash leaves: a half-written temporary file and a faces part whose videos part never landed.
    day = tmp_path / "out" / "faces" / "scan_date=2026-01-02"
    (day / ".part-s-00001.parquet.tmp").write_bytes(b"PAR1 half")
    shutil.copy(day / "part-s-00000.parquet", day / "part-s-00001.parquet")
    assert store.scanned() == {("/a.mp4", "size:1:mtime:0", "m"): "ERROR"}
    OutputStore(str(tmp_path / "out")).prepare()
    assert sorted(p.name for p in day.iterdir()) == ["part-s-00000.parquet"]


def test_output_of_another_schema_version_is_refused(tmp_path):
    from jobs.scan.output import OutputError

    (tmp_path / "_deepfakestream.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(OutputError, match="schema version"):
        OutputStore(str(tmp_path)).prepare()


def test_rows_keep_faces_of_scored_objects_only():
    from datetime import datetime, timezone

    from pipeline.batch import object_column

    batch = {
        "uri": object_column(["s3://b/a.mp4", "s3://b/bad.mp4"]), "size": np.array([10, 0]),
        "etag": object_column(["e1", ""]), "mtime": np.array([1.7e9, np.nan]),
        "fingerprint": object_column(["etag:e1", "size:0:mtime:none"]),
        "error": object_column(["", "file is empty (0 bytes)"]), "media_type": object_column(["video/mp4", ""]),
        "duration": np.array([4.0, 0]), "fps": np.array([25.0, 0]), "frame_count": np.array([100, 0]),
        "width": np.array([480, 0]), "height": np.array([360, 0]), "frames_sampled": np.array([2, 0]),
        "frame_indices": object_column([np.array([0, 99]), np.zeros(0, np.int64)]),
        "timestamps": object_column([np.array([0.0, 3.96], np.float32), np.zeros(0, np.float32)]),
        "face_frame": object_column([np.array([0, 1]), np.zeros(0, np.int64)]),
        "face_boxes": object_column([np.ones((2, 4), np.float32), np.zeros((0, 4), np.float32)]),
        "face_landmarks": object_column([np.ones((2, 5, 2), np.float32), np.zeros((0, 5, 2), np.float32)]),
        "face_probs": object_column([np.array([0.99, 0.98], np.float32), np.zeros(0, np.float32)]),
        "face_track": object_column([np.array([0, 0]), np.zeros(0, np.int64)]),
        "face_scores": object_column([np.array([0.2, 0.4], np.float32), np.zeros(0, np.float32)]),
        "score": np.array([0.3, np.nan]), "label": object_column(["REAL", "ERROR"]), "threshold": np.array([0.5, 0.5]),
        "model_version": object_column(["v1", "v1"]), "aggregation": object_column(["mean", "mean"]),
        "decode_ms": np.array([1.0, 0.1]), "detect_ms": np.array([2.0, 0.0]), "classify_ms": np.array([3.0, 0.0]),
    }
    tables = tables_from_batch(batch, "scan1", datetime.now(timezone.utc))
    assert all(a.equals(b) for a, b in zip(unnest(nest(*tables)), tables))  # as the driver gets them from the actor
    videos, faces = (t.to_pylist() for t in tables)
    assert [v["label"] for v in videos] == ["REAL", "ERROR"]
    assert videos[0]["error"] is None and videos[1]["error"] == "file is empty (0 bytes)"
    assert videos[1]["score"] is None and videos[1]["mtime"] is None and videos[0]["processing_ms"] == 6.0
    assert (videos[0]["faces"], videos[0]["tracks"]) == (2, 1)
    assert [(f["frame"], f["frame_number"], f["timestamp"]) for f in faces] == [(0, 0, 0.0), (1, 99, pytest.approx(3.96))]
    assert set(faces[0]) == set(FACES_SCHEMA.names)


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


# ------------------------------------------------------------------- end to end on local S3
@pytest.mark.slow
def test_s3_scan_writes_one_row_per_object_with_clear_errors(first_scan, media_bucket, s3_server):
    summary, _source, output = first_scan
    assert (summary.seen, summary.skipped, summary.scanned, summary.lost) == (9, 0, 9, 0)
    assert (summary.failed, summary.no_face) == (5, 1)
    assert summary.fakes + summary.reals == 3
    # the run's errors are counted by stable code (one per row), whatever the messages say
    assert sum(summary.errors.values()) == 5 and all(re.fullmatch(r"[a-z_]+", k) for k in summary.errors)
    assert summary.errors.get("media_too_large") == 1 and summary.errors.get("media_empty") == 1, summary.errors
    store = OutputStore(output, s3_server["storage_options"])
    videos = _read_table(store, "videos")
    assert sorted(_name(v["uri"]) for v in videos) == sorted(list(GOOD) + list(ERRORS))  # one row each
    by_name = {_name(v["uri"]): v for v in videos}
    for name, words in ERRORS.items():
        assert by_name[name]["label"] == "ERROR" and words in by_name[name]["error"], by_name[name]
        assert by_name[name]["score"] is None
    coffee = by_name["coffee.jpg"]
    assert (coffee["label"], coffee["error"], coffee["score"], coffee["faces"]) == ("NO_FACE", None, None, 0)
    for name in ("astronaut_zoom.mp4", "pair_pan.mp4", "astronaut.jpg"):
        row = by_name[name]
        assert row["label"] in ("FAKE", "REAL") and 0 <= row["score"] <= 1 and row["faces"] >= 1, row
        assert row["etag"] and row["fingerprint"] == f"etag:{row['etag']}" and row["size"] > 0
        assert row["model_version"] == summary.model_version and row["scan_id"] == summary.scan_id
    assert by_name["astronaut_zoom.mp4"]["content_type"] == "video/mp4"
    assert by_name["astronaut_zoom.mp4"]["frames_sampled"] == FRAMES and by_name["pair_pan.mp4"]["tracks"] == 2
    faces = _read_table(store, "faces")
    assert len(faces) == sum(v["faces"] for v in videos)
    assert {f["uri"] for f in faces} == {v["uri"] for v in videos if v["faces"]}
    assert all(len(f["box"]) == 4 and 0 <= f["score"] <= 1 for f in faces)
    day = summary.scan_id[:4] + "-" + summary.scan_id[4:6] + "-" + summary.scan_id[6:8]
    assert all(f"/scan_date={day}/part-{summary.scan_id}-" in p for p in store.list_parts("videos").values())
    assert store.fs.exists(f"{store.root}/_deepfakestream.json")


@pytest.mark.slow
def test_s3_scan_scores_equal_the_score_command(first_scan, s3_server):
    """The Ray Data scan and `deepfakestream score` (the in-process graph) agree on every object."""
    from typer.testing import CliRunner

    from jobs.cli import app

    summary, _source, output = first_scan
    videos = {v["uri"]: v for v in _read_table(OutputStore(output, s3_server["storage_options"]), "videos")}
    result = CliRunner().invoke(app, ["score", *sorted(videos), "--json", "--frames", str(FRAMES)])
    assert result.exit_code == 0, result.output
    scored = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(scored) == len(videos)
    for reference in scored:
        row = videos[reference["uri"]]
        assert row["label"] == reference["label"], (row, reference)
        assert (row["error"] or None) == reference["error"]
        if reference["score"] is None:
            assert row["score"] is None
        else:
            assert row["score"] == pytest.approx(reference["score"], abs=2e-5)
            assert row["faces"] == sum(f["faces"] for f in reference["frames"])
            assert row["tracks"] == len(reference["tracks"])


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_gpu_cluster_gets_the_split_plan_and_the_fused_plans_rows(first_scan, media_bucket, s3_server):
    """The whole command on a local Ray instance that declares a GPU it does not have (``--num-gpus 1``):
    auto picks the split plan and says so in one line, the model actors ask for the GPU, torch falls back
    to the CPU inside them, and every row is the fused plan's (first_scan: auto on the CPU-only session).
    ``--shrink-frames`` changes nothing here: the samples are within the detector's 640 px working size."""
    summary, source, output = first_scan
    assert summary.plan["plan"] == "fused"
    split_output = f"s3://{media_bucket}/out-split"
    result = subprocess.run([sys.executable, "-m", "jobs.cli", "scan", source, "-o", split_output, "--num-cpus", "2",
                             "--num-gpus", "1", "--frames", str(FRAMES), "--classify-batch", "2", "--commit-every", "3", "--shrink-frames",
                             "--no-progress", "--json"], capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert result.returncode == 4, result.stderr[-3000:]  # 5 of 9 objects are broken: over --max-error-rate
    plan_lines = [line for line in result.stderr.splitlines() if line.startswith("plan: ")]
    assert plan_lines == ["plan: split (auto: 1 GPU in the cluster): 1 decode → 1 detect → 1 score actors, 0.3333 CPU "
                          "and 1 torch thread(s) each; 0.5 GPU per model actor"], result.stderr[-3000:]
    split = json.loads(result.stdout.strip().splitlines()[-1])
    assert (split["plan"]["plan"], split["plan"]["detect_gpus"], split["plan"]["classify_gpus"]) == ("split", 0.5, 0.5)
    assert (split["scanned"], split["failed"], split["lost"]) == (9, 5, 0)

    def rows(where: str, table: str) -> dict:
        return {(r["uri"], r.get("face")): r for r in _read_table(OutputStore(where, s3_server["storage_options"]), table)}

    for table, same, close in (("videos", ("label", "error", "error_code", "faces", "tracks", "frames_sampled", "width"), ("score",)),
                               ("faces", ("frame", "frame_number", "track"), ("box", "landmarks", "probability", "score"))):
        fused, by_split = rows(output, table), rows(split_output, table)
        assert sorted(fused) == sorted(by_split) and fused
        for key, row in fused.items():
            other = by_split[key]
            assert {c: row[c] for c in same} == {c: other[c] for c in same}, key
            for column in close:  # same pixels and crops; only the classifier's batch differs
                assert (row[column] is None) == (other[column] is None), (key, column)
                if row[column] is not None:
                    assert np.allclose(row[column], other[column], atol=2e-5), (key, column, row[column], other[column])


@pytest.mark.slow
def test_second_scan_skips_everything_and_full_rescans(first_scan, settings, s3_server):
    summary, source, output = first_scan
    store = OutputStore(output, s3_server["storage_options"])
    parts = set(store.list_parts("videos"))
    again = run_scan(settings, _options(source, output))
    assert (again.seen, again.skipped, again.scanned, again.parts) == (9, 9, 0, 0)
    assert set(store.list_parts("videos")) == parts  # nothing written
    from jobs.scan.records import read_records

    quiet = next(r for r in read_records(store.fs, store.root) if r.scan_id == again.scan_id)  # but a run record
    assert (quiet.status, quiet.exit_code, quiet.listed, quiet.skipped, quiet.scanned) == ("succeeded", 0, 9, 9, 0)

    full = run_scan(settings, _options(source, output, full=True))
    assert (full.seen, full.skipped, full.scanned, full.failed) == (9, 0, 9, 5)
    rows = _read_table(store, "videos")
    assert len(rows) == 18 and {r["scan_id"] for r in rows} == {summary.scan_id, full.scan_id}


@pytest.mark.slow
def test_s3_scan_over_the_error_rate_commits_everything_records_and_exits_4(first_scan, s3_server):
    from jobs.query.sql import run_query
    from jobs.report.text import report
    from jobs.scan.records import read_records

    summary, _source, output = first_scan
    assert (summary.status, summary.exit_code) == ("too_many_errors", 4)  # 5 of 9 > the default 0.5
    assert summary.error_rate == pytest.approx(5 / 9, abs=1e-3) and "over --max-error-rate" in summary.message
    store = OutputStore(output, s3_server["storage_options"])
    record = next(r for r in read_records(store.fs, store.root) if r.scan_id == summary.scan_id)
    assert (record.status, record.exit_code, record.listed, record.scanned) == ("too_many_errors", 4, 9, 9)
    assert record.labels["ERROR"] == 5 and sum(record.errors.values()) == 5 and len(record.errors) >= 3
    assert record.parts == summary.parts and record.ended_at
    assert (record.plan["plan"], record.plan["fused_actors"]) == ("fused", 2)  # auto, on 2 CPUs without a GPU
    assert not store.fs.exists(f"{store.root}/_lease.json")
    _columns, rows = run_query(output, f"SELECT status, exit_code, scanned, failed FROM runs WHERE scan_id = '{summary.scan_id}'")
    assert rows == [("too_many_errors", 4, 9, 5)]
    assert summary.scan_id in [r["scan_id"] for r in report(output)["runs"]]


@pytest.mark.slow
def test_query_and_report_on_s3_scan_output(first_scan, s3_server, monkeypatch):
    from typer.testing import CliRunner

    from jobs.cli import app

    _summary, _source, output = first_scan
    runner = CliRunner()
    result = runner.invoke(app, ["query", "-o", output, "--format", "json",
                                 "SELECT label, count(*) AS n FROM videos GROUP BY label ORDER BY label"])
    assert result.exit_code == 0, result.output
    assert {r["label"]: r["n"] for r in json.loads(result.stdout)}["ERROR"] == 5
    result = runner.invoke(app, ["query", "-o", output, "--format", "csv",
                                 "SELECT count(*) AS faces, count(DISTINCT uri) AS objects FROM faces"])
    assert result.exit_code == 0, result.output
    header, values = result.stdout.strip().splitlines()
    assert header == "faces,objects" and int(values.split(",")[1]) == 3
    result = runner.invoke(app, ["query", "-o", output, "SELECT uri, score FROM videos WHERE label = 'NO_FACE'"])
    assert result.exit_code == 0 and "coffee.jpg" in result.stdout
    result = runner.invoke(app, ["query", "-o", output, "SELECT nope FROM videos"])
    assert result.exit_code == 1 and "query failed" in result.output

    result = runner.invoke(app, ["report", output, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["objects"], report["errors"], report["no_face"]) == (9, 5, 1)
    prefixes = {row["prefix"]: row for row in report["by_prefix_day"]}
    assert prefixes[f"{output.rsplit('/', 1)[0]}/in/bad/"]["errors"] == 5
    assert prefixes[f"{output.rsplit('/', 1)[0]}/in/good/"]["objects"] == 4
    assert [_name(t["uri"]) for t in report["top_suspicious"]][:3] and len(report["top_suspicious"]) == 3
    result = runner.invoke(app, ["report", output])
    assert result.exit_code == 0 and "fake rate per prefix and day" in result.stdout


@pytest.mark.slow
def test_interrupted_scan_resumes_with_exactly_one_row_per_object(ray_session, media_bucket, settings, s3_server):
    source, output = f"s3://{media_bucket}/in", f"s3://{media_bucket}/out-resume"
    commits = []

    def crash_after_first_commit(info):
        commits.append(info)
        raise KeyboardInterrupt  # what Ctrl-C (or a dying driver) does between two commits

    with pytest.raises(KeyboardInterrupt):
        run_scan(settings, _options(source, output, commit_every=2), on_commit=crash_after_first_commit)
    store = OutputStore(output, s3_server["storage_options"])
    done = _read_table(store, "videos")
    assert len(commits) == 1 and 0 < len(done) == commits[0].videos < 9
    # A crash between the two files of a commit leaves a faces part without its videos part.
    orphan = next(iter(store.list_parts("faces").values())).replace("part-", "part-crashed-")
    store.fs.copy(next(iter(store.list_parts("faces").values())), orphan)

    capped = run_scan(settings, _options(source, output, max_objects=2))  # a capped run takes 2 new objects
    assert (capped.seen, capped.skipped, capped.scanned, capped.deferred) == (9, len(done), 2, 7 - len(done))
    resumed = run_scan(settings, _options(source, output))
    assert (resumed.seen, resumed.skipped, resumed.scanned) == (9, len(done) + 2, 7 - len(done))
    videos = _read_table(store, "videos")
    assert sorted(_name(v["uri"]) for v in videos) == sorted(list(GOOD) + list(ERRORS))
    assert not store.fs.exists(orphan)
    faces = _read_table(store, "faces")
    assert len({(f["uri"], f["face"]) for f in faces}) == len(faces) == sum(v["faces"] for v in videos)


@pytest.mark.slow
def test_killed_model_actor_costs_a_retry_not_the_scan(ray_session, settings, samples_dir, tmp_path):
    """SIGKILL a model actor (the fused plan's: decode → detect → score) while it works: Ray restarts it,
    retries the batch, and the scan (local folder → local Parquet) still ends with every object scored."""
    source = tmp_path / "media"
    for key, data in _media(samples_dir).items():
        (source / key).parent.mkdir(parents=True, exist_ok=True)
        (source / key).write_bytes(data)
    killed: list[int] = []
    seen_after_kill: set[int] = set()
    stop = threading.Event()

    def killer():
        while not stop.is_set():
            for pid in process_tree(os.getpid())[1:]:
                title = process_title(pid)
                if "MapBatches(Graph)" not in title:
                    continue
                if not killed and title.rstrip().endswith(".submit"):  # busy with a batch right now
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                elif killed and pid not in killed:
                    seen_after_kill.add(pid)
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        summary = run_scan(settings, _options(str(source), str(tmp_path / "out"), classify_batch=1))
    finally:
        stop.set()
        thread.join(5)
    assert killed, "the model actor was never seen working"
    assert seen_after_kill, "no replacement model actor was started"
    assert (summary.seen, summary.scanned, summary.lost, summary.failed, summary.no_face) == (9, 9, 0, 5, 1)
    videos = _read_table(OutputStore(str(tmp_path / "out")), "videos")
    assert sorted(_name(v["uri"]) for v in videos) == sorted(list(GOOD) + list(ERRORS))
    assert all(v["error"] is None for v in videos if _name(v["uri"]) in GOOD)

    # query on local output too, then the README's two commands' second half: report
    from jobs.query.sql import run_query
    from jobs.report.text import report

    columns, rows = run_query(str(tmp_path / "out"), "SELECT count(*) FROM faces JOIN videos USING (scan_id, uri)")
    assert rows[0][0] == sum(v["faces"] for v in videos)
    assert report(str(tmp_path / "out"))["objects"] == 9


class _PoisonDecodeStage(DecodeStage):
    """Stands in for DecodeStage: the worker process dies (like a native decoder crash) on poison.*"""

    def __call__(self, batch):
        if any(_name(str(uri)).startswith("poison") for uri in batch["uri"]):
            os._exit(1)
        return super().__call__(batch)


@pytest.mark.slow
def test_object_that_crashes_its_worker_every_time_gets_an_error_row(ray_session, settings, samples_dir, tmp_path,
                                                                     monkeypatch):
    """Bounded retries: the poison object ends as ERROR after (1 + max_task_retries) crashes in each of
    the 1 + lost_retries passes, the others are scored, and the scan neither loops forever nor stops.
    Two batches in flight per actor: innocent objects queued behind the poison share its crashes in the first
    pass and are scored in the rescan pass, which queues one batch per actor."""
    import dataclasses
    import sys

    import ray.cloudpickle

    import pipeline.graph

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    real_specs = pipeline.graph.stage_specs

    def poisoned(*args, **kwargs):  # the graph's decode stage, swapped for one that crashes its worker
        return [dataclasses.replace(s, cls=_PoisonDecodeStage) if s.name == "decode" else s
                for s in real_specs(*args, **kwargs)]

    monkeypatch.setattr(pipeline.graph, "stage_specs", poisoned)
    source = tmp_path / "media"
    source.mkdir()
    for name in ("a.jpg", "poison.jpg", "q.jpg", "r.jpg"):
        shutil.copy(samples_dir / "astronaut.jpg", source / name)
    shutil.copy(samples_dir / "coffee.jpg", source / "z.jpg")
    summary = run_scan(settings, _options(str(source), str(tmp_path / "out"), max_task_retries=1, tasks_per_actor=2))
    assert (summary.scanned, summary.lost, summary.failed, summary.no_face) == (5, 1, 1, 1)
    rows = {_name(v["uri"]): v for v in _read_table(OutputStore(str(tmp_path / "out")), "videos")}
    assert rows["poison.jpg"]["label"] == "ERROR" and "failed 4 times" in rows["poison.jpg"]["error"]
    assert all(rows[n]["label"] in ("FAKE", "REAL") for n in ("a.jpg", "q.jpg", "r.jpg")) and rows["z.jpg"]["label"] == "NO_FACE"


def test_docs_describe_every_output_column():
    from jobs.scan.output import SCHEMAS

    text = (ROOT / "docs" / "scan.md").read_text()
    for schema in SCHEMAS.values():
        for name in schema.names + ["scan_date"]:
            assert f"`{name}`" in text, f"docs/scan.md does not document column {name}"
