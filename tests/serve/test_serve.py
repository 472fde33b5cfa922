"""The online API (serve/app.py): Ray Serve on 127.0.0.1, real HTTP requests, same answers as in-process.

One app for the module (cold start is most of the cost); video tests sample 4 frames to stay quick.
"""

from __future__ import annotations

import asyncio
import io
import socket
from collections import Counter

import httpx
import numpy as np
import pytest

from serve.guard import UriNotAllowedError, check_uri
from slow_client import read_response, start_slow_upload

pytestmark = pytest.mark.slow

BUCKET = "dfs-serve-tests"
PROBLEM = "application/problem+json"
SHUTDOWN_BODY_TIMEOUT_S = 26  # 6 s past Serve's 20 s either way: a slow controller or poll still tells them apart


# ---------------------------------------------------------------------------------------------------------
# allow-list unit tests (no Ray)
# ---------------------------------------------------------------------------------------------------------

ALLOWED = ["s3://media/uploads/", "gs://other-bucket/in"]


@pytest.mark.parametrize("uri", ["s3://media/uploads/a.jpg", "s3://media/uploads/2026/11/clip.mp4",
                                 "gs://other-bucket/in/x.png"])
def test_allow_list_accepts(uri):
    assert check_uri(uri, ALLOWED) == uri


@pytest.mark.parametrize("uri", [
    "file:///etc/passwd", "/etc/passwd", "etc/passwd", "http://169.254.169.254/latest/meta-data/",
    "https://media/uploads/a.jpg", "s3://media/private/a.jpg", "s3://media-evil/uploads/a.jpg",
    "s3://media/uploads-private/a.jpg", "s3://media/uploads/../private/a.jpg", "s3://media/uploads//a.jpg",
    "s3://media/uploads/", "s3://media/uploads/a.jpg::file:///etc/passwd", "simplecache::s3://media/uploads/a.jpg",
    "s3://media/uploads/*.jpg", "s3://media/uploads/a.jpg?versionId=1", "s3://media/uploads/a\n.jpg",
    "gs://other-bucket/inside/x.png", "S3://media/uploads/../../x",
])
def test_allow_list_refuses(uri):
    with pytest.raises(UriNotAllowedError):
        check_uri(uri, ALLOWED)


def test_empty_allow_list_refuses_everything():
    with pytest.raises(UriNotAllowedError, match="reads no URIs"):
        check_uri("s3://media/uploads/a.jpg", [])


# ---------------------------------------------------------------------------------------------------------
# the running app
# ---------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_settings(detector_env, s3_server):
    import boto3

    from pipeline.config import load_settings

    boto3.client("s3", endpoint_url=s3_server["endpoint_url"]).create_bucket(Bucket=BUCKET)
    return load_settings(**{
        "classify.checkpoint": str(detector_env),
        "decode.num_frames": 4,
        "serve.host": "127.0.0.1",
        "serve.port": _free_port(),
        "serve.app_name": "dfs-test",
        "serve.detect_replicas": 1,  # keep the shared test Ray instance's CPUs free (1.35 of 2 reserved)
        "serve.max_queued": 12,  # 8 + 12 places: test_twenty_concurrent_requests_all_succeed is about concurrency, not admission
        # the batching check sends its rows within a few ms of each other; 50 ms leaves room on 2 loaded cores
        "serve.classify_batch_wait_s": 0.05,
        "serve.max_upload_bytes": 400_000,
        "serve.max_pixels": 1920 * 1080,
        "serve.max_duration_s": 3.5,  # pair_pan.mp4 (3 s) passes, astronaut_zoom.mp4 (4 s) is too long
        "serve.allowed_uri_prefixes": [f"s3://{BUCKET}/allowed/"],
        "serve.storage_options": s3_server["storage_options"],
        "serve.request_timeout_s": 60,
        # past Serve's 20 s graceful shutdown, short of the 30 s default: test_app_shuts_down_cleanly's upload
        "serve.body_timeout_s": SHUTDOWN_BODY_TIMEOUT_S,
        # overrides of the card's (0.562955, mean): /v1/model's `effective` must say these
        "classify.threshold": 0.3,
        "classify.aggregation": "track_max",
    })


@pytest.fixture(scope="module")
def server(ray_session, app_settings):
    from ray import serve

    from serve.app import deploy

    serve.shutdown()  # HTTP options only apply to a fresh Serve instance
    deploy(app_settings)
    url = f"http://127.0.0.1:{app_settings.serve.port}"
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client
    serve.shutdown()


@pytest.fixture(scope="module")
def reference(app_settings):
    """The in-process pipeline with the very same settings (what `deepfakestream score` runs)."""
    from pipeline.graph import ScoringPipeline

    return ScoringPipeline(app_settings)


