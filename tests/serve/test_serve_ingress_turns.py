"""The ingress without Ray (stand-in stage handles): the wait for a turn counts against the request's
deadline (504, and the turn is not lost), Ray's BackPressureError becomes 503 overloaded, a client that goes
away is counted as `cancelled`, and /v1/health and /v1/model answer 503 problems in time for replicas that
are broken, dead or stuck, and a stage replica that dies under a request is a retryable 503."""

from __future__ import annotations

import asyncio
import collections
import time

import pytest
from ray import exceptions as ray_errors
from ray.serve.exceptions import BackPressureError

from serve.admission import Admission
from serve.problems import ProblemError

ANSWER = {"error_code": None, "detail": None, "result": {"label": "REAL"}}


class _Response:
    """Stands in for a DeploymentResponse: awaitable once, cancellable."""

    def __init__(self, make):
        self._make, self.cancelled = make, False

    def __await__(self):
        return self._make().__await__()

    def cancel(self) -> None:
        self.cancelled = True


class _Method:
    def __init__(self, make=None):
        self._make = make
        self.sent: list[_Response] = []
        self.args: list[tuple] = []

    def remote(self, *args):
        response = _Response(self._make or (lambda: asyncio.sleep(0)))
        self.sent.append(response)
        self.args.append(args)
        return response


class _Broadcast:
    """Stands in for a DeploymentBroadcastResponse: one answer per running replica."""

    def __init__(self, make):
        self._make = make

    async def results_async(self, *, timeout_s=None, return_exceptions=False):
        try:
            return await asyncio.wait_for(self._make(), timeout_s)
        except asyncio.TimeoutError:
            raise TimeoutError("Timed out waiting for broadcast results.") from None


class _Stage:
    def __init__(self, replicas=None, **methods):
        self._replicas = replicas  # broadcast("ready"): a coroutine function giving every replica's answer
        self.__dict__.update(methods)

    def broadcast(self, method: str) -> _Broadcast:
        assert method == "ready"
        return _Broadcast(self._replicas)


# an ASGI scope of `POST /v1/score` with a JSON body, as the proxy hands it to the ingress
SCORE_SCOPE = {"type": "http", "method": "POST", "path": "/v1/score", "query_string": b"",
               "headers": [(b"content-type", b"application/json")]}


async def _in_the_graph(api, receive) -> asyncio.Task:
    """``POST /v1/score`` of ``receive``'s body as a task, once its graph call is sent."""
    from starlette.requests import Request

    task = asyncio.create_task(api.score(Request(dict(SCORE_SCOPE), receive), explain=False, timeout_s=None))
    await asyncio.sleep(0.2)
    assert len(api.classifier.score.sent) == 1  # in the graph
    return task


def _ingress(score, max_inflight: int = 1, timeout_s: float = 0.3):
    from pipeline.config import load_settings
    from serve.ingress import Api

    cls = Api.func_or_class.__mro__[1]  # the class under Serve's ASGI wrapper
    api = object.__new__(cls)
    api.config = load_settings(**{"serve.max_inflight": max_inflight, "serve.max_queued": 4,
                                  "serve.request_timeout_s": timeout_s, "serve.retry_after_s": 4}).serve
    api.admission = Admission(api.config.max_inflight, api.config.max_queued)
    api.outcomes = collections.Counter()
    api.decoder, api.detector = _Stage(decode=_Method()), _Stage(detect=_Method())
    api.classifier = _Stage(score=_Method(score))
    return api


def test_back_pressure_from_a_stage_is_503_overloaded_with_retry_after():
    async def full():
        raise BackPressureError(num_queued_requests=3, max_queued_requests=3)

    api = _ingress(full)
    with pytest.raises(ProblemError) as info:
        asyncio.run(api._score("s3://b/k.jpg", None, False, None))  # noqa: SLF001
    assert info.value.status == 503 and info.value.code == "overloaded"
    assert info.value.headers == {"Retry-After": "4"}


def _upstream_died() -> Exception:
    """What the ingress gets when the decoder dies under a chained request: Serve's error for the next stage."""
    from ray.serve.exceptions import RayServeException

    wrapped = RayServeException("Request to deployment 'Detector' failed because an upstream actor died")
    wrapped.__cause__ = ray_errors.ActorDiedError()
    return wrapped


