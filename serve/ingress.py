"""The HTTP ingress (FastAPI on Serve): parses and limits the request, checks URIs against the allow-list,
enforces the per-request deadline, chains the stage deployments by handle, maps error codes to problem
details and counts outcomes.

The ingress never looks inside the media: the decoder sniffs the type and reads the header, once.
"""

# No `from __future__ import annotations`: FastAPI must resolve the route signatures of the Serve ingress class.
import asyncio
import functools
import inspect
import logging
import time
from collections import Counter
from typing import Any

import ray
from fastapi import FastAPI, Query, Request
from fastapi.params import Query as QueryParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from pipeline import errors
from pipeline.errors import one_line
from pipeline.result import R1, R6, ScoreResult
from serve.admission import Admission, Draining, Overloaded
from serve.deployments import replica_settings
from serve.guard import UriNotAllowedError, check_uri, server_decode_config
from pipeline.heap import pin_mmap_threshold, release_heap
from serve.problems import (INTERNAL, SHUTTING_DOWN, UNKNOWN_QUERY_PARAMETER, URI_NOT_ALLOWED, Problem, ProblemError,
                            add_problem_handlers, invalid, overloaded, problem_for, problem_responses)
from serve.upload import Upload, body_deadline, read_small_body, receive_upload

log = logging.getLogger("deepfakestream.serve")

MAX_JSON_BYTES = 16 * 1024

# Ray's errors for a stage replica that died under a request (kill -9, a crash, its node gone; Serve restarts it):
# the request may well pass when retried, so 503 worker_lost with Retry-After, not a bare 500. Ray's memory monitor
# killing one is out_of_memory.
REPLICA_LOST = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError)


def lost_replica(exc: BaseException | None) -> str | None:
    """``out_of_memory`` or ``worker_lost`` when ``exc``, or what caused it, is a stage replica dying (Serve raises
    its own RayServeException for the next stage of the chain, the replica's death as its cause); else None."""
    while exc is not None:
        if isinstance(exc, ray.exceptions.OutOfMemoryError):
            return errors.OUT_OF_MEMORY
        if isinstance(exc, REPLICA_LOST):
            return errors.WORKER_LOST
        exc = exc.__cause__
    return None


class ScoreRequest(BaseModel):
    """Score an object already in the object store (only under ``serve.allowed_uri_prefixes``)."""

    model_config = {"extra": "forbid"}
    uri: str = Field(..., min_length=1, max_length=1024, examples=["s3://uploads/incoming/clip.mp4"])


class Health(BaseModel):
    status: str
    model_version: str


class FaceExplanation(BaseModel):
    """One face's Grad-CAM heat map over its crop (red pushed the score towards FAKE)."""

    face: int = Field(description="index of the face in the request (order of frames, then boxes)")
    frame: int = Field(description="index into `frames`")
    track: int
    box: list[R1]
    score: R6
    heatmap_png: str | None = Field(description="base64 PNG of the crop with the heat map; null past explain_max_faces")


class ScoreResponse(ScoreResult):
    """`deepfakestream score --json`'s result; `explanations` only with `explain=true`."""

    explanations: list[FaceExplanation] | None = None


SCORE_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"],
                       "properties": {"file": {"type": "string", "format": "binary",
                                               "description": "image (JPEG/PNG/WebP/HEIC/HEIF/AVIF) or video "
                                                              "(MP4/MOV/MKV/WebM/AVI/MPEG-PS/TS)"}}},
        },
        "application/json": {"schema": {"$ref": "#/components/schemas/ScoreRequest"}},
    },
}

