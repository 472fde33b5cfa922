"""Receiving uploads in the ingress (serve/upload.py, serve/admission.py) without Ray: memory close to the
upload's size (issue 13, finding 2), the body deadline (finding 1), the limits, admission and its 503."""

from __future__ import annotations

import asyncio
import json
import tracemalloc

import numpy as np
import pytest
from starlette.requests import Request

from serve.admission import Admission, Overloaded
from serve.problems import ProblemError, overloaded
from serve.upload import MULTIPART_SLACK, body_deadline, read_small_body, receive_upload

BOUNDARY = "dfs-test-boundary"
CHUNK = 64 * 1024
MiB = 1024**2


def _block(i: int) -> bytes:
    return bytes([(i * 7 + 1) % 256]) * CHUNK


def _request(chunks, headers: dict[str, str] | None = None, delay_s: float = 0.0) -> Request:
    """A Starlette request whose body arrives in ``chunks`` (an iterable, made lazily), ``delay_s`` apart."""
    chunks = iter(chunks)
    calls = {"receive": 0}

    async def receive():
        calls["receive"] += 1
        if delay_s:
            await asyncio.sleep(delay_s)
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}", **(headers or {})}
    scope = {"type": "http", "method": "POST", "path": "/v1/score", "query_string": b"",
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    request = Request(scope, receive)
    request.calls = calls  # type: ignore[attr-defined]
    return request


def _multipart(blocks: int, field: str = "file", name: str = "clip.mp4"):
    yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
           "Content-Type: application/octet-stream\r\n\r\n").encode()
    for i in range(blocks):
        yield _block(i)
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def test_upload_is_spooled_and_read_once_with_memory_close_to_its_size():
    blocks = 384  # 24 MiB
    size = blocks * CHUNK
    tracemalloc.start()
    try:
        upload = asyncio.run(receive_upload(_request(_multipart(blocks)), 64 * MiB, spool_memory_bytes=MiB))
        _, receive_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        data = upload.read_array()
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert upload.name == "clip.mp4" and upload.size == size
    assert upload.file.file._rolled  # on disk past spool_memory_bytes  # noqa: SLF001
    # receiving holds the spool's memory part and a few chunks, never the body (the old code held ~4x it)
    assert receive_peak < 4 * MiB, receive_peak
    # handing it on costs one array of its size, no second copy
    assert size <= read_peak < size + 2 * MiB, read_peak
    assert data.dtype == np.uint8 and len(data) == size
    assert all(data[i * CHUNK] == _block(i)[0] and data[(i + 1) * CHUNK - 1] == _block(i)[0] for i in range(blocks))
    asyncio.run(upload.close())
    assert upload.file.file.closed


def test_small_upload_stays_in_memory():
    upload = asyncio.run(receive_upload(_request(_multipart(2)), MiB, spool_memory_bytes=MiB))
    assert not upload.file.file._rolled and upload.size == 2 * CHUNK  # noqa: SLF001
    assert bytes(upload.read_array()) == _block(0) + _block(1)


def _problem(coro) -> ProblemError:
    with pytest.raises(ProblemError) as info:
        asyncio.run(coro)
    return info.value


def test_file_over_the_limit_is_413_while_it_streams():
    request = _request(_multipart(1000))  # 62.5 MiB offered
    assert _problem(receive_upload(request, MiB, MiB)).status == 413
    # refused once the body passed the limit + framing, not after reading it all
    assert request.calls["receive"] * CHUNK <= MiB + MULTIPART_SLACK + 2 * CHUNK


def test_declared_length_over_the_limit_is_413_before_reading():
    request = _request(_multipart(1), headers={"content-length": str(50 * MiB)})
    assert _problem(receive_upload(request, MiB, MiB)).status == 413
    assert request.calls["receive"] == 0


def test_file_between_limit_and_slack_is_413():
    assert _problem(receive_upload(_request(_multipart(17)), 16 * CHUNK, MiB)).status == 413


@pytest.mark.parametrize("chunks", [
    list(_multipart(1, field="other")),                      # no 'file' part
    [b"this is not multipart at all"],                      # no boundary in the body
])
def test_malformed_multipart_is_400(chunks):
    problem = _problem(receive_upload(_request(chunks), MiB, MiB))
    assert problem.status == 400 and problem.code == "bad_request"


