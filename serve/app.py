"""Online scoring on Ray Serve: the same Decode → Detect → Classify → Aggregate graph behind a hardened HTTP API.

Deployments (composed with DeploymentHandles; responses are chained, so frames go from the decoder to the
detector through the object store and never through the ingress):

- ``Api`` (FastAPI ingress): parses and limits the request, checks URIs against the allow-list, sniffs the
  media type from the bytes, enforces the per-request deadline, maps errors to problem details, counts
  outcomes.
- ``Decoder`` (CPU): reads an allowed object, checks resolution/duration/frame count from the header, then
  runs ``pipeline.decode.DecodeStage``.
- ``Detector`` (GPU when the cluster has one): ``pipeline.detect.DetectStage`` under ``@serve.batch``: the
  rows of concurrent requests form one stage batch.
- ``Classifier`` (GPU when the cluster has one): ``pipeline.classify.ClassifyStage`` +
  ``pipeline.aggregate.AggregateStage`` under ``@serve.batch``: the face crops of concurrent requests go
  through the network together; returns the public ``ScoreResult`` JSON.

``build_app(settings)`` builds the application, ``app_builder(args)`` is the ``serve deploy`` entry point
(``serve/config.yaml``) and ``run(settings)`` starts it locally (``deepfakestream serve``).
"""

# No `from __future__ import annotations`: FastAPI must resolve the route signatures of the Serve ingress class.
import asyncio
import logging
import math
import os
import time
from collections import Counter
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.batch import Batch, object_column
from pipeline.config import Settings, load_settings
from pipeline.errors import DeepfakeStreamError, MediaError
from pipeline.logsafe import log_safe
from pipeline.media import read_media_bytes, sniff_media
from pipeline.result import ScoreResult, result_from_row
from serve.guard import (
    PROBLEMS,
    UriNotAllowedError,
    check_header_limits,
    check_uri,
    parse_allowed_prefix,
    public_detail,
    server_decode_config,
    status_for,
)

log = logging.getLogger("deepfakestream.serve")

PROBLEM_JSON = "application/problem+json"
MULTIPART_SLACK = 64 * 1024  # multipart framing and headers on top of the file itself


# --------------------------------------------------------------------------------------------------------
# Errors as RFC 9457 problem details
# --------------------------------------------------------------------------------------------------------


