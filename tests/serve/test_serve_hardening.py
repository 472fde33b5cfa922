"""The API against hostile and careless clients (issue 13): trickled bodies (408, places freed, health still
answers), a full server (quick 503 + Retry-After, the admitted all answered), big uploads (ingress memory
close to their size and given back), and a schema-driven fuzz of the OpenAPI with no 5xx.

One app for the module, with small limits so the edges are cheap to reach: 2 requests run the graph, 2 more
may wait, bodies have 5 s.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
import time

import httpx
import numpy as np
import pytest

from helpers import PeakMemory, find_processes, memory_kib
from slow_client import read_response, start_slow_upload

pytestmark = pytest.mark.slow

APP = "dfs-hardening"
PROBLEM = "application/problem+json"
BODY_TIMEOUT_S = 5
RETRY_AFTER_S = 3
INFLIGHT, QUEUED = 2, 2
CAPACITY = INFLIGHT + QUEUED
MiB = 1024**2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def settings(detector_env):
    from pipeline.config import load_settings

    return load_settings(**{
        "classify.checkpoint": str(detector_env),
        "decode.num_frames": 4,
        "serve.host": "127.0.0.1",
        "serve.port": _free_port(),
        "serve.app_name": APP,
        "serve.detect_replicas": 1,  # the shared test Ray has 2 CPUs
        "serve.max_upload_bytes": 16 * MiB,
        "serve.spool_memory_bytes": 256 * 1024,
        "serve.body_timeout_s": BODY_TIMEOUT_S,
        "serve.max_inflight": INFLIGHT,
        "serve.max_queued": QUEUED,
        "serve.retry_after_s": RETRY_AFTER_S,
        "serve.request_timeout_s": 60,
    })


@pytest.fixture(scope="module")
def api(ray_session, settings):
    from ray import serve

    from serve.app import deploy

    serve.shutdown()  # HTTP options only apply to a fresh Serve instance
    deploy(settings)
    with httpx.Client(base_url=f"http://127.0.0.1:{settings.serve.port}", timeout=60) as client:
        yield client
    serve.shutdown()


def _stats() -> dict[str, int]:
    from ray import serve

    return serve.get_deployment_handle("Api", APP).stats.remote().result()


def _outcomes() -> dict[str, int]:
    from ray import serve

    return serve.get_deployment_handle("Api", APP).outcomes_seen.remote().result()


def _wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _assert_problem(status: int, content_type: str, body: dict, want: int, code: str) -> None:
    assert status == want, body
    assert content_type.startswith(PROBLEM)
    assert body["status"] == want and body["code"] == code and body["detail"] and body["title"]


def test_big_uploads_cost_the_ingress_about_their_size_and_it_is_given_back(api):
    """Finding 2: four concurrent 12 MiB uploads (4.3x each before: spooled now, read once, handed to the
    object store by reference). Measured as the ingress replica's own heap (RssAnon, sampled every 10 ms)."""
    (pid,) = [p for p in find_processes(f"ServeReplica:{APP}:Api") if memory_kib(p)]
    size, n = 12 * MiB, CAPACITY
    payload = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()  # not media: 415

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(api.base_url), timeout=120) as client:
            return await asyncio.gather(*(client.post("/v1/score", files={"file": ("x.bin", payload)}) for _ in range(n)))

    api.post("/v1/score", files={"file": ("x.bin", payload)})  # warm the paths once
    before = memory_kib(pid)["RssAnon"]
    for _ in range(20):  # earlier tests' requests may still be draining: start from a settled heap
        time.sleep(0.5)
        now = memory_kib(pid)["RssAnon"]
        if abs(now - before) < 1024:
            break
        before = now
    with PeakMemory(pid) as peak:
        responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [415] * n, [r.text for r in responses]
    grown_mib = (peak.peak["RssAnon"] - before) / 1024
    total_mib = n * size / MiB
    print(f"ingress RssAnon {before / 1024:.0f} MiB, peak +{grown_mib:.0f} MiB for {n} x {size / MiB:.0f} MiB")
    # was ~4.3x. Measured since: 1.9-2.1x for these 12 MiB uploads (per-request buffers weigh more on small
    # ones) and 1.15-1.44x for 99 MiB ones (bench/serve_load.py); 2.5x keeps margin on a slow, noisy host
    assert grown_mib < 2.5 * total_mib, grown_mib
    deadline = time.monotonic() + 15  # the trim runs after the responses; a loaded machine delays it
    while (after := memory_kib(pid)["RssAnon"]) - before >= total_mib * 512 and time.monotonic() < deadline:
        time.sleep(0.5)
    print(f"ingress RssAnon after: +{(after - before) / 1024:.0f} MiB")
    # most of it is given back (pipeline/heap.py): on a fresh replica nothing stays (+1 MiB). This test runs first
    # in the module on purpose: after the trickle and overload tests, glibc arenas of their threads kept up to
    # all 4 uploads' worth on a slow host (2026-12-03), which is the arenas' history, not this request's cost
    assert (after - before) / 1024 < total_mib / 2, (before, after)