def test_missing_boundary_is_400():
    request = _request(_multipart(1), headers={"content-type": "multipart/form-data"})
    assert _problem(receive_upload(request, MiB, MiB)).status == 400


def test_trickling_body_gets_408_at_the_deadline():
    async def receive_slowly():
        async with body_deadline(0.3):
            return await receive_upload(_request(_multipart(100), delay_s=0.05), 64 * MiB, MiB)

    loop = asyncio.new_event_loop()
    try:
        start = loop.time()
        with pytest.raises(ProblemError) as info:
            loop.run_until_complete(receive_slowly())
        elapsed = loop.time() - start
    finally:
        loop.close()
    assert info.value.status == 408 and info.value.code == "body_timeout"
    assert 0.3 <= elapsed < 2.0


@pytest.mark.parametrize("gone", ["http.disconnect", "ray"])
def test_a_client_that_disconnects_mid_body_cancels_the_request(gone):
    """Starlette says ClientDisconnect; under Serve ``request.stream()`` raises Ray's TaskCancelledError when the
    proxy drops the request. They were a 400 and a 500 with a traceback; no answer can reach the client: cancelled."""
    from ray.exceptions import TaskCancelledError

    async def receive():
        if gone == "ray":
            raise TaskCancelledError()
        return {"type": "http.disconnect"}

    request = Request({"type": "http", "method": "POST", "headers": []}, receive)

    async def read():
        async with body_deadline(5):
            return await read_small_body(request, 1024)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(read())


def test_json_body_over_its_limit_is_413():
    request = _request([b"{\"uri\": \"" + b"a" * 20_000 + b"\"}"], headers={"content-type": "application/json"})
    assert _problem(read_small_body(request, 16 * 1024)).status == 413


def test_admission_refuses_past_capacity_and_runs_max_inflight_at_once():
    admission = Admission(max_inflight=2, max_queued=3)
    running, peak = 0, 0

    async def one(hold: asyncio.Event):
        nonlocal running, peak
        async with admission.place():
            await hold.wait()
            async with admission.turn():
                running += 1
                peak = max(peak, running)
                await asyncio.sleep(0.01)
                running -= 1

    async def main():
        hold = asyncio.Event()
        tasks = [asyncio.create_task(one(hold)) for _ in range(5)]
        await asyncio.sleep(0)
        assert admission.stats() == {"admitted": 5, "capacity": 5, "draining": 0}
        with pytest.raises(Overloaded):
            async with admission.place():
                pass
        hold.set()
        await asyncio.gather(*tasks)
        async with admission.place():  # places come back
            assert admission.admitted == 1

    asyncio.run(main())
    assert peak == 2 and admission.admitted == 0


def test_a_draining_replica_admits_nothing_new_and_keeps_the_admitted():
    """Shutting down (serve.app.drain): the admitted keep their places and turns, anything new is refused at once."""
    from serve.admission import Draining

    admission = Admission(max_inflight=2, max_queued=3)

    async def main():
        async with admission.place():
            admission.drain()
            with pytest.raises(Draining):
                async with admission.place():
                    pass
            async with admission.turn():  # the admitted request still runs
                assert admission.stats() == {"admitted": 1, "capacity": 5, "draining": 1}
        assert admission.admitted == 0

    asyncio.run(main())


def test_overloaded_problem_has_retry_after():
    response = overloaded(7).response()
    assert response.status_code == 503 and response.headers["retry-after"] == "7"
    assert response.media_type == "application/problem+json"
    body = json.loads(response.body)
    assert body["code"] == "overloaded" and body["status"] == 503 and body["detail"]


def test_settings_keep_room_for_health():
    from pipeline.config import load_settings

    settings = load_settings()
    assert settings.serve.max_ongoing_requests > settings.serve.max_inflight + settings.serve.max_queued
    with pytest.raises(ValueError, match="health"):
        load_settings(**{"serve.max_inflight": 40, "serve.max_queued": 40})
    with pytest.raises(ValueError):
        load_settings(**{"serve.body_timeout_s": 0})