@pytest.mark.parametrize("died,code", [
    (ray_errors.ActorDiedError(), "worker_lost"),
    (ray_errors.ActorUnavailableError("connection lost", None), "worker_lost"),
    (ray_errors.WorkerCrashedError(), "worker_lost"),
    (ray_errors.OutOfMemoryError("the memory monitor killed the worker"), "out_of_memory"),
    (_upstream_died(), "worker_lost"),
], ids=["died", "unavailable", "crashed", "out of memory", "upstream died"])
def test_a_replica_that_dies_under_a_request_is_a_retryable_503(died, code):
    """A stage replica killed or crashed mid-request (Serve restarts it) was a bare 500 internal_error: it is 503 with
    Retry-After and its code; Ray's memory monitor killing it is out_of_memory. (A real kill -9 of the Decoder:
    tests/serve/test_serve_hardening.py.)"""
    async def dies():
        raise died

    with pytest.raises(ProblemError) as info:
        asyncio.run(_ingress(dies)._score("s3://b/k.jpg", None, False, None))  # noqa: SLF001
    assert (info.value.status, info.value.code, info.value.error_code) == (503, code, code)
    assert info.value.headers == {"Retry-After": "4"} and "retry later" in info.value.detail


def test_waiting_for_a_turn_counts_against_the_deadline():
    release = None

    async def held():
        await release.wait()
        return ANSWER

    api = _ingress(held, max_inflight=1, timeout_s=5)

    async def main():
        nonlocal release
        release = asyncio.Event()
        first = asyncio.create_task(api._score("s3://b/1.jpg", None, False, None))  # noqa: SLF001
        await asyncio.sleep(0.05)
        start = asyncio.get_running_loop().time()
        with pytest.raises(ProblemError) as info:  # the only turn is taken for longer than its 0.2 s
            await asyncio.wait_for(api._score("s3://b/2.jpg", None, False, 0.2), 3)  # noqa: SLF001
        waited = asyncio.get_running_loop().time() - start
        assert info.value.status == 504 and info.value.code == "timeout" and 0.15 < waited < 2
        assert len(api.classifier.score.sent) == 1  # the second never reached the graph
        release.set()
        assert await first == ANSWER
        assert await api._score("s3://b/3.jpg", None, False, None) == ANSWER  # noqa: SLF001 - the turn came back

    asyncio.run(main())


def test_the_decoder_is_given_what_is_left_of_the_deadline():
    """The decoder stops decoding when the request's deadline passes (pipeline/work.py): it must be told when."""
    api = _ingress(lambda: asyncio.sleep(0, ANSWER), max_inflight=1, timeout_s=5)
    assert asyncio.run(api._score("s3://b/1.jpg", None, False, None)) == ANSWER  # noqa: SLF001
    assert asyncio.run(api._score("s3://b/2.jpg", None, False, 0.5)) == ANSWER  # noqa: SLF001 - the caller's own
    (_, _, _, first, first_at), (_, _, _, second, _) = api.decoder.decode.args
    assert 4 < first <= 5 and 0 < second <= 0.5
    assert abs(first_at - (time.time() + first)) < 1  # and when, on the wall clock (serve/deployments.py: why it stopped)


def test_a_caller_cannot_raise_the_servers_deadline():
    """``?timeout_s=`` only lowers the deadline: a caller asking for 60 s of a 0.3 s server still gets 504 at 0.3 s."""
    async def slow():
        await asyncio.sleep(2)
        return ANSWER

    api = _ingress(slow, timeout_s=0.3)

    async def main():
        start = asyncio.get_running_loop().time()
        with pytest.raises(ProblemError) as info:
            await asyncio.wait_for(api._score("s3://b/1.jpg", None, False, 60.0), 5)  # noqa: SLF001
        assert info.value.status == 504 and asyncio.get_running_loop().time() - start < 1.5

    asyncio.run(main())


