"""The ingress's scoring path without Ray (stand-in stage handles): the wait for a turn counts against the
request's deadline (504, and the turn is not lost), and Ray's BackPressureError becomes 503 overloaded."""

from __future__ import annotations

import asyncio

import pytest
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

    def remote(self, *args):
        response = _Response(self._make or (lambda: asyncio.sleep(0)))
        self.sent.append(response)
        return response


class _Stage:
    def __init__(self, **methods):
        self.__dict__.update(methods)


def _ingress(score, max_inflight: int = 1, timeout_s: float = 0.3):
    from pipeline.config import load_settings
    from serve.ingress import Api

    cls = Api.func_or_class.__mro__[1]  # the class under Serve's ASGI wrapper
    api = object.__new__(cls)
    api.config = load_settings(**{"serve.max_inflight": max_inflight, "serve.max_queued": 4,
                                  "serve.request_timeout_s": timeout_s, "serve.retry_after_s": 4}).serve
    api.admission = Admission(api.config.max_inflight, api.config.max_queued)
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


def test_a_freed_turn_serves_the_next_request():
    api = _ingress(lambda: asyncio.sleep(0.05, ANSWER), max_inflight=1, timeout_s=2)

    async def main():
        return await asyncio.gather(*(api._score(f"s3://b/{i}.jpg", None, False, None) for i in range(4)))  # noqa: SLF001

    assert asyncio.run(main()) == [ANSWER] * 4
    assert len(api.classifier.score.sent) == 4