class Problem(BaseModel):
    """RFC 9457 problem details; ``code`` is a stable machine-readable reason."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str


class ProblemError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail

    @property
    def code(self) -> str:
        return PROBLEMS.get(self.status, ("error", "Error"))[0]

    def response(self) -> JSONResponse:
        code, title = PROBLEMS.get(self.status, ("error", "Error"))
        body = Problem(title=title, status=self.status, detail=self.detail, code=code)
        return JSONResponse(body.model_dump(), status_code=self.status, media_type=PROBLEM_JSON)


def _problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    schema = {"$ref": "#/components/schemas/Problem"}
    return {s: {"description": PROBLEMS[s][1], "content": {PROBLEM_JSON: {"schema": schema}}} for s in statuses}


class ScoreRequest(BaseModel):
    """Score an object already in the object store (only under ``serve.allowed_uri_prefixes``)."""

    model_config = {"extra": "forbid"}
    uri: str = Field(..., min_length=1, max_length=1024, examples=["s3://uploads/incoming/clip.mp4"])


class Health(BaseModel):
    status: str
    model_version: str


api = FastAPI(
    title="DeepfakeStream",
    version="1",
    description="Face-swap deepfake scoring for one image or video per request. Errors are "
    "`application/problem+json` (RFC 9457).",
    docs_url="/docs",
    openapi_url="/openapi.json",
)


@api.exception_handler(ProblemError)
async def _problem_handler(request: Request, exc: ProblemError) -> JSONResponse:
    return exc.response()


@api.exception_handler(StarletteHTTPException)
async def _http_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    code, title = PROBLEMS.get(exc.status_code, ("http_error", detail))
    body = Problem(title=title, status=exc.status_code, detail=detail, code=code)
    return JSONResponse(body.model_dump(), status_code=exc.status_code, media_type=PROBLEM_JSON,
                        headers=getattr(exc, "headers", None))


@api.exception_handler(RequestValidationError)
async def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors())
    return ProblemError(400, detail[:1000] or "invalid request").response()


@api.exception_handler(Exception)
async def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - backstop
    log.exception("unhandled error on %s", log_safe(request.url.path))
    return ProblemError(500, "internal error; the failure is in the server log").response()


# --------------------------------------------------------------------------------------------------------
# Batch helpers: one request = one row; @serve.batch joins rows into one stage batch and splits it back
# --------------------------------------------------------------------------------------------------------


def concat_rows(batches: list[Batch]) -> Batch:
    keys = batches[0].keys()
    out: Batch = {}
    for key in keys:
        columns = [b[key] for b in batches]
        out[key] = object_column(v for c in columns for v in c) if columns[0].dtype == object else np.concatenate(columns)
    return out


def split_rows(batch: Batch, sizes: list[int]) -> list[Batch]:
    bounds = np.cumsum([0, *sizes])
    return [{k: v[bounds[i]:bounds[i + 1]] for k, v in batch.items()} for i in range(len(sizes))]


def _settings(payload: dict[str, Any]) -> Settings:
    # model_validate does not read the replica's environment: the driver's settings are used as they are.
    return Settings.model_validate(payload)


def _set_torch_threads(settings: Settings) -> None:
    import torch

    threads = settings.serve.torch_threads or settings.torch_threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, threads))


# --------------------------------------------------------------------------------------------------------
# Stage deployments
# --------------------------------------------------------------------------------------------------------


@serve.deployment(name="Decoder")
class Decoder:
    """Reads (allowed URIs only) and decodes one media object per request with ``DecodeStage``."""

    def __init__(self, settings: dict[str, Any]):
        from pipeline.decode import DecodeStage

        self.settings = _settings(settings)
        self.config = server_decode_config(self.settings)
        self.stage = DecodeStage(self.config, self.settings.serve.storage_options)

    def _decode(self, uri: str, data: bytes | None, explain: bool) -> Batch:
        status, error, media = 0, "", None
        start = time.perf_counter()
        try:
            if data is None:  # the ingress has checked the allow-list
                data = read_media_bytes(uri, self.config.max_bytes, self.settings.serve.storage_options)
            kind, _ = sniff_media(data[:512])
            check_header_limits(data, kind, self.config, self.settings.serve.max_frames)
            media = self.stage.decode_one(uri, data)  # called directly: the status comes from the error's type
        except MediaError as exc:
            status = status_for(exc)
            if status >= 500:
                log.error("reading %s failed: %s", log_safe(uri), log_safe(exc))
            error = public_detail(exc, status)
        except Exception as exc:  # noqa: BLE001 - a decoder fault answers like DecodeStage's error row
            log.exception("decoding %s failed", log_safe(uri))
            status, error = 422, f"decode failed: {type(exc).__name__}"
        batch = self.stage.output({"uri": object_column([uri])}, [media], [error],
                                  [(time.perf_counter() - start) * 1000])
        batch["error_status"] = np.array([status], np.int64)
        batch["explain"] = np.array([explain], bool)
        return batch

    async def decode(self, uri: str, data: bytes | None = None, explain: bool = False) -> Batch:
        return await asyncio.to_thread(self._decode, uri, data, explain)


@serve.deployment(name="Detector")
class Detector:
    """``DetectStage`` (MTCNN) with dynamic batching across concurrent requests."""

    def __init__(self, settings: dict[str, Any]):
        from pipeline.checkpoint import read_card
        from pipeline.detect import DEFAULT_CROP_SIZE
        from pipeline.errors import CheckpointError
        from pipeline.graph import make_detect_stage

        self.settings = _settings(settings)
        _set_torch_threads(self.settings)
        try:  # the crop size the classifier expects; the classifier reports a missing model itself
            crop_size = read_card(self.settings.classify.checkpoint).architecture.input_size
        except CheckpointError:
            crop_size = DEFAULT_CROP_SIZE
        self.stage = make_detect_stage(self.settings, crop_size)
        cfg = self.settings.serve
        self.detect.set_max_batch_size(cfg.detect_max_batch_size)
        self.detect.set_batch_wait_timeout_s(cfg.detect_batch_wait_s)
        self.batch_sizes: Counter[int] = Counter()

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
    async def detect(self, batches: list[Batch]) -> list[Batch]:
        self.batch_sizes[len(batches)] += 1
        merged = concat_rows(batches)
        out = await asyncio.to_thread(self.stage, merged)  # off the event loop, or batches stay at 1
        return split_rows(out, [len(b["uri"]) for b in batches])

    def ready(self) -> bool:
        return True

    def stats(self) -> dict[str, Any]:
        """How many @serve.batch calls saw how many requests (benchmarks and tests read this)."""
        return {"batch_sizes": dict(self.batch_sizes)}


class FaceExplanation(BaseModel):
    """One face's Grad-CAM heat map over its crop (red pushed the score towards FAKE)."""

    face: int = Field(description="index of the face in the request (order of frames, then boxes)")
    frame: int = Field(description="index into `frames`")
    track: int
    box: list[float]
    score: float
    heatmap_png: str | None = Field(description="base64 PNG of the crop with the heat map; null past explain_max_faces")


