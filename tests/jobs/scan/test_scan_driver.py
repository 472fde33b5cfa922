"""The scan driver (jobs/scan/driver.py) before any work: no torch in it, clear exits for a missing model or source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


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
from pipeline.checkpoint import check_card
from pipeline.config import Settings
from pipeline.graph import Graph, stage_specs

class Recorder:
    calls = []
    def map_batches(self, fn, **kw):
        self.calls.append((fn, kw))
        return self

settings = Settings(classify={{"checkpoint": {str(detector_checkpoint)!r}}})
packed = pack_checkpoint(settings.classify.checkpoint)
check_card(settings.classify.checkpoint, packed)  # the card against the weights' header, as run_scan checks it
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
    assert result.stderr.startswith("no_trained_model: ") and "no trained detector" in result.output  # code: message
    assert not (tmp_path / "out").exists()



def test_a_card_beside_other_weights_stops_the_scan_before_ray_starts(tmp_path, samples_dir, detector_checkpoint, monkeypatch):
    """A card whose version or architecture is not what its weights say is refused as `score` refuses it: exit 2,
    not_started, checkpoint_error, before the output is opened (so before Ray starts), not exit 1 from actors that
    die loading it, every night."""
    import json
    import shutil

    from pipeline.card import card_path

    weights = tmp_path / "model.safetensors"
    shutil.copy(detector_checkpoint, weights)
    card = json.loads(card_path(detector_checkpoint).read_text())
    card_path(weights).write_text(json.dumps({**card, "version": "another-run"}))
    monkeypatch.setenv("DFS_CLASSIFY__CHECKPOINT", str(weights))
    result = _scan_cli(str(samples_dir), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["exit_code"], summary["error_code"]) == ("not_started", 2, "checkpoint_error")
    assert "does not match its card (version 'another-run'" in summary["message"] and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()

def test_scan_of_a_missing_source_exits_2(tmp_path, detector_env):
    from typer.testing import CliRunner

    from jobs.cli import app

    result = CliRunner().invoke(app, ["scan", str(tmp_path / "nope"), "-o", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2 and "source not found" in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("source_not_found: source not found"), lines  # as every command says a refusal


def _scan_cli(*args: str):
    from typer.testing import CliRunner

    from jobs.cli import app

    return CliRunner().invoke(app, ["scan", *args, "--no-progress", "--json"])


def test_scan_of_a_mistyped_s3_prefix_exits_2_in_one_line_and_says_so_in_json(tmp_path, detector_env, s3_server, s3_bucket):
    import json

    import boto3

    boto3.client("s3", endpoint_url=s3_server["endpoint_url"]).put_object(Bucket=s3_bucket, Key="uploads/a.jpg", Body=b"x")
    result = _scan_cli(f"s3://{s3_bucket}/uplaods", "-o", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "source not found" in lines[0] and "Traceback" not in result.output, result.output
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["exit_code"], summary["error_code"]) == ("not_started", 2, "source_not_found")
    assert "source not found" in summary["message"] and summary["scan_id"]
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "out" / "_runs").glob("*.json")]
    assert (record["status"], record["exit_code"], record["error_code"], record["scan_id"]) == (
        "not_started", 2, "source_not_found", summary["scan_id"])  # monitoring reads the code, not the message


def test_json_summary_on_failures_before_and_after_the_output_is_opened(tmp_path, samples_dir, detector_env, monkeypatch):
    import json

    import fsspec

    from jobs.scan.lease import OutputLease

    out = str(tmp_path / "out")
    holder = OutputLease(fsspec.filesystem("file"), out, out, "the-nightly-run", ttl_s=60)
    holder.acquire()
    busy = _scan_cli(str(samples_dir), "-o", out)
    assert busy.exit_code == 3
    summary = json.loads(busy.stdout)  # the one line: the summary, not refuse's {"error_code", "error"} as well
    assert (summary["status"], summary["exit_code"], summary["error_code"]) == ("busy", 3, "output_busy")
    said = [line for line in busy.stderr.splitlines() if line.strip()]
    assert len(said) == 1 and said[0].startswith("output_busy: ") and "the-nightly-run" in said[0], said
    holder.release()

    monkeypatch.setenv("DFS_CLASSIFY__CHECKPOINT", str(tmp_path / "missing.safetensors"))
    no_model = _scan_cli(str(samples_dir), "-o", out)  # stops before the output is opened: no run of its own
    assert no_model.exit_code == 2
    summary = json.loads(no_model.stdout)
    assert (summary["status"], summary["exit_code"], summary["error_code"]) == ("not_started", 2, "no_trained_model")
    assert "no trained detector" in summary["message"]


def test_the_error_rate_limit_compares_the_exact_share():
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import ScanSummary, _outcome

    summary = ScanSummary(source="s", output="o", scan_id="x", model_version="m", scanned=100_000, failed=50_001)
    summary.error_rate = round(summary.failed / summary.scanned, 4)  # as the driver keeps it: 0.5, for display
    outcome = _outcome(summary, ScanConfig(source="s", max_error_rate=0.5))
    assert outcome[:2] == ("too_many_errors", 4) and "(50.001%)" in outcome[2]
    summary.failed = 50_000
    assert _outcome(summary, ScanConfig(source="s", max_error_rate=0.5))[:2] == ("succeeded", 0)


def test_an_output_that_takes_no_run_record_exits_2_and_does_not_claim_one(tmp_path, samples_dir, detector_env):
    """A run record that cannot be written once the lease is taken (here `_runs` is a file: as a full disk or
    a read-only folder fails the write) is an output error, exit 2, not a crash; `not_started`, as the first record
    comes before the output is prepared; and the scan says the record could not be written rather than that it
    was kept."""
    import json

    out = tmp_path / "out"
    out.mkdir()
    (out / "_runs").write_text("not a folder\n")
    result = _scan_cli(str(samples_dir), "-o", str(out))
    assert result.exit_code == 2, result.output
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["exit_code"], summary["error_code"]) == ("not_started", 2, "output_error")
    assert summary["record_written"] is False and "_runs/" in summary["message"]
    assert "could not be written" in result.stderr and "record are kept" not in result.stderr, result.stderr
    assert "Traceback" not in result.output and not (out / "_lease.json").exists()


def test_an_output_of_a_newer_schema_is_a_scan_that_could_not_start(tmp_path, samples_dir, detector_env):
    """An output the scan refuses at the start (a newer scanner's) is `not_started` (exit 2, code `output_error`),
    as docs/scan.md lists it; `output_error` is for refusals once the scan is past the output's preparation
    (test_scan.py). It writes nothing into an output of a format it does not know: no lease, no run record.
    Its one line claims nothing committed, and ends its sentence once."""
    import json

    from jobs.scan.schema import SCHEMA_VERSION
    from scan_fixtures import _records

    out = tmp_path / "out"
    out.mkdir()
    (out / "_deepfakestream.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    result = _scan_cli(str(samples_dir), "-o", str(out))
    assert result.exit_code == 2, result.output
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["exit_code"], summary["error_code"], summary.get("record_written")) == (
        "not_started", 2, "output_error", None)  # no run began: the short summary of a scan refused at the start
    assert sorted(p.name for p in out.iterdir()) == ["_deepfakestream.json"] and not _records(out)
    said = " ".join(result.stderr.split())
    assert "Scan into a new --output" in said and ".." not in said and "kept" not in said, said


def test_what_a_failed_scan_says_it_left_behind():
    """Committed results only when parts were committed; the run record only as it was (or was not) written."""
    from jobs.cli.scan import _then
    from jobs.scan.driver import ScanSummary

    summary = ScanSummary(source="s", output="o", scan_id="x", model_version="m", record_written=True)
    assert _then("cannot write. ", []) == "cannot write"  # no summary: it stopped before writing anything
    assert _then("refused.", [summary]) == "refused"
    summary.parts = 2
    assert _then("refused.", [summary]) == "refused. Committed results and the run record _runs/x.json are kept"
    summary.record_written = False
    assert _then("refused", [summary]) == ("refused. Committed results are kept; the run record _runs/x.json could "
                                           "not be written")
    summary.parts = 0
    assert _then("refused", [summary]) == "refused. The run record _runs/x.json could not be written"


def test_the_scans_key_counts_shrunk_frames_where_the_plan_may_split_and_no_limit(tmp_path, detector_env, monkeypatch):
    """Crops cut from shrunk frames score differently: --shrink-frames changes the key unless the plan is fused
    (where it does nothing). Raising a decode limit changes no score of what was taken: the key stays."""
    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from pipeline.config import load_settings

    (tmp_path / "media").mkdir()  # nothing to scan: the key is computed, Ray never starts

    def key(settings=None, **options) -> str:
        options = ScanConfig(source=str(tmp_path / "media"), output=str(tmp_path / "out"), progress=False, **options)
        return run_scan(settings or load_settings(), options).scoring_key

    base = key()
    assert key(load_settings(**{"decode.max_bytes": 2**40, "decode.max_pixels": 2**30, "decode.max_frames": 10**6})) == base
    assert key(shrink_frames=True) != base and key(shrink_frames=True, plan="split") == key(shrink_frames=True)
    assert key(shrink_frames=True, plan="fused") == base
    # the code's revision counts: outputs scored by older code rescan once (pipeline/scoring_key.py)
    import pipeline.scoring_key

    monkeypatch.setattr(pipeline.scoring_key, "SCAN_REVISION", pipeline.scoring_key.SCAN_REVISION + 1)
    assert key() != base


def test_an_out_of_range_flag_is_invalid_configuration_in_json_as_any_bad_setting(tmp_path, samples_dir, detector_env):
    """ScanConfig's fields carry the bounds, not typer's: an out-of-range flag gets --json's line, never usage text."""
    import json

    import typer

    from jobs.cli import app

    for flag, value, field in (("--thumbnails", "33", "thumbnails"), ("--commit-every", "0", "commit_every"),
                               ("--max-error-rate", "1.5", "max_error_rate"),
                               ("--actor-start-timeout", "0", "actor_start_timeout")):
        result = _scan_cli(str(samples_dir), "-o", str(tmp_path / "out"), flag, value)
        summary = json.loads(result.stdout)
        assert result.exit_code == 2 and (summary["status"], summary["error_code"]) == ("not_started", "invalid_configuration")
        assert summary["message"].startswith(f"scan.{field}: ") and f"(got {value})" in summary["message"]
        assert "[type=" not in summary["message"] and not (tmp_path / "out").exists()  # pydantic's dump, flattened
    bounded = [p.name for p in typer.main.get_command(app).commands["scan"].params
               if getattr(p, "min", None) is not None or getattr(p, "max", None) is not None]
    assert bounded == []


def test_a_mistyped_checkpoint_is_named_as_such(tmp_path, samples_dir, detector_env):
    import json

    typo = tmp_path / "detectr.safetensors"
    result = _scan_cli(str(samples_dir), "-o", str(tmp_path / "out"), "--checkpoint", str(typo))
    summary = json.loads(result.stdout)
    assert result.exit_code == 2 and (summary["error_code"], summary["message"]) == ("checkpoint_error", f"checkpoint {typo} does not exist")
    assert not (tmp_path / "out").exists()


def _holding(ray, cpus: float):
    """An actor holding ``cpus`` of the session's Ray: another job on a cluster the scan shares (Serve, say)."""
    @ray.remote
    class Holder:
        def ping(self) -> bool:
            return True

    holder = Holder.options(num_cpus=cpus).remote()
    ray.get(holder.ping.remote(), timeout=60)
    return holder


def _release(ray, holder) -> None:
    """Kill ``holder`` and wait until every CPU is free again, for the tests after (a refused scan's pending actor
    starts once ``holder`` is gone, and stops when the last reference to its pool is collected)."""
    import gc
    import time

    ray.kill(holder)
    gc.collect()
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.monotonic() < deadline:
        time.sleep(0.2)


def _busy_scan(tmp_path, samples_dir, **options):
    """One image scanned into a new output, expected to be refused: (its code, its words, summary, record, seconds).
    Not the exception: its traceback holds the scan's frames, and so its pool's actors."""
    import shutil
    import time

    from jobs.scan.config import ScanConfig
    from jobs.scan.driver import run_scan
    from jobs.scan.errors import ClusterBusyError
    from pipeline.config import load_settings
    from scan_fixtures import _records

    (tmp_path / "src").mkdir()
    shutil.copy(samples_dir / "coffee.jpg", tmp_path / "src")
    ended, on_plan = [], options.pop("on_plan", None)
    started = time.monotonic()
    with pytest.raises(ClusterBusyError) as refused:
        run_scan(load_settings(), ScanConfig(source=str(tmp_path / "src"), output=str(tmp_path / "out"), progress=False,
                                             **options), on_end=ended.append, on_plan=on_plan)
    (record,) = _records(tmp_path / "out")
    assert not (tmp_path / "out" / "_lease.json").exists()  # released: the next scan is not output_busy
    return refused.value.code, str(refused.value), ended[0], record, time.monotonic() - started


def test_a_scan_with_no_room_on_a_shared_cluster_is_refused_at_once(ray_session, tmp_path, samples_dir):
    """With another job holding the cluster's CPUs the scan planned from its total (2 actors of 0.5 CPU) and waited
    forever, silently, renewing its lease. Now the pools are sized from what is free and no room for one actor is
    cluster_busy, exit 2, at once, with a run record."""
    holder = _holding(ray_session, ray_session.cluster_resources()["CPU"])
    try:
        code, said, summary, record, took = _busy_scan(tmp_path, samples_dir, actor_start_timeout=60)
    finally:
        _release(ray_session, holder)
    assert code == "cluster_busy" and "0 of 2 CPU free" in said and "did not start" not in said, said
    assert took < 40, took  # not after actor_start_timeout
    assert (summary.status, summary.exit_code, summary.error_code) == ("not_started", 2, "cluster_busy")
    assert (record["status"], record["exit_code"], record["error_code"]) == ("not_started", 2, "cluster_busy")


@pytest.mark.timeout(180)
def test_a_pool_whose_actors_cannot_start_is_refused_after_actor_start_timeout(ray_session, tmp_path, samples_dir):
    """CPUs taken between the plan and its actors (another job starting then): Ray Data's default waits forever for
    them. scan.actor_start_timeout bounds it: cluster_busy, exit 2, naming what the pools ask and what is free, in
    one line: without the page of trace Ray Data logs for it as its own fault ("open an issue")."""
    import logging

    taken, logged = [], []
    handler = logging.Handler()
    handler.emit = logged.append
    logging.getLogger("ray.data.exceptions").addHandler(handler)

    def take_what_is_free(plan) -> None:
        taken.append(_holding(ray_session, ray_session.available_resources()["CPU"]))

    try:
        code, said, summary, record, took = _busy_scan(tmp_path, samples_dir, actor_start_timeout=2,
                                                       on_plan=take_what_is_free)
    finally:
        logging.getLogger("ray.data.exceptions").removeHandler(handler)
        for holder in taken:
            _release(ray_session, holder)
    assert [r.getMessage() for r in logged] == []
    assert code == "cluster_busy" and "did not start within 2 s (scan.actor_start_timeout)" in said, said
    assert "1 actor(s) asking 0.5 CPU each" in said and "0 of 2 CPU free" in said, said
    assert (record["status"], record["exit_code"], record["error_code"]) == ("not_started", 2, "cluster_busy")
    assert summary.message == record["message"] == said and took < 60, took
    assert ray_session.available_resources()["CPU"] == 2  # nothing of the scan's left holding the CPUs