def test_a_freed_turn_serves_the_next_request():
    api = _ingress(lambda: asyncio.sleep(0.05, ANSWER), max_inflight=1, timeout_s=2)

    async def main():
        return await asyncio.gather(*(api._score(f"s3://b/{i}.jpg", None, False, None) for i in range(4)))  # noqa: SLF001

    assert asyncio.run(main()) == [ANSWER] * 4
    assert len(api.classifier.score.sent) == 4


# ---- a client that goes away ----------------------------------------------------------------------------


class _Recorder:
    def __init__(self):
        self.outcomes: list[str] = []

    def inc(self, value, tags):
        self.outcomes.append(tags["outcome"])

    def observe(self, value, tags):
        self.outcomes.append(tags["outcome"])


def test_a_client_that_disconnects_is_counted_as_cancelled_and_frees_its_place():
    api = _ingress(lambda: asyncio.sleep(30), timeout_s=20)
    api.config = api.config.model_copy(update={"allowed_uri_prefixes": ["s3://b/in/"]})
    api.requests, api.latency = _Recorder(), _Recorder()
    sent = {"body": False}

    async def receive():
        if sent["body"]:
            await asyncio.sleep(100)
        sent["body"] = True
        return {"type": "http.request", "body": b'{"uri": "s3://b/in/x.mp4"}', "more_body": False}

    async def main():
        task = await _in_the_graph(api, receive)
        task.cancel()  # what Ray Serve does when the HTTP client disconnects
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert api.requests.outcomes == ["cancelled"] and api.latency.outcomes == ["cancelled"]
    assert api.outcomes_seen() == {"cancelled": 1}
    assert api.admission.stats()["admitted"] == 0
    assert api.classifier.score.sent[0].cancelled  # and the graph's calls were cancelled


def test_a_request_still_running_when_the_drain_ends_is_answered_503_and_its_graph_cancelled():
    """serve.app.drain's end (Api.cut_off): a request still admitted was left running, so Serve waited ~30 s for its
    replicas and then killed them, its client getting no answer. It is answered 503 overloaded (shutting down, with
    Retry-After) and its stage calls are cancelled; a client that goes away before that stays ``cancelled``.
    Real Serve and a real stop: tests/serve/test_serve_hardening.py."""

    from serve.problems import SHUTTING_DOWN

    api = _ingress(lambda: asyncio.sleep(30), timeout_s=20)
    api.config = api.config.model_copy(update={"allowed_uri_prefixes": ["s3://b/in/"]})
    api.requests, api.latency = _Recorder(), _Recorder()

    async def receive():
        return {"type": "http.request", "body": b'{"uri": "s3://b/in/x.mp4"}', "more_body": False}

    async def main():
        task = await _in_the_graph(api, receive)
        api.drain()
        assert await asyncio.wait_for(api.cut_off(1.0), 2) == 1  # returns once it is answered
        assert task.done()
        with pytest.raises(ProblemError) as info:
            await task
        return info.value

    problem = asyncio.run(main())
    assert (problem.status, problem.code, problem.detail) == (503, "overloaded", SHUTTING_DOWN)
    assert problem.headers == {"Retry-After": "4"}
    assert api.outcomes_seen() == {"overloaded": 1} and api.requests.outcomes == ["overloaded"]
    assert api.admission.stats()["admitted"] == 0
    assert all(response.cancelled for method in (api.decoder.decode, api.detector.detect, api.classifier.score)
               for response in method.sent)  # the stage calls are cancelled: their replicas are free to stop