class ScoreResponse(ScoreResult):
    """`deepfakestream score --json`'s result; `explanations` only with `explain=true`."""

    explanations: list[FaceExplanation] | None = None


def explanations(row: dict[str, Any], pngs: list[str | None]) -> list[dict[str, Any]]:
    boxes = np.asarray(row["face_boxes"], np.float64).reshape(-1, 4)
    return [FaceExplanation(face=i, frame=int(row["face_frame"][i]), track=int(row["face_track"][i]),
                            box=[round(float(v), 1) for v in boxes[i]], score=round(float(row["face_scores"][i]), 6),
                            heatmap_png=png).model_dump() for i, png in enumerate(pngs)]


@serve.deployment(name="Classifier")
class Classifier:
    """``ClassifyStage`` + ``AggregateStage`` with dynamic batching; answers ``{status, detail, result}``."""

    def __init__(self, settings: dict[str, Any]):
        from pipeline.graph import make_aggregate_stage, make_classify_stage

        self.settings = _settings(settings)
        _set_torch_threads(self.settings)
        self.error: str | None = None
        self.classify = self.aggregate = None
        try:
            self.classify = make_classify_stage(self.settings)
            self.aggregate = make_aggregate_stage(self.settings, self.classify)
        except DeepfakeStreamError as exc:  # stay up and say why: /v1/health answers 503 with this reason
            self.error = str(exc)
            log.error("no model loaded: %s", exc)
        cfg = self.settings.serve
        self.score.set_max_batch_size(cfg.classify_max_batch_size)
        self.score.set_batch_wait_timeout_s(cfg.classify_batch_wait_s)
        self.batch_sizes: Counter[int] = Counter()

    def _run(self, batch: Batch) -> tuple[Batch, dict[int, list[str | None]]]:
        heat_maps = {}
        if batch["explain"].any():
            from serve.explain import explain_crops

            for i in np.flatnonzero(batch["explain"]):
                heat_maps[int(i)] = explain_crops(self.classify.classifier, batch["crops"][i],
                                                  self.settings.serve.explain_max_faces)
        return self.aggregate(self.classify(batch)), heat_maps

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def score(self, batches: list[Batch]) -> list[dict[str, Any]]:
        if self.classify is None:
            return [{"status": 503, "detail": self.error, "result": None}] * len(batches)
        self.batch_sizes[len(batches)] += 1
        out, heat_maps = await asyncio.to_thread(self._run, concat_rows(batches))
        answers = []
        for index, row in enumerate(split_rows(out, [len(b["uri"]) for b in batches])):
            row = {k: v[0] for k, v in row.items()}
            status = int(row.pop("error_status"))
            if row["error"] and not status:  # detection failed on a decoded frame: a server fault
                log.error("scoring %s failed: %s", log_safe(row["uri"]), log_safe(row["error"]))
                status = 500
            if status:
                detail = str(row["error"]) if status < 500 else "internal error; the failure is in the server log"
                answers.append({"status": status, "detail": detail, "result": None})
            else:
                result = result_from_row(row).model_dump(mode="json")
                if index in heat_maps:
                    result["explanations"] = explanations(row, heat_maps[index])
                answers.append({"status": 200, "detail": None, "result": result})
        return answers

    def card(self) -> dict[str, Any] | None:
        return None if self.classify is None else self.classify.card.model_dump(mode="json")

    def ready(self) -> tuple[bool, str]:
        if self.classify is None:
            return False, self.error or "model not loaded"
        return True, self.classify.card.version

    def stats(self) -> dict[str, Any]:
        return {"batch_sizes": dict(self.batch_sizes)}


