"""The ``deepfakestream score`` command: JSON schema, errors per file, no-model message, refusals' codes, no
credentials printed; and the refusals every command shares (configuration, devices)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import refused_url, served
from pipeline.result import ScoreResult

CLI = [sys.executable, "-m", "jobs.cli"]


def run_cli(*args, env_extra=None, timeout=240):
    env = {**os.environ, "DFS_DECODE__NUM_FRAMES": "6", **(env_extra or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_score_json_schema_and_error_rows(detector_env, samples_dir, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes((samples_dir / "astronaut_zoom.mp4").read_bytes()[:2000])
    paths = [samples_dir / "pair_pan.mp4", samples_dir / "coffee.jpg", broken, tmp_path / "missing.mp4"]
    proc = run_cli("score", "--json", *map(str, paths))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 4
    for obj in lines:
        ScoreResult.model_validate(obj)  # the documented schema
        assert {"uri", "label", "score", "threshold", "model_version", "error", "tracks", "frames"} <= obj.keys()
    video, coffee, bad, missing = lines
    assert video["label"] in ("FAKE", "REAL") and 0 <= video["score"] <= 1 and video["error"] is None
    assert len(video["tracks"]) == 2 and all(t["frames_seen"] == 6 for t in video["tracks"])
    assert len(video["frames"]) == 6 and all(f["faces"] == 2 for f in video["frames"])
    assert video["frames"][0]["timestamp"] == 0.0 and video["frames"][-1]["timestamp"] > 2.5
    assert coffee["label"] == "NO_FACE" and coffee["score"] is None and coffee["tracks"] == []
    assert bad["label"] == "ERROR" and bad["score"] is None and ("corrupt" in bad["error"] or "truncated" in bad["error"])
    assert missing["label"] == "ERROR" and "not found" in missing["error"]
    assert "Traceback" not in proc.stderr


def test_score_matches_in_process_graph(detector_env, samples_dir):
    from pipeline.config import load_settings
    from pipeline.graph import ScoringPipeline

    proc = run_cli("score", "--json", str(samples_dir / "astronaut.jpg"))
    cli = json.loads(proc.stdout)
    direct = ScoringPipeline(load_settings()).score(str(samples_dir / "astronaut.jpg"))
    assert cli["score"] == pytest.approx(direct.score, abs=1e-6) and cli["label"] == direct.label


def test_human_summary(detector_env, samples_dir):
    proc = run_cli("score", str(samples_dir / "astronaut.jpg"))
    assert proc.returncode == 0 and "astronaut.jpg" in proc.stdout and "track" in proc.stdout


def test_the_human_summary_never_shows_a_real_score_at_its_threshold(capsys):
    """Three decimals would show 0.411776 as 0.412, over a 0.4118 threshold, beside the word REAL."""
    from jobs.cli.score import _print_summary
    from pipeline.result import ScoreResult

    for score, label, shown in ((0.411776, "REAL", "score=0.411 "), (0.4118, "FAKE", "score=0.412 ")):
        _print_summary(ScoreResult(uri="clip.mp4", label=label, score=score, threshold=0.4118, model_version="m",
                                   error=None))
        assert shown in capsys.readouterr().out


@pytest.mark.parametrize("command", ["score", "evaluate"])
def test_no_trained_model_is_said_plainly(tmp_path, samples_dir, command):
    args = [str(samples_dir / "astronaut.jpg")] if command == "score" else [str(samples_dir), "--output", str(tmp_path / "ev")]
    proc = run_cli(command, *args, env_extra={"DFS_CLASSIFY__CHECKPOINT": str(tmp_path / "none.safetensors")})
    assert proc.returncode == 2
    assert "no trained detector is installed" in proc.stderr.replace("\n", " ")
    assert proc.stdout == ""


def test_bad_config_is_a_clear_error(samples_dir):
    proc = run_cli("score", str(samples_dir / "astronaut.jpg"), "--device", "tpu")
    assert proc.returncode == 2 and proc.stderr.startswith("invalid_configuration: ")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    as_json = run_cli("score", "--json", str(samples_dir / "astronaut.jpg"), "--device", "tpu")
    said = json.loads(as_json.stdout)  # one line a script can read, as `scan --json` prints
    assert as_json.returncode == 2 and said["error_code"] == "invalid_configuration" and "tpu" in said["error"]


def test_a_mistyped_checkpoint_is_named_not_taken_for_no_model_installed(tmp_path, samples_dir):
    typo = tmp_path / "detectr.safetensors"
    plain = run_cli("score", str(samples_dir / "astronaut.jpg"), "--checkpoint", str(typo))
    as_json = run_cli("score", "--json", str(samples_dir / "astronaut.jpg"), "--checkpoint", str(typo))
    assert plain.returncode == as_json.returncode == 2
    assert plain.stderr.strip() == f"checkpoint_error: checkpoint {typo} does not exist" and plain.stdout == ""
    assert json.loads(as_json.stdout) == {"error_code": "checkpoint_error", "error": f"checkpoint {typo} does not exist"}
    assert "no trained detector" not in plain.stderr + as_json.stderr


def test_score_reads_with_credentials_but_never_prints_or_logs_them(detector_env, samples_dir, tmp_path):
    """user:pass@ and a token in the query: read with, shown without, even in -v's DEBUG lines (fsspec logged
    `Retrieve file size for http://alice:hunter2pass@…?token=s3cret`); a refused connection is storage_error."""
    (tmp_path / "astronaut.jpg").write_bytes((samples_dir / "astronaut.jpg").read_bytes())
    secret = "http://alice:hunter2pass@"
    down = refused_url()
    with served(tmp_path) as base:
        proc = run_cli("score", "-v", "--json", f"{base.replace('http://', secret)}/astronaut.jpg?token=s3cret",
                       f"{down.replace('http://', secret)}/astronaut.jpg")
    assert proc.returncode == 0, proc.stderr
    read, refused = [json.loads(line) for line in proc.stdout.splitlines()]
    assert read["uri"] == f"{base}/astronaut.jpg?token=REDACTED" and read["label"] in ("REAL", "FAKE")
    assert refused["uri"] == f"{down}/astronaut.jpg" and refused["error_code"] == "storage_error"
    assert refused["error"].startswith(f"could not read {down}/astronaut.jpg: ")
    assert f"decode failed for {down}/astronaut.jpg" in proc.stderr  # the WARNING log line, without them
    assert f"DEBUG fsspec.http: Retrieve file size for {base}/astronaut.jpg?token=REDACTED" in proc.stderr
    assert "hunter2pass" not in proc.stdout + proc.stderr and "s3cret" not in proc.stdout + proc.stderr


def test_score_reads_s3_where_the_scan_settings_point(detector_env, samples_dir, tmp_path, s3_server, s3_bucket,
                                                     monkeypatch):
    """scan.endpoint_url / anon (DFS_SCAN__*, --endpoint-url, --anon) take `score` to the store `scan`, `query` and
    `report` read; S3's options go to s3:// inputs only, so an http:// one beside it is read as ever; -v logs no
    session token."""
    import boto3

    endpoint = s3_server["endpoint_url"]
    boto3.client("s3", endpoint_url=endpoint).upload_file(str(samples_dir / "astronaut.jpg"), s3_bucket, "in/astronaut.jpg",
                                                          ExtraArgs={"ACL": "public-read"})  # what --anon may read
    uri = f"s3://{s3_bucket}/in/astronaut.jpg"
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the fixture's: only the settings name the endpoint here
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # where the endpoint is ignored, fail fast at amazonaws.com
    (tmp_path / "astronaut.jpg").write_bytes((samples_dir / "astronaut.jpg").read_bytes())
    with served(tmp_path) as base:  # -v and a session token: botocore's DEBUG logged it in every signed request
        proc = run_cli("score", "-v", "--json", uri, f"{base}/astronaut.jpg",
                       env_extra={"DFS_SCAN__ENDPOINT_URL": endpoint, "AWS_SESSION_TOKEN": "SESSIONTOKENSECRET"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SESSIONTOKENSECRET" not in proc.stderr and "DEBUG s3fs: CALL: get_object" in proc.stderr
    from_s3, from_http = [json.loads(line) for line in proc.stdout.splitlines()]
    assert from_s3["error"] is None and from_http["error"] is None, (from_s3["error"], from_http["error"])
    assert from_s3["uri"] == uri and from_s3["score"] == from_http["score"] is not None

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # the flags: this endpoint, no credentials at all
        monkeypatch.delenv(key)
    flagged = run_cli("score", "--json", "--endpoint-url", endpoint, "--anon", uri)
    assert flagged.returncode == 0, flagged.stderr[-2000:]
    assert json.loads(flagged.stdout)["score"] == from_s3["score"]


@pytest.mark.parametrize("text", ["decode: [num_frames: 4\n", "- decode\n- scan\n"])
def test_a_malformed_config_file_is_one_line_not_a_trace(tmp_path, samples_dir, text):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    proc = run_cli("score", str(samples_dir / "astronaut.jpg"), "--config", str(config))
    assert proc.returncode == 2 and "invalid_configuration: " in proc.stderr and str(config) in proc.stderr.replace("\n", "")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("command", ["score", "prepare", "scan"])
def test_a_gpu_asked_for_where_there_is_none_is_one_line_not_a_trace(detector_env, tmp_path, samples_dir, command):
    """Each says device_unavailable; the scan before it starts Ray (its own, local) or takes the output."""
    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,label\n{samples_dir / 'astronaut.jpg'},REAL\n")
    args = {"score": [str(samples_dir / "astronaut.jpg")], "prepare": [str(labels), "-o", str(tmp_path / "c")],
            "scan": [str(samples_dir), "-o", str(tmp_path / "out"), "--json"]}[command]
    proc = run_cli(command, *args, "--device", "cuda", env_extra={"RAY_ADDRESS": ""})
    assert proc.returncode == 2 and "no CUDA GPU" in proc.stderr.replace("\n", " "), proc.stderr[-800:]
    assert "device_unavailable" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    if command == "scan":
        assert json.loads(proc.stdout)["error_code"] == "device_unavailable"
        assert "Ray" not in proc.stderr and not (tmp_path / "out").exists()


def test_settings_precedence(tmp_path, monkeypatch):
    from pipeline.config import load_settings

    config = tmp_path / "c.yaml"
    config.write_text("decode:\n  num_frames: 7\ndetect:\n  margin: 0.2\n")
    monkeypatch.setenv("DFS_DETECT__MARGIN", "0.25")
    settings = load_settings(config)
    assert settings.decode.num_frames == 7 and settings.detect.margin == 0.25
    assert load_settings(config, **{"decode.num_frames": 3}).decode.num_frames == 3


def test_train_names_a_missing_dataset_not_found(tmp_path):
    """A typo'd dataset folder is `not_found`, a bad setting `invalid_configuration`: codes, exit 2, never a traceback."""
    missing = run_cli("train", str(tmp_path / "no-such-crops"), "--output", str(tmp_path / "run"), "--epochs", "1")
    said = missing.stdout + missing.stderr
    assert missing.returncode == 2 and "not_found:" in said and "no-such-crops" in said and "Traceback" not in said
    (tmp_path / "crops").mkdir()
    (tmp_path / "crops" / "manifest.json").write_text("{}")
    bad = run_cli("train", str(tmp_path / "crops"), "--output", str(tmp_path / "run"), "--epochs", "0")
    said = bad.stdout + bad.stderr
    assert bad.returncode == 2 and "invalid_configuration: epochs: Input should be" in said and "Traceback" not in said
    assert len(said.strip().splitlines()) == 1, said  # one line: pydantic's own text spans four
    # an --extra-dataset typo is said before the training stack loads, not after its imports
    extra = run_cli("train", str(tmp_path / "crops"), "--output", str(tmp_path / "run"), "--extra-dataset",
                    str(tmp_path / "no-such-extra"))
    said = extra.stdout + extra.stderr
    assert extra.returncode == 2 and "not_found:" in said and "no-such-extra" in said and "Traceback" not in said
    assert not (tmp_path / "run").exists()


def test_a_scan_that_crashes_on_an_unexpected_error_says_so_in_one_line(detector_env, tmp_path, monkeypatch):
    """A storage call that raises something unwrapped (here ``cleanup``'s delete) after the lease is taken."""
    from typer.testing import CliRunner

    from jobs.cli import app
    from jobs.scan.output import OutputStore

    def refuse(self):
        raise PermissionError("delete denied on stale faces part")

    monkeypatch.setattr(OutputStore, "cleanup", refuse)
    (tmp_path / "media").mkdir()
    result = CliRunner().invoke(app, ["scan", str(tmp_path / "media"), "-o", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "scan_crashed: PermissionError: delete denied" in " ".join(lines) and "Traceback" not in result.output
    assert not isinstance(result.exception, PermissionError)          # handled, not escaped
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "out" / "_runs").glob("*.json")]
    assert record["status"] == "aborted" and record["exit_code"] == 1