api = FastAPI(
    title="DeepfakeStream",
    version="1",
    description="Face-swap deepfake scoring for one image or video per request. The API's errors are "
    "`application/problem+json` (RFC 9457); Ray Serve's HTTP proxy answers a few itself in plain text "
    "(before the application is deployed: 404; past its own request timeout: 408).",
    # no Swagger UI or ReDoc: FastAPI's pages load their script from a CDN (blank offline, third-party code run on
    # our origin) and no installed package ships them; /openapi.json is the contract (docs/serve.md "API")
    docs_url=None,
    redoc_url=None,
    openapi_url="/openapi.json",
)
add_problem_handlers(api)


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


def query_names(route) -> frozenset[str]:
    """The query parameters ``route`` declares (its ``Query(...)`` arguments)."""
    return frozenset(name for name, param in inspect.signature(route).parameters.items()
                     if isinstance(param.default, QueryParam))


def check_query(request: Request, accepted: frozenset[str]) -> None:
    """400 for a query key the route does not take: FastAPI ignores them, so ``?threshold=0.1`` would be scored at
    the server's threshold, and a JSON body's unknown keys are refused already."""
    unknown = sorted(set(request.query_params) - accepted)
    if unknown:
        detail = f"unknown query parameter(s) {', '.join(map(repr, unknown))}; this route takes {', '.join(sorted(accepted))}"
        raise ProblemError(400, detail[:1000], error_code=UNKNOWN_QUERY_PARAMETER)


async def put_upload(upload: Upload | None) -> ray.ObjectRef | None:
    """The upload into the object store, read from its spool once; the decoder gets it by reference."""
    if upload is None:
        return None
    return await asyncio.to_thread(lambda: ray.put(upload.read_array()))  # the array dies with the lambda