# --------------------------------------------------------------------------------------------------------
# Ingress
# --------------------------------------------------------------------------------------------------------


async def read_body_limited(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            too_big = int(length) > limit
        except ValueError:
            raise ProblemError(400, "invalid Content-Length header") from None
        if too_big:
            raise ProblemError(413, f"request body is {int(length)} bytes, over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProblemError(413, f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # Starlette's form() parses the cached body  # noqa: SLF001
    return body


SCORE_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"],
                       "properties": {"file": {"type": "string", "format": "binary",
                                               "description": "image (JPEG/PNG/WebP) or video (MP4/MOV/MKV/WebM/AVI/MPEG-TS)"}}},
        },
        "application/json": {"schema": {"$ref": "#/components/schemas/ScoreRequest"}},
    },
}


def _register_schemas(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (Problem, ScoreRequest):
            components.setdefault(model.__name__, model.model_json_schema(ref_template="#/components/schemas/{model}"))
        return schema

    app.openapi = openapi


_register_schemas(api)


@serve.deployment(name="Api")
@serve.ingress(api)
class Api:
    def __init__(self, settings: dict[str, Any], decoder: DeploymentHandle, detector: DeploymentHandle,
                 classifier: DeploymentHandle):
        from ray.serve import metrics

        self.settings = _settings(settings)
        self.config = self.settings.serve
        self.decode_config = server_decode_config(self.settings)
        self.decoder, self.detector, self.classifier = decoder, detector, classifier
        self.requests = metrics.Counter(
            "deepfakestream_requests", description="POST /v1/score requests by outcome "
            "(fake, real, no_face, or the problem code)", tag_keys=("outcome",))
        self.latency = metrics.Histogram(
            "deepfakestream_request_latency_ms", description="POST /v1/score latency by outcome",
            boundaries=[50, 100, 200, 300, 500, 1000, 2000, 5000, 10000, 30000, 60000], tag_keys=("outcome",))

    # ---- routes ----

    @api.post(
        "/v1/score",
        response_model=ScoreResponse,
        summary="Score one image or video",
        description="Send the media as `multipart/form-data` (field `file`), or JSON `{\"uri\": \"s3://…\"}` "
        "for an object under one of the server's allowed prefixes. The media type is read from the bytes, "
        "never from the name. Answers the same JSON as `deepfakestream score --json`.",
        openapi_extra={"requestBody": SCORE_REQUEST_BODY},
        responses=_problem_responses(400, 403, 404, 413, 415, 422, 500, 502, 503, 504),
    )
    async def score(self, request: Request,
                    explain: bool = Query(False, description="add a Grad-CAM heat map (base64 PNG) per face"),
                    timeout_s: float | None = Query(None, gt=0, description="lower the server's deadline (s)")):
        start = time.perf_counter()
        outcome = "internal_error"
        try:
            uri, data = await self._parse(request)
            deadline = min(timeout_s or self.config.request_timeout_s, self.config.request_timeout_s)
            try:
                answer = await asyncio.wait_for(self._run_graph(uri, data, explain), deadline)
            except TimeoutError:
                raise ProblemError(504, f"scoring took longer than {deadline:g} s") from None
            if answer["status"] != 200:
                raise ProblemError(answer["status"], answer["detail"] or "request failed")
            outcome = answer["result"]["label"].lower()
            return JSONResponse(answer["result"])
        except ProblemError as exc:
            outcome = exc.code
            raise
        except Exception as exc:  # noqa: BLE001 - never leak a trace to the caller
            log.exception("scoring failed")
            raise ProblemError(500, "internal error; the failure is in the server log") from exc
        finally:
            self.requests.inc(1, tags={"outcome": outcome})
            self.latency.observe((time.perf_counter() - start) * 1000, tags={"outcome": outcome})

    @api.get("/v1/health", response_model=Health, summary="Ready when the model is loaded",
             responses=_problem_responses(503))
    async def health(self):
        try:
            ok, info = await asyncio.wait_for(self.classifier.ready.remote(), 10)
            await asyncio.wait_for(self.detector.ready.remote(), 10)
        except Exception as exc:  # noqa: BLE001
            log.warning("health check failed: %s", exc)
            raise ProblemError(503, "model replicas are not responding") from exc
        if not ok:
            raise ProblemError(503, info)
        return Health(status="ready", model_version=info)

    @api.get("/v1/model", summary="The loaded model's card", responses=_problem_responses(503))
    async def model(self):
        card = await self.classifier.card.remote()
        if card is None:
            _, info = await self.classifier.ready.remote()
            raise ProblemError(503, info)
        return JSONResponse(card)

    # ---- helpers ----

    async def _parse(self, request: Request) -> tuple[str, bytes | None]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            await read_body_limited(request, self.config.max_upload_bytes + MULTIPART_SLACK)
            try:
                form = await request.form(max_files=1, max_fields=4)
            except Exception as exc:  # noqa: BLE001 - malformed multipart
                raise ProblemError(400, f"malformed multipart body: {exc}") from None
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ProblemError(400, "multipart body needs a file field named 'file'")
            data = await upload.read(self.decode_config.max_bytes + 1)
            if len(data) > self.decode_config.max_bytes:
                raise ProblemError(413, f"file is over the {self.decode_config.max_bytes}-byte limit")
            try:
                sniff_media(data[:512])
            except MediaError as exc:
                raise ProblemError(status_for(exc), str(exc)) from None
            name = os.path.basename((upload.filename or "").replace("\\", "/"))[:255]
            return name or "upload", data
        if content_type == "application/json":
            body = await read_body_limited(request, 16 * 1024)
            try:
                parsed = ScoreRequest.model_validate_json(body)
            except ValidationError as exc:
                detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
                raise ProblemError(400, f"invalid JSON body: {detail}"[:1000]) from None
            try:
                return check_uri(parsed.uri, self.config.allowed_uri_prefixes), None
            except UriNotAllowedError as exc:
                raise ProblemError(403, str(exc)) from None
        raise ProblemError(415, "send multipart/form-data with a 'file' field, or application/json with a 'uri'")

    async def _run_graph(self, uri: str, data: bytes | None, explain: bool = False) -> dict[str, Any]:
        responses = []
        try:
            # chained responses: each stage's output goes straight to the next replica
            responses.append(self.decoder.decode.remote(uri, data, explain))
            responses.append(self.detector.detect.remote(responses[-1]))
            responses.append(self.classifier.score.remote(responses[-1]))
            return await responses[-1]
        except asyncio.CancelledError:
            for response in responses:
                response.cancel()
            raise


# --------------------------------------------------------------------------------------------------------
# Building and running
# --------------------------------------------------------------------------------------------------------


def _cluster_has_gpu() -> bool:
    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) > 0
    import torch

    return torch.cuda.is_available()


