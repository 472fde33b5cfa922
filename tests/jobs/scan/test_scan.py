"""Batch scan (``deepfakestream scan``), its Parquet output, ``query`` and ``report``.

The end-to-end tests run a real local S3 server (moto in server mode on 127.0.0.1), upload real
videos and broken files, and scan ``s3://…`` into ``s3://…`` on the session's Ray instance with 4
frames per video to stay quick on 2 cores. The end-to-end cases share one
module-scoped scan of one bucket (the costly part), so they stay in one module; the unit tests of each part of
jobs/scan/ live beside it, one file per module.
"""

from __future__ import annotations

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
from jobs.scan.output import OutputStore
from pipeline.decode import DecodeStage

from helpers import process_title, process_tree, served
from scan_fixtures import ERRORS, GOOD, media, object_name, read_table


ROOT = Path(__file__).resolve().parents[3]


FRAMES = 4


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
    for key, data in media(samples_dir).items():
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
    videos = read_table(store, "videos")
    assert sorted(object_name(v["uri"]) for v in videos) == sorted(list(GOOD) + list(ERRORS))  # one row each
    by_name = {object_name(v["uri"]): v for v in videos}
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
    faces = read_table(store, "faces")
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
    videos = {v["uri"]: v for v in read_table(OutputStore(output, s3_server["storage_options"]), "videos")}
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
        return {(r["uri"], r.get("face")): r for r in read_table(OutputStore(where, s3_server["storage_options"]), table)}

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
    rows = read_table(store, "videos")
    assert len(rows) == 18 and {r["scan_id"] for r in rows} == {summary.scan_id, full.scan_id}
    assert {r["scoring_key"] for r in rows} == {summary.scoring_key} and full.scoring_key == summary.scoring_key

    # another threshold, same model version: every object is out of date (one scanned under the cap), none new
    from pipeline.config import load_settings

    stricter = run_scan(load_settings(**{"decode.num_frames": FRAMES, "classify.threshold": 0.99}),
                        _options(source, output, max_objects=1))
    assert stricter.scoring_key != summary.scoring_key
    assert (stricter.skipped, stricter.scanned, stricter.rescored, stricter.deferred, stricter.deferred_rescans) == (0, 1, 1, 8, 0)
    assert stricter.plan["fused_actors"] == 1  # the plan it ran: one object, one actor (it said and recorded 2)
    (row,) = [r for r in read_table(store, "videos") if r["scan_id"] == stricter.scan_id]
    assert (row["threshold"], row["scoring_key"]) == (0.99, stricter.scoring_key)
    record = next(r for r in read_records(store.fs, store.root) if r.scan_id == stricter.scan_id)
    assert (record.rescored, record.scoring_key) == (1, stricter.scoring_key)


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
    assert result.exit_code == 1 and result.output.startswith("query_failed: ")

    result = runner.invoke(app, ["report", output, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["objects"], report["errors"], report["no_face"]) == (9, 5, 1)
    prefixes = {row["prefix"]: row for row in report["by_prefix_day"]}
    assert prefixes[f"{output.rsplit('/', 1)[0]}/in/bad/"]["errors"] == 5
    assert prefixes[f"{output.rsplit('/', 1)[0]}/in/good/"]["objects"] == 4
    assert [object_name(t["uri"]) for t in report["top_suspicious"]][:3] and len(report["top_suspicious"]) == 3
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
    done = read_table(store, "videos")
    assert len(commits) == 1 and 0 < len(done) == commits[0].videos < 9
    # A crash between the two files of a commit leaves a faces part without its videos part.
    orphan = next(iter(store.list_parts("faces").values())).replace("part-", "part-crashed-")
    store.fs.copy(next(iter(store.list_parts("faces").values())), orphan)

    capped = run_scan(settings, _options(source, output, max_objects=2))  # a capped run takes 2 new objects
    assert (capped.seen, capped.skipped, capped.scanned, capped.deferred) == (9, len(done), 2, 7 - len(done))
    resumed = run_scan(settings, _options(source, output))
    assert (resumed.seen, resumed.skipped, resumed.scanned) == (9, len(done) + 2, 7 - len(done))
    videos = read_table(store, "videos")
    assert sorted(object_name(v["uri"]) for v in videos) == sorted(list(GOOD) + list(ERRORS))
    assert not store.fs.exists(orphan)
    faces = read_table(store, "faces")
    assert len({(f["uri"], f["face"]) for f in faces}) == len(faces) == sum(v["faces"] for v in videos)


@pytest.mark.slow
def test_a_part_the_output_will_not_take_is_an_output_error(ray_session, settings, samples_dir, tmp_path):
    """A commit the storage refuses (here `videos` is a file: as a full disk or lost permission refuses it) stops
    the scan with exit 2 `output_error` and a run record saying so, not as Ray Data giving up or a crash. Its
    counts are of what it committed: nothing (they counted the rows it had received)."""
    from jobs.scan.output import OutputError
    from jobs.scan.records import read_records

    source, out = tmp_path / "media", tmp_path / "out"
    source.mkdir()
    shutil.copy(samples_dir / "coffee.jpg", source / "a.jpg")
    out.mkdir()
    (out / "videos").write_text("not a folder\n")
    ended = []
    with pytest.raises(OutputError, match="cannot write videos/"):
        run_scan(settings, _options(str(source), str(out), commit_every=1), on_end=ended.append)
    (summary,) = ended
    assert (summary.status, summary.exit_code, summary.error_code, summary.record_written) == ("output_error", 2, "output_error", True)
    store = OutputStore(str(out))
    (record,) = read_records(store.fs, store.root)
    assert (record.status, record.exit_code, record.scanned, record.labels, record.parts) == ("output_error", 2, 0, {}, 0)
    assert (summary.scanned, summary.no_face) == (0, 0)


@pytest.mark.slow
def test_killed_model_actor_costs_a_retry_not_the_scan(ray_session, settings, samples_dir, tmp_path):
    """SIGKILL a model actor (the fused plan's: decode → detect → score) while it works: Ray restarts it,
    retries the batch, and the scan (local folder → local Parquet) still ends with every object scored."""
    source = tmp_path / "media"
    for key, data in media(samples_dir).items():
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
    videos = read_table(OutputStore(str(tmp_path / "out")), "videos")
    assert sorted(object_name(v["uri"]) for v in videos) == sorted(list(GOOD) + list(ERRORS))
    assert all(v["error"] is None for v in videos if object_name(v["uri"]) in GOOD)

    # query on local output too, then the README's two commands' second half: report
    from jobs.query.sql import run_query
    from jobs.report.text import report

    columns, rows = run_query(str(tmp_path / "out"), "SELECT count(*) FROM faces JOIN videos USING (scan_id, uri)")
    assert rows[0][0] == sum(v["faces"] for v in videos)
    assert report(str(tmp_path / "out"))["objects"] == 9


class _PoisonDecodeStage(DecodeStage):
    """Stands in for DecodeStage: the worker process dies (like a native decoder crash) on poison.*"""

    def __call__(self, batch):
        # the name by hand: a helper from scan_fixtures would travel by reference, and workers cannot import it
        if any(str(uri).rsplit("/", 1)[-1].startswith("poison") for uri in batch["uri"]):
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
    rows = {object_name(v["uri"]): v for v in read_table(OutputStore(str(tmp_path / "out")), "videos")}
    assert rows["poison.jpg"]["label"] == "ERROR" and "failed 4 times" in rows["poison.jpg"]["error"]
    assert all(rows[n]["label"] in ("FAKE", "REAL") for n in ("a.jpg", "q.jpg", "r.jpg")) and rows["z.jpg"]["label"] == "NO_FACE"


@pytest.mark.slow
def test_credentials_in_a_uri_are_read_with_but_never_stored_recorded_or_said(ray_session, settings, samples_dir, tmp_path):
    """user:pass@: the object is read with them; its rows, the run records and the summaries hold its URI without
    them, and that is the key the next scan compares: it skips the object."""
    from jobs.scan.errors import SourceNotFoundError

    (tmp_path / "media").mkdir()
    shutil.copy(samples_dir / "astronaut.jpg", tmp_path / "media")
    out = tmp_path / "out"
    ended = []
    with served(tmp_path / "media") as base:
        source = base.replace("http://", "http://alice:hunter2pass@") + "/astronaut.jpg"
        first = run_scan(settings, _options(source, str(out)))
        again = run_scan(settings, _options(source, str(out)))
        with pytest.raises(SourceNotFoundError, match="hunter2pass"):  # the exception is the reader's, as raised
            run_scan(settings, _options(source.replace("astronaut", "gone"), str(out)), on_end=ended.append)
    shown = f"{base}/astronaut.jpg"
    assert (first.scanned, first.failed, first.source) == (1, 0, shown)
    assert (again.seen, again.skipped, again.scanned) == (1, 1, 0)
    store = OutputStore(str(out))
    videos, faces = read_table(store, "videos"), read_table(store, "faces")
    assert [r["uri"] for r in videos] == [shown] and faces and {r["uri"] for r in faces} == {shown}
    (failed,) = ended
    assert failed.error_code == "source_not_found" and failed.message.startswith(f"source not found: {base}/gone.jpg ")
    records = [p.read_text() for p in (out / "_runs").glob("*.json")]
    assert len(records) == 3 and all(json.loads(r)["source"].startswith(base) for r in records)
    said = " ".join(records) + json.dumps([first.to_dict(), again.to_dict(), failed.to_dict()])
    assert "hunter2pass" not in said