def _upload(client: httpx.Client, path, name: str | None = None, **params) -> httpx.Response:
    data = path.read_bytes() if hasattr(path, "read_bytes") else path
    return client.post("/v1/score", params=params, files={"file": (name or getattr(path, "name", "x"), data)})


def _assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["code"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body


def _assert_same(result: dict, expected) -> None:
    assert result["label"] == expected.label
    if expected.score is None:
        assert result["score"] is None
    else:
        assert result["score"] == pytest.approx(expected.score, abs=1e-4)
    assert result["model_version"] == expected.model_version
    assert result["threshold"] == expected.threshold
    assert result["media"]["frames_sampled"] == expected.media.frames_sampled
    assert [len(t["boxes"]) for t in result["tracks"]] == [len(t.boxes) for t in expected.tracks]
    assert set(result) == set(expected.model_dump())  # the same JSON schema as `score --json`


def test_health_model_and_docs(server, detector_env, samples_dir):
    from pipeline.card import read_card

    health = server.get("/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "ready"
    card = server.get("/v1/model").json()
    assert card["version"] == health.json()["model_version"]
    trained = read_card(detector_env)
    assert "architecture" in card and card["threshold"] == trained.threshold  # the card as trained
    # and what the responses are scored with: it said the card's 0.562955 while they carried 0.3
    assert card["effective"] == {"threshold": 0.3, "aggregation": "track_max",
                                 "min_track_frames": trained.min_track_frames, "tta_flip": trained.tta_flip}
    scored = _upload(server, samples_dir / "astronaut.jpg").json()
    assert (scored["threshold"], scored["aggregation"]) == (0.3, "track_max")
    # no Swagger UI or ReDoc (their scripts came from a CDN): /openapi.json is the contract
    _assert_problem(server.get("/docs"), 404)
    _assert_problem(server.get("/redoc"), 404)
    spec = server.get("/openapi.json").json()
    body = spec["paths"]["/v1/score"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert {"/v1/health", "/v1/model"} <= set(spec["paths"])


@pytest.mark.parametrize("name", ["astronaut.jpg", "astronauts_pair.jpg", "pair_pan.mp4"])
def test_face_media_scored_like_in_process(server, reference, samples_dir, name):
    response = _upload(server, samples_dir / name)
    assert response.status_code == 200, response.text
    result = response.json()
    expected = reference.score(str(samples_dir / name))
    _assert_same(result, expected)
    assert result["label"] in ("FAKE", "REAL")
    assert result["uri"] == name
    if name.endswith(".mp4"):
        assert result["media"]["type"] == "video/mp4" and result["media"]["frames_sampled"] == 4


def test_explain_adds_grad_cam_per_face(server, samples_dir, detector_checkpoint):
    import base64

    import cv2

    from pipeline.card import read_card

    size = read_card(detector_checkpoint).architecture.input_size

    plain = _upload(server, samples_dir / "astronauts_pair.jpg").json()
    response = _upload(server, samples_dir / "astronauts_pair.jpg", explain="true")
    assert response.status_code == 200, response.text
    result = response.json()
    assert "explanations" not in plain
    assert (result["label"], result["score"]) == (plain["label"], plain["score"])
    faces = sorted(box["score"] for track in result["tracks"] for box in track["boxes"])
    assert len(result["explanations"]) == len(faces) == 2
    assert sorted(e["score"] for e in result["explanations"]) == faces
    for item in result["explanations"]:
        image = cv2.imdecode(np.frombuffer(base64.b64decode(item["heatmap_png"]), np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (size, size, 3) and image.std() > 0


def test_photo_without_face_is_no_face(server, samples_dir):
    response = _upload(server, samples_dir / "coffee.jpg")
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "NO_FACE" and response.json()["score"] is None


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_uploads_get_problem_details(server, samples_dir):
    jpeg = (samples_dir / "astronaut.jpg").read_bytes()
    video = (samples_dir / "pair_pan.mp4").read_bytes()
    cases = [
        ("empty", b"", 400),
        ("corrupt jpeg", jpeg[:3] + bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), 422),
        ("truncated video", video[: len(video) // 3], 422),
        ("text file named .jpg", b"hello, I am not a picture\n" * 10, 415),
        ("pdf named .mp4", b"%PDF-1.7\n" + b"0" * 600, 415),
        ("oversized", jpeg + b"\0" * 400_000, 413),
        ("decompression bomb", _png(6000, 6000), 413),  # 36 MP, over 16 times the 1920x1080 limit, ~110 KB file
        ("too long video", (samples_dir / "astronaut_zoom.mp4").read_bytes(), 413),
    ]
    for label, data, status in cases:
        body = _assert_problem(_upload(server, data, name="upload.jpg"), status)
        assert body["code"], label


def test_problems_carry_the_pipeline_error_code(server):
    """The problem's code is the status's reason; the pipeline's finer stable code goes with it."""
    body = _assert_problem(_upload(server, b"", name="upload.jpg"), 400)
    assert (body["code"], body["error_code"]) == ("bad_request", "media_empty")
    body = _assert_problem(_upload(server, b"hello, I am not a picture\n" * 10, name="upload.jpg"), 415)
    assert (body["code"], body["error_code"]) == ("unsupported_media", "unsupported_media")


def test_unknown_query_parameters_are_refused(server, samples_dir):
    """FastAPI ignores them: ?threshold=0.1 was scored at the server's threshold with a 200."""
    body = _assert_problem(_upload(server, samples_dir / "astronaut.jpg", frames=3, threshold=0.1), 400)
    assert (body["code"], body["error_code"]) == ("bad_request", "unknown_query_parameter")
    assert body["detail"] == "unknown query parameter(s) 'frames', 'threshold'; this route takes explain, timeout_s"
    response = server.post("/v1/score", params={"explain": "false", "threshold": "0.1"}, json={"uri": f"s3://{BUCKET}/allowed/a.jpg"})
    assert _assert_problem(response, 400)["error_code"] == "unknown_query_parameter"
    assert "error_code" not in _assert_problem(server.get("/v1/nothing-here"), 404)  # no finer code: no field


def test_malformed_requests_get_problem_details(server):
    _assert_problem(server.post("/v1/score", content=b"abc", headers={"content-type": "text/plain"}), 415)
    _assert_problem(server.post("/v1/score", files={"other": ("a.jpg", b"\xff\xd8\xff")}), 400)
    _assert_problem(server.post("/v1/score", content=b"{not json", headers={"content-type": "application/json"}), 400)
    _assert_problem(server.post("/v1/score", json={"uri": "s3://x/y", "extra": 1}), 400)
    _assert_problem(server.post("/v1/score", content=b"x" * 600_000, headers={"content-type": "multipart/form-data; boundary=b"}), 413)
    _assert_problem(server.get("/v1/nothing-here"), 404)
    _assert_problem(server.get("/v1/score"), 405)


@pytest.mark.parametrize("uri", [
    "file:///etc/passwd", "/etc/passwd", "http://127.0.0.1:1/", f"s3://{BUCKET}/private/a.jpg",
    f"s3://{BUCKET}/allowed/../private/a.jpg", f"s3://{BUCKET}/allowed/a.jpg::file:///etc/passwd",
])
def test_disallowed_uri_is_refused(server, uri):
    body = _assert_problem(server.post("/v1/score", json={"uri": uri}), 403)
    assert (body["code"], body["error_code"]) == ("forbidden", "uri_not_allowed")  # told apart from access_denied


def test_uri_read_from_local_s3(server, reference, s3_server, samples_dir):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server["endpoint_url"])
    s3.put_object(Bucket=BUCKET, Key="allowed/cases/astronaut.jpg", Body=(samples_dir / "astronaut.jpg").read_bytes())
    uri = f"s3://{BUCKET}/allowed/cases/astronaut.jpg"
    response = server.post("/v1/score", json={"uri": uri})
    assert response.status_code == 200, response.text
    assert response.json()["uri"] == uri
    _assert_same(response.json(), reference.score(str(samples_dir / "astronaut.jpg")))
    _assert_problem(server.post("/v1/score", json={"uri": f"s3://{BUCKET}/allowed/cases/missing.jpg"}), 404)
    s3.put_object(Bucket=BUCKET, Key="allowed/cases/big.jpg", Body=b"\xff\xd8\xff" + b"\0" * 450_000)
    _assert_problem(server.post("/v1/score", json={"uri": f"s3://{BUCKET}/allowed/cases/big.jpg"}), 413)


def test_twenty_concurrent_requests_all_succeed(server, app_settings, samples_dir):
    from ray import serve

    names = ["astronaut.jpg", "coffee.jpg", "astronauts_pair.jpg", "pair_pan.mp4"]
    files = {n: (samples_dir / n).read_bytes() for n in names}
    expected = {n: _upload(server, samples_dir / n).json() for n in names}

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(server.base_url), timeout=120) as client:
            jobs = [client.post("/v1/score", files={"file": (names[i % 4], files[names[i % 4]])}) for i in range(20)]
            return await asyncio.gather(*jobs)

    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses if r.status_code != 200]
    for i, response in enumerate(responses):
        want = expected[names[i % 4]]
        assert response.json()["label"] == want["label"]
        if want["score"] is not None:
            assert response.json()["score"] == pytest.approx(want["score"], abs=1e-4)
    # @serve.batch really batches: rows that reach the classifier together are scored in one call. Through HTTP they
    # arrive spread out by decoding and detection (on 2 loaded cores even a 50 ms window has caught no two of twenty),
    # so one detected row goes to it six times at once, straight through its handle, as the ingress chains them.
    app = app_settings.serve.app_name
    decoded = serve.get_deployment_handle("Decoder", app).decode.remote("astronaut.jpg", files["astronaut.jpg"])
    detected = serve.get_deployment_handle("Detector", app).detect.remote(decoded).result()
    classifier = serve.get_deployment_handle("Classifier", app)
    before = Counter(classifier.stats.remote().result()["batch_sizes"])
    answers = [r.result() for r in [classifier.score.remote(detected) for _ in range(6)]]
    assert [a["result"]["score"] for a in answers] == pytest.approx([expected["astronaut.jpg"]["score"]] * 6, abs=1e-4)
    calls = Counter(classifier.stats.remote().result()["batch_sizes"]) - before
    assert sum(size * n for size, n in calls.items()) == 6 and max(calls) > 1, calls


def test_deadline_gives_504(server, samples_dir):
    _assert_problem(_upload(server, samples_dir / "pair_pan.mp4", timeout_s=0.001), 504)
    assert _upload(server, samples_dir / "astronaut.jpg").status_code == 200  # the server is still fine


def test_app_shuts_down_cleanly(server, app_settings):
    """Last test of the module: delete the app under a request, then stop Serve; the port stops answering.

    Serve stops every replica of a deleted (or updated) app at once and killed each after its default 20 s, well
    inside a request's time (body_timeout_s + request_timeout_s): the review's deletes and updates under load gave
    plain-text 500s, 503 worker_lost and dropped connections. Each replica now waits for its requests
    (serve.app.shutdown_options): an upload trickling in when the app is deleted still gets the API's own 408 at its
    body deadline, past Serve's 20 s."""
    import json
    import threading
    import time

    from ray import serve

    app, port = app_settings.serve.app_name, app_settings.serve.port
    sock = start_slow_upload(port, declared=300_000)  # under max_upload_bytes, which refuses at once
    try:
        api = serve.get_deployment_handle("Api", app)
        deadline = time.monotonic() + 10
        while api.stats.remote().result()["admitted"] != 1:  # the ingress is reading its body
            assert time.monotonic() < deadline
            time.sleep(0.05)
        deleting = threading.Thread(target=serve.delete, args=(app,))
        deleting.start()
        status, headers, body, waited = read_response(sock, SHUTDOWN_BODY_TIMEOUT_S + 15)
    finally:
        sock.close()
    assert (status, headers["content-type"]) == (408, PROBLEM), (status, body)
    assert json.loads(body)["code"] == "body_timeout" and waited > 20
    deleting.join(timeout=30)
    assert not deleting.is_alive() and app not in serve.status().applications
    serve.shutdown()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.base_url}/v1/health", timeout=5)


def test_deploy_config_builds_the_app(detector_env):
    """serve/config.yaml is a valid Serve deploy config and its builder makes the four-deployment app."""
    from pathlib import Path

    import yaml
    from ray.serve.schema import ServeDeploySchema

    from serve.app import app_builder

    config = yaml.safe_load((Path(__file__).parents[2] / "serve" / "config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    (spec,) = schema.applications
    assert spec.import_path == "serve.app:app_builder"
    app = app_builder(spec.args)
    assert type(app).__name__ == "Application"
    # every replica waits for its requests when Serve stops it: body_timeout_s 30 + request_timeout_s 60 + 10 s
    from ray.serve._private.build_app import build_app as serve_build  # what `serve deploy` makes of the app

    stopping = {d.name: (d._deployment_config.graceful_shutdown_timeout_s, d._deployment_config.graceful_shutdown_wait_loop_s)
                for d in serve_build(app, name="config").deployments}
    assert stopping == dict.fromkeys(["Decoder", "Detector", "Classifier", "Api"], (100.0, 1.0)), stopping
    with pytest.raises(ValueError, match="unknown application args"):
        app_builder({"setings": {}})
    # malformed args name the arg (an AttributeError and a TypeError from inside the settings loader before)
    with pytest.raises(ValueError, match=r"args\.settings must be a mapping of settings .*; got list"):
        app_builder({"settings": ["x"]})
    with pytest.raises(ValueError, match=r"args\.config must be the path of a settings file .*; got int"):
        app_builder({"config": 5})
    with pytest.raises(ValueError, match="scheme"):
        app_builder({"settings": {"serve": {"allowed_uri_prefixes": ["file:///tmp/"]}}})


def test_classifier_without_model_reports_not_ready(tmp_path):
    """No checkpoint: the replica stays up and says why (health → 503) instead of crash-looping."""
    from pipeline.config import load_settings
    from serve.deployments import Classifier

    settings = load_settings(**{"classify.checkpoint": str(tmp_path / "none.safetensors")})
    replica = Classifier.func_or_class(settings.model_dump(mode="json"))
    ready, reason = replica.ready()
    assert not ready and "no trained detector" in reason
    assert replica.card() == (None, reason)