def test_trickled_bodies_get_408_free_their_places_and_never_block_health(api, samples_dir, settings):
    """Findings 1 and 6: every place held by a client sending a byte now and then."""
    import json

    slow = [start_slow_upload(settings.serve.port) for _ in range(CAPACITY)]
    try:
        _wait_for(lambda: _stats()["admitted"] == CAPACITY)
        # health does not share the scoring places
        start = time.monotonic()
        health = api.get("/v1/health", timeout=10)
        assert health.status_code == 200 and time.monotonic() - start < 3
        # one more upload is refused at once, before its body is read
        start = time.monotonic()
        busy = api.post("/v1/score", files={"file": ("a.jpg", (samples_dir / "astronaut.jpg").read_bytes())})
        assert time.monotonic() - start < 2
        _assert_problem(busy.status_code, busy.headers["content-type"], busy.json(), 503, "overloaded")
        assert busy.headers["retry-after"] == str(RETRY_AFTER_S)
        # the trickling clients get 408 at the body deadline, not when they give up
        for sock in slow:
            status, headers, body, waited = read_response(sock, BODY_TIMEOUT_S + 10)
            _assert_problem(status, headers["content-type"], json.loads(body), 408, "body_timeout")
            assert waited < BODY_TIMEOUT_S + 5
    finally:
        for sock in slow:
            sock.close()
    _wait_for(lambda: _stats()["admitted"] == 0)
    ok = api.post("/v1/score", files={"file": ("a.jpg", (samples_dir / "astronaut.jpg").read_bytes())})
    assert ok.status_code == 200, ok.text


def test_a_client_that_resets_mid_upload_is_cancelled_not_an_error(api, settings):
    """The review's rst.py: an upload cut by a TCP reset after its first bytes came out of ``request.stream()`` as
    Ray's TaskCancelledError, counted ``internal_error`` with a traceback in the log, or as Starlette's
    ClientDisconnect, a 400 ``bad_request`` (which of the three depends on when the reset lands). It is ``cancelled``."""
    before = _outcomes()
    for _ in range(5):
        sock = start_slow_upload(settings.serve.port, declared=100_000, sent=4)
        _wait_for(lambda: _stats()["admitted"] == 1)  # the ingress is reading its body
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # with linger 0: a reset, not a goodbye
        _wait_for(lambda: _stats()["admitted"] == 0)
    after = _outcomes()
    grown = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    assert {k: n for k, n in grown.items() if n} == {"cancelled": 5}, grown


def test_three_times_capacity_gives_quick_503s_and_answers_every_admitted(api, samples_dir):
    """Finding 6: past max_inflight + max_queued a request is refused in well under a second, with
    Retry-After; every admitted request is scored within its deadline (no 504)."""
    video = (samples_dir / "pair_pan.mp4").read_bytes()
    expected = api.post("/v1/score", files={"file": ("v.mp4", video)}).json()

    async def one(client: httpx.AsyncClient) -> tuple[httpx.Response, float]:
        start = time.monotonic()
        response = await client.post("/v1/score", files={"file": ("v.mp4", video)})
        return response, time.monotonic() - start

    async def burst() -> list[tuple[httpx.Response, float]]:
        async with httpx.AsyncClient(base_url=str(api.base_url), timeout=120) as client:
            return await asyncio.gather(*(one(client) for _ in range(3 * CAPACITY)))

    results = asyncio.run(burst())
    statuses = collections.Counter(r.status_code for r, _ in results)
    assert set(statuses) <= {200, 503}, [r.text for r, _ in results if r.status_code not in (200, 503)]
    assert statuses[200] >= CAPACITY and statuses[503] >= 1, statuses
    for response, seconds in results:
        if response.status_code == 503:
            _assert_problem(503, response.headers["content-type"], response.json(), 503, "overloaded")
            assert response.headers["retry-after"] == str(RETRY_AFTER_S)
            assert seconds < 2.0, seconds
        else:
            assert response.json()["label"] == expected["label"]
            assert response.json()["score"] == pytest.approx(expected["score"], abs=1e-4)
    _wait_for(lambda: _stats()["admitted"] == 0)


def _no_short_deadline(case) -> None:
    """A caller's own tiny ``timeout_s`` is a documented 504, not a server fault: keep generated ones long."""
    value = (case.query or {}).get("timeout_s")
    try:
        short = 0 < float(value) < 30
    except (TypeError, ValueError):
        short = False
    if short:
        case.query["timeout_s"] = 30


def test_openapi_fuzz_gives_no_server_error(api):
    """Schemathesis cases (valid and invalid by the schema) for every operation: never a 5xx, and every
    answer documented with the declared content type."""
    import schemathesis
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hsettings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

    schema = schemathesis.openapi.from_dict(api.get("/openapi.json").json())
    base = str(api.base_url)
    seen: collections.Counter = collections.Counter()
    budget = {"/v1/score": 120, "/v1/health": 15, "/v1/model": 15}
    for result in schema.get_all_operations():
        operation = result.ok()
        strategy = st.one_of(operation.as_strategy(), operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))

        @hsettings(max_examples=budget[operation.path], deadline=None, database=None, derandomize=True,
                   suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def fuzz(case):
            _no_short_deadline(case)
            response = case.call(base_url=base, timeout=60)
            seen[(case.path, response.status_code)] += 1
            assert response.status_code < 500, (case.method, case.path, case.query, response.text[:300])
            case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                                     content_type_conformance])

        fuzz()
    print(dict(seen))
    assert {path for path, _ in seen} == set(budget)
    assert sum(n for (path, _), n in seen.items() if path == "/v1/score") >= 50