@serve.deployment(name="Api")
@serve.ingress(api)
class Api:
    ready_timeout_s = 10.0  # /v1/health and /v1/model: past this a model replica is not responding (503)

    def __init__(self, settings: dict[str, Any], decoder: DeploymentHandle, detector: DeploymentHandle,
                 classifier: DeploymentHandle):
        from ray.serve import metrics

        self.settings = replica_settings(settings)
        self.config = self.settings.serve
        pin_mmap_threshold()  # big uploads' buffers go back to the OS when freed (pipeline/heap.py)
        self.max_bytes = server_decode_config(self.settings).max_bytes
        self.decoder, self.detector, self.classifier = decoder, detector, classifier
        self.admission = Admission(self.config.max_inflight, self.config.max_queued)
        self.requests = metrics.Counter(
            "deepfakestream_requests", description="POST /v1/score requests by outcome "
            "(fake, real, no_face, the problem code, or cancelled: the client went away)", tag_keys=("outcome",))
        self.latency = metrics.Histogram(
            "deepfakestream_request_latency_ms", description="POST /v1/score latency by outcome",
            boundaries=[50, 100, 200, 300, 500, 1000, 2000, 5000, 10000, 30000, 60000], tag_keys=("outcome",))
        self.outcomes: Counter[str] = Counter()  # the same counts, for ``outcomes_seen()``

    # ---- routes ----

    @api.post(
        "/v1/score",
        response_model=ScoreResponse,
        summary="Score one image or video",
        description="Send the media as `multipart/form-data` (field `file`), or JSON `{\"uri\": \"s3://…\"}` "
        "for an object under one of the server's allowed prefixes. The media type is read from the bytes, "
        "never from the name. Answers the same JSON as `deepfakestream score --json`. A full server answers 503 "
        "with `Retry-After` at once; a body not received within the server's deadline gets 408.",
        openapi_extra={"requestBody": SCORE_REQUEST_BODY},
        responses=problem_responses(400, 403, 404, 408, 413, 415, 422, 500, 502, 503, 504),
    )
    async def score(self, request: Request,
                    explain: bool = Query(False, description="add a Grad-CAM heat map (base64 PNG) per face"),
                    timeout_s: float | None = Query(None, gt=0, description="lower the server's deadline (s)")):
        start = time.perf_counter()
        outcome = "internal_error"
        try:
            check_query(request, self.score_query)
            async with self.admission.place():  # before the body: a full server answers at once
                uri, upload = await self._parse(request)
                try:
                    answer = await self._score(uri, upload, explain, timeout_s)
                finally:
                    if upload is not None:
                        await upload.close()
                        if upload.size > self.config.spool_memory_bytes:
                            await asyncio.to_thread(release_heap)
            if answer["error_code"]:
                raise problem_for(answer["error_code"], answer["detail"] or "request failed", self.config.retry_after_s)
            outcome = answer["result"]["label"].lower()
            return JSONResponse(answer["result"])
        except asyncio.CancelledError:  # the client went away (Serve cancels the request; or mid-body): no answer
            outcome = "cancelled"
            raise
        except Overloaded as refused:
            exc = (overloaded(self.config.retry_after_s, SHUTTING_DOWN)
                   if isinstance(refused, Draining) else overloaded(self.config.retry_after_s))
            outcome = exc.code
            raise exc from None
        except ProblemError as exc:
            outcome = exc.code
            raise
        except Exception as exc:  # noqa: BLE001 - never leak a trace to the caller
            log.exception("scoring failed")
            raise ProblemError(500, INTERNAL) from exc
        finally:
            self.outcomes[outcome] += 1
            self.requests.inc(1, tags={"outcome": outcome})
            self.latency.observe((time.perf_counter() - start) * 1000, tags={"outcome": outcome})

    async def _score(self, uri: str, upload: Upload | None, explain: bool, timeout_s: float | None) -> dict[str, Any]:
        """Wait for a turn and run the graph, both inside the request's deadline (504)."""
        deadline = min(timeout_s or self.config.request_timeout_s, self.config.request_timeout_s)
        try:
            async with asyncio.timeout(deadline) as timer, self.admission.turn():
                data = await put_upload(upload)
                return await self._run_graph(uri, data, explain, timer.when() - asyncio.get_running_loop().time())
        except TimeoutError:
            raise ProblemError(504, f"scoring took longer than {deadline:g} s") from None
        except BackPressureError:  # a stage deployment's own max_queued_requests, if one is set
            raise overloaded(self.config.retry_after_s) from None
        except Exception as exc:  # a replica that died under the request: retry later; anything else a 500
            code = lost_replica(exc)
            if code is None:
                raise
            log.warning("a replica died under the request (%s): %s", code, one_line(exc))
            raise problem_for(code, "", self.config.retry_after_s) from None

    @api.get("/v1/health", response_model=Health, summary="Ready when every model replica has its model loaded",
             responses=problem_responses(503))
    async def health(self):
        if self.admission.draining:  # a load balancer must stop sending here: every new request would get 503
            raise overloaded(self.config.retry_after_s, SHUTTING_DOWN)
        # both stages at once: a stuck stage costs one timeout, not one per stage
        classifiers, detectors = await asyncio.gather(self._ask_replicas(self.classifier), self._ask_replicas(self.detector))
        for ok, info in classifiers + detectors:  # the first replica that is not ready says why
            if not ok:
                raise ProblemError(503, info)
        return Health(status="ready", model_version=classifiers[0][1])

    @api.get("/v1/model", summary="The loaded model's card and the scoring settings in force",
             description="The model card as trained, and `effective`: the `threshold`, `aggregation`, "
             "`min_track_frames` and `tta_flip` this server scores with (the card's, or its `classify.*` overrides).",
             responses=problem_responses(503))
    async def model(self):
        try:  # one call: the card, or why not, from the same replica
            card, info = await asyncio.wait_for(self.classifier.card.remote(), self.ready_timeout_s)
        except Exception as exc:  # noqa: BLE001 - a dead, restarting or stuck replica
            log.warning("model card request failed: %s", exc)
            raise ProblemError(503, "model replicas are not responding") from exc
        if card is None:
            raise ProblemError(503, info or "no model loaded")
        return JSONResponse(card)

    @functools.cached_property
    def score_query(self) -> frozenset[str]:
        """What ``POST /v1/score`` takes in its query (explain, timeout_s): any other key is refused."""
        return query_names(type(self).score)

    def stats(self) -> dict[str, int]:
        """Admission counters of this replica (tests and bench/serve_load.py read them through a handle)."""
        return self.admission.stats()

    def drain(self) -> dict[str, int]:
        """Shutting down: every new ``POST /v1/score`` gets 503 ``overloaded`` (Retry-After) while the admitted are
        answered; ``serve.app.drain`` waits up to ``serve.drain_timeout_s`` for ``stats()["admitted"]`` to reach 0."""
        self.admission.drain()
        return self.admission.stats()

    async def cut_off(self, wait_s: float) -> int:
        """The drain has ended: each request still admitted is answered 503 ``overloaded`` (shutting down, Retry-After)
        and its stage calls are cancelled, within ``wait_s``. Before, Serve waited ~30 s for this replica and the
        decoder's, killed them, and the client got no answer. Returns how many were cut off."""
        return await self.admission.cut_off(wait_s)

    def outcomes_seen(self) -> dict[str, int]:
        """``POST /v1/score`` outcomes of this replica so far, as the requests metric counts them (tests read them)."""
        return dict(self.outcomes)

    # ---- helpers ----

    async def _ask_replicas(self, stage: DeploymentHandle) -> list[tuple[bool, str]]:
        """``ready()`` of every running replica of a stage (``DeploymentHandle.broadcast``), so one broken
        replica among several fails every health check, not one in N; 503 when any does not answer."""
        try:
            answers = await stage.broadcast("ready").results_async(timeout_s=self.ready_timeout_s)
        except Exception as exc:  # noqa: BLE001 - no running replica, a dead or stuck one, the timeout
            log.warning("health check failed: %s", exc)
            raise ProblemError(503, "model replicas are not responding") from exc
        if not answers:
            raise ProblemError(503, "model replicas are not responding")
        return [tuple(answer) for answer in answers]

    async def _parse(self, request: Request) -> tuple[str, Upload | None]:
        """(name or URI, the spooled upload or None), received within ``serve.body_timeout_s`` (408)."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            async with body_deadline(self.config.body_timeout_s):
                upload = await receive_upload(request, self.max_bytes, self.config.spool_memory_bytes)
            return upload.name, upload
        if content_type == "application/json":
            async with body_deadline(self.config.body_timeout_s):
                body = await read_small_body(request, MAX_JSON_BYTES)
            try:
                parsed = ScoreRequest.model_validate_json(body)
            except ValidationError as exc:
                raise invalid(exc.errors(), "invalid JSON body: ") from None
            try:
                return check_uri(parsed.uri, self.config.allowed_uri_prefixes), None
            except UriNotAllowedError as exc:
                raise ProblemError(403, str(exc), error_code=URI_NOT_ALLOWED) from None
        raise ProblemError(415, "send multipart/form-data with a 'file' field, or application/json with a 'uri'")

    async def _run_graph(self, uri: str, data: ray.ObjectRef | None, explain: bool = False,
                         timeout_s: float | None = None) -> dict[str, Any]:
        """``timeout_s``: what is left of the request's deadline, past which the decoder stops decoding; it gets the
        deadline on the wall clock too, to tell our 504 from a client gone after waiting in its queue."""
        expires_at = None if timeout_s is None else time.time() + timeout_s
        responses = []
        try:
            # chained responses: each stage's output goes straight to the next replica
            responses.append(self.decoder.decode.remote(uri, data, explain, timeout_s, expires_at))
            del data  # Ray holds the upload until the decoder is done with it, not until the answer
            responses.append(self.detector.detect.remote(responses[-1]))
            responses.append(self.classifier.score.remote(responses[-1]))
            return await responses[-1]
        except asyncio.CancelledError:
            for response in responses:
                response.cancel()
            raise
