"""Errors as RFC 9457 problem details, and the one map from a pipeline error code to an HTTP status.

Statuses come from the stable codes of ``pipeline.errors`` (carried in the batch's ``error_code``
column), never from message text: rewording a message cannot change an API status. The problem's ``code``
names the status's reason; the finer stable code behind it (``media_empty``, ``no_video_stream``,
``access_denied``, ``uri_not_allowed``, ...) goes with it as ``error_code`` where there is one.
"""

# No `from __future__ import annotations`: FastAPI reads these signatures at runtime.
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline import errors
from pipeline.logsafe import log_safe

log = logging.getLogger("deepfakestream.serve")

PROBLEM_JSON = "application/problem+json"
INTERNAL = "internal error; the failure is in the server log"

# status → machine-readable problem code (also the metrics outcome), title
PROBLEMS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "Bad request"),
    403: ("forbidden", "URI not allowed"),
    404: ("not_found", "Not found"),
    408: ("body_timeout", "Request body not received in time"),
    413: ("too_large", "Media too large"),
    415: ("unsupported_media", "Unsupported media type"),
    422: ("unprocessable", "Media could not be decoded"),
    500: ("internal_error", "Internal error"),
    502: ("storage_error", "Object store error"),
    503: ("unavailable", "Model not available"),
    504: ("timeout", "Request timed out"),
}

# error codes of the ingress's own refusals (the pipeline's are in pipeline.errors)
URI_NOT_ALLOWED = "uri_not_allowed"  # 403: the URI is outside the allow-list, or malformed
UNKNOWN_QUERY_PARAMETER = "unknown_query_parameter"  # 400: a query key the route does not take

# a status answered for more than one reason: the other reasons' code and title
OVERLOADED = ("overloaded", "Server busy")  # 503 from admission control, with Retry-After
OUT_OF_MEMORY = ("out_of_memory", "Server out of memory")  # 503 with Retry-After: a stage ran out on this object
WORKER_LOST = ("worker_lost", "Server worker lost")  # 503 with Retry-After: a stage replica died under the request

# codes worth a retry (Retry-After): the server's state, not the object, failed the request → (reason, detail)
RETRYABLE: dict[str, tuple[tuple[str, str], str]] = {
    errors.OUT_OF_MEMORY: (OUT_OF_MEMORY, "the server ran out of memory on this object; retry later"),
    errors.WORKER_LOST: (WORKER_LOST, "a server worker died while scoring this request; retry later"),
}

# pipeline error code → status; a code not listed is a server fault: 500. So are decode_failed and
# detect_failed: a stage crashed (a bug, out of memory) on media it had accepted, and the caller must not be
# told the media is broken; media that does not decode is media_corrupt (422).
STATUS_FOR_CODE: dict[str, int] = {
    errors.EmptyMediaError.code: 400,
    errors.AccessDeniedError.code: 403,
    errors.MediaNotFoundError.code: 404,
    errors.MediaTooLargeError.code: 413,
    errors.UnsupportedMediaError.code: 415,
    errors.MediaError.code: 422,
    errors.NoVideoStreamError.code: 422,
    errors.StorageError.code: 502,
    errors.DeadlineExceededError.code: 504,  # the decode stopped at the request's deadline
    errors.CheckpointError.code: 503,
    errors.NoTrainedModelError.code: 503,
    errors.DeviceUnavailableError.code: 503,
    errors.RuntimeUnavailableError.code: 503,
    errors.OUT_OF_MEMORY: 503,
    errors.WORKER_LOST: 503,  # the ingress's, for a replica that died (killed, crashed) while it held the request
}


def status_for(code: str) -> int:
    """The HTTP status for a pipeline error code."""
    return STATUS_FOR_CODE.get(code, 500)


def public_detail(status: int, message: str) -> str:
    """What the caller is told: the row's message, except for server-side failures."""
    if status == 502:
        return "the object store could not be read; the failure is in the server log"
    if status >= 500 and status not in (503, 504):
        return INTERNAL
    return message


class Problem(BaseModel):
    """RFC 9457 problem details; ``code`` is a stable machine-readable reason."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str
    error_code: str | None = Field(None, description="the finer stable reason behind `code` (the pipeline's error "
                                                     "code, e.g. media_empty, no_video_stream); absent when none")


class ProblemError(Exception):
    def __init__(self, status: int, detail: str, *, reason: tuple[str, str] | None = None,
                 headers: dict[str, str] | None = None, error_code: str | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.reason = reason or PROBLEMS.get(status, ("error", "Error"))  # (code, title)
        self.headers = headers
        self.error_code = error_code

    @property
    def code(self) -> str:
        return self.reason[0]

    def response(self) -> JSONResponse:
        code, title = self.reason
        body = Problem(title=title, status=self.status, detail=self.detail, code=code, error_code=self.error_code)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=self.status, media_type=PROBLEM_JSON,
                            headers=self.headers)


SHUTTING_DOWN = "the server is shutting down; retry later"  # overloaded's detail while draining (serve.app.drain)


def overloaded(retry_after_s: int, detail: str = "the server is at capacity; retry later") -> ProblemError:
    """503 ``overloaded`` with ``Retry-After``: the caller may try again, unlike a missing model."""
    return ProblemError(503, detail, reason=OVERLOADED, headers={"Retry-After": str(retry_after_s)})


def problem_for(code: str, detail: str, retry_after_s: int) -> ProblemError:
    """The problem for a request that failed with ``code``: out of memory or a lost worker may pass (retry later), a
    missing model not."""
    status = status_for(code)
    if code in RETRYABLE:
        reason, said = RETRYABLE[code]
        return ProblemError(status, said, reason=reason, headers={"Retry-After": str(retry_after_s)}, error_code=code)
    return ProblemError(status, public_detail(status, detail), error_code=code)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for routes that answer these problems."""
    schema = {"$ref": "#/components/schemas/Problem"}
    described = {**{s: title for s, (_, title) in PROBLEMS.items()},
                 503: "Model not available; or, with Retry-After: server busy or shutting down, out of memory, worker lost"}
    return {s: {"description": described[s], "content": {PROBLEM_JSON: {"schema": schema}}} for s in statuses}


def invalid(errors: list[dict[str, Any]], what: str = "") -> ProblemError:
    """400 naming each invalid field and why (pydantic's or FastAPI's errors), cut to a readable length."""
    detail = "; ".join(f"{'.'.join(map(str, e.get('loc', ()))) or 'body'}: {e.get('msg')}" for e in errors)
    return ProblemError(400, (f"{what}{detail}" if detail else f"{what}invalid request")[:1000])


def add_problem_handlers(app: FastAPI) -> None:
    """Every error the app raises (ours, Starlette's, validation, unexpected) answers as problem details."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        code, title = PROBLEMS.get(exc.status_code, ("http_error", detail))
        body = Problem(title=title, status=exc.status_code, detail=detail, code=code)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=exc.status_code, media_type=PROBLEM_JSON,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid(list(exc.errors())).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - backstop
        log.exception("unhandled error on %s", log_safe(request.url.path))
        return ProblemError(500, INTERNAL).response()