def build_app(settings: Settings):
    """The Serve application for ``settings`` (replicas, CPUs/GPUs and batch sizes from ``settings.serve``)."""
    cfg = settings.serve
    for prefix in cfg.allowed_uri_prefixes:
        parse_allowed_prefix(prefix)  # a bad allow-list entry fails the deploy, not a request
    payload = settings.model_dump(mode="json")
    if cfg.gpus is not None:
        gpus = cfg.gpus
    else:  # one GPU shared by every model replica (Ray takes fractions to 4 decimals)
        gpus = math.floor(10_000 / (cfg.detect_replicas + cfg.classify_replicas)) / 10_000 if _cluster_has_gpu() else 0.0

    def actor(cpus: float, gpu: float = 0.0) -> dict[str, float]:
        return {"num_cpus": cpus, **({"num_gpus": gpu} if gpu else {})}

    decoder = Decoder.options(num_replicas=cfg.decode_replicas, ray_actor_options=actor(cfg.decode_cpus),
                              max_ongoing_requests=8).bind(payload)
    detector = Detector.options(num_replicas=cfg.detect_replicas, ray_actor_options=actor(cfg.detect_cpus, gpus),
                                max_ongoing_requests=max(8, 2 * cfg.detect_max_batch_size)).bind(payload)
    classifier = Classifier.options(num_replicas=cfg.classify_replicas,
                                    ray_actor_options=actor(cfg.classify_cpus, gpus),
                                    max_ongoing_requests=max(8, 2 * cfg.classify_max_batch_size)).bind(payload)
    return Api.options(num_replicas=cfg.ingress_replicas, ray_actor_options=actor(cfg.ingress_cpus),
                       max_ongoing_requests=cfg.max_ongoing_requests).bind(payload, decoder, detector, classifier)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "storage_options":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def app_builder(args: dict[str, Any]):
    """``serve deploy`` / KubeRay entry point (``import_path: serve.app:app_builder``).

    ``args``: ``config`` (a settings file, optional) and ``settings`` (nested settings, e.g.
    ``{serve: {classify_max_batch_size: 16}}``), applied over the environment (``DFS_*``).
    """
    args = dict(args or {})
    unknown = set(args) - {"config", "settings"}
    if unknown:
        raise ValueError(f"unknown application args {sorted(unknown)}; expected 'config' and/or 'settings'")
    settings = load_settings(args.get("config"), **_flatten(args.get("settings") or {}))
    return build_app(settings)


def deploy(settings: Settings, *, blocking: bool = False):
    """Start Serve's HTTP proxy on ``serve.host:serve.port`` (if Serve is not running) and deploy the app."""
    serve.start(http_options={"host": settings.serve.host, "port": settings.serve.port})
    return serve.run(build_app(settings), name=settings.serve.app_name, route_prefix=settings.serve.route_prefix,
                     blocking=blocking)


def run(settings: Settings) -> None:
    """``deepfakestream serve``: a local Ray instance, the app on host:port, until Ctrl-C."""
    import ray

    import signal

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}})

    def _stop(signum, frame):  # SIGTERM (docker stop, systemd) shuts down like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)  # after ray.init, which installs its own handler
    try:
        deploy(settings)
        url = f"http://{settings.serve.host}:{settings.serve.port}{settings.serve.route_prefix.rstrip('/')}"
        print(f"DeepfakeStream API on {url}  (docs: {url}/docs; Ctrl-C stops)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


__all__ = ["api", "app_builder", "build_app", "deploy", "run", "Api", "Decoder", "Detector", "Classifier"]