@pytest.mark.parametrize("gone", ["http.disconnect", "ray"])
def test_a_client_that_disconnects_mid_upload_is_cancelled_without_a_traceback(gone, caplog):
    """Mid-body, the disconnect comes out of ``request.stream()``: Starlette's ClientDisconnect was a 400
    ``bad_request``, Ray's TaskCancelledError a 500 ``internal_error`` with a logged traceback."""
    from ray.exceptions import TaskCancelledError
    from starlette.requests import Request

    api = _ingress(lambda: asyncio.sleep(0, ANSWER), timeout_s=20)
    api.max_bytes = 1024**2
    api.requests, api.latency = _Recorder(), _Recorder()
    parts = iter([b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\nxxxx'])

    async def receive():
        part = next(parts, None)
        if part is not None:
            return {"type": "http.request", "body": part, "more_body": True}
        if gone == "ray":
            raise TaskCancelledError()
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/v1/score", "query_string": b"",
             "headers": [(b"content-type", b"multipart/form-data; boundary=B")]}

    async def main():
        with pytest.raises(asyncio.CancelledError):
            await api.score(Request(scope, receive), explain=False, timeout_s=None)

    with caplog.at_level("WARNING", logger="deepfakestream.serve"):
        asyncio.run(main())
    assert api.outcomes_seen() == {"cancelled": 1} and api.requests.outcomes == ["cancelled"]
    assert api.admission.stats()["admitted"] == 0 and not api.decoder.decode.sent  # never reached the graph
    assert not caplog.records


# ---- /v1/health and /v1/model ---------------------------------------------------------------------------


class _Replicas:
    """A stage's replicas' ready() answers: all of them by broadcast, or one per call, in turn, as a handle
    routes ``ready.remote()``."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), 0

    async def __call__(self):
        return list(self.answers)

    async def one(self):
        self.calls += 1
        return self.answers[(self.calls - 1) % len(self.answers)]


_replicas = _Replicas


async def _forever(*args):
    await asyncio.sleep(3600)


def _model_api(card=None, classifiers=None, detectors=None):
    classifiers, detectors = classifiers or _replicas((True, "v1")), detectors or _replicas((True, ""))
    api = _ingress(lambda: asyncio.sleep(0))
    api.classifier = _Stage(classifiers, card=_Method(card), ready=_Method(getattr(classifiers, "one", classifiers)))
    api.detector = _Stage(detectors, ready=_Method(getattr(detectors, "one", detectors)))
    return api


async def _answer(call):
    """The route's answer, or its ProblemError: within 3 s, or the test fails (no backstop to wait for)."""
    try:
        return await asyncio.wait_for(call(), 3)
    except ProblemError as exc:
        return exc


def test_health_asks_every_replica_so_one_broken_replica_fails_every_check():
    api = _model_api(detectors=_replicas((True, ""), (False, "device cuda requested but no CUDA GPU"), (True, "")))
    for _ in range(5):
        problem = asyncio.run(_answer(api.health))
        assert isinstance(problem, ProblemError) and problem.status == 503
        assert problem.detail == "device cuda requested but no CUDA GPU"
    api = _model_api(classifiers=_replicas((True, "v1"), (False, "no trained detector installed")))
    assert asyncio.run(_answer(api.health)).detail == "no trained detector installed"
    health = asyncio.run(_answer(_model_api(classifiers=_replicas((True, "v1"), (True, "v1"))).health))
    assert health.status == "ready" and health.model_version == "v1"


@pytest.mark.parametrize("replicas", [_forever, _replicas()], ids=["stuck", "none running"])
def test_health_answers_503_in_time_when_replicas_do_not_answer(replicas):
    api = _model_api(detectors=replicas)
    api.ready_timeout_s = 0.2
    problem = asyncio.run(_answer(api.health))
    assert isinstance(problem, ProblemError) and problem.status == 503 and "not responding" in problem.detail


async def _dead(*args):
    from ray.exceptions import RayActorError

    raise RayActorError()


@pytest.mark.parametrize("card", [_forever, _dead], ids=["stuck", "dead"])
def test_model_answers_503_in_time_when_the_classifier_does_not_answer(card):
    api = _model_api(card)
    api.ready_timeout_s = 0.2
    problem = asyncio.run(_answer(api.model))
    assert isinstance(problem, ProblemError) and problem.status == 503 and problem.code == "unavailable"
    assert "not responding" in problem.detail


def test_model_without_a_model_says_why_from_the_replica_that_answered():
    async def no_model():
        return None, "no trained detector installed"

    # another replica is ready: its (True, version) must not become this 503's detail
    problem = asyncio.run(_answer(_model_api(no_model, classifiers=_replicas((True, "v1"))).model))
    assert isinstance(problem, ProblemError) and problem.status == 503
    assert problem.detail == "no trained detector installed"

    async def loaded():
        return {"version": "v1"}, ""

    response = asyncio.run(_answer(_model_api(loaded).model))
    assert response.status_code == 200 and response.body == b'{"version":"v1"}'
