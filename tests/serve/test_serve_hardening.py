"""The API against hostile and careless clients (issue 13): trickled bodies (408, places freed, health still
answers), a full server (quick 503 + Retry-After, the admitted all answered), big uploads (ingress memory
close to their size and given back), and a schema-driven fuzz of the OpenAPI with no 5xx. And over its life (the
second review): an object store trickling its bytes (the reads stop at their deadline, uploads still scored), a
decoder killed under a request (a retryable 503), replica log lines with the request id, and draining on shutdown.

One app for the module, with small limits so the edges are cheap to reach: 2 requests run the graph, 2 more
may wait, bodies have 5 s, the decoder has 2 threads, and `s3://slow/` is read from a store that sends 200 B/s.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from helpers import PeakMemory, find_processes, memory_kib
from slow_client import read_response, start_slow_upload
from slow_store import slow_store

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
def store(samples_dir):
    """``s3://slow/…``: any key is astronaut.jpg, sent at 200 B/s (5 minutes; the store gives up after 40 s)."""
    with slow_store((samples_dir / "astronaut.jpg").read_bytes(), bytes_per_s=200, max_s=40) as slow:
        yield slow


@pytest.fixture(scope="module")
def settings(detector_env, store):
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
        "serve.decode_max_ongoing_requests": 2,
        "serve.allowed_uri_prefixes": ["s3://slow/"],
        "serve.storage_options": store.storage_options,
        "serve.drain_timeout_s": 30,
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


# ---- over the server's life (the second review) ------------------------------------------------------------

SLOW_URI = {"uri": "s3://slow/in/astronaut.jpg"}


def _jpeg(samples_dir) -> dict:
    return {"file": ("a.jpg", (samples_dir / "astronaut.jpg").read_bytes())}


def test_a_slow_object_store_does_not_stall_the_server(api, store, samples_dir):
    """`{"uri"}` reads of an object the store trickled at 200 B/s went on long past their requests' 504, holding
    the decoder's threads (2 here), so the uploads after them timed out too, while /v1/health said 200. A read ends
    at its request's deadline and hangs up on the store; the next upload is scored."""
    first = len(store.reads)

    async def reads() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(api.base_url), timeout=30) as client:
            return await asyncio.gather(*(client.post("/v1/score", params={"timeout_s": 1}, json=SLOW_URI)
                                          for _ in range(2)))

    for response in asyncio.run(reads()):
        _assert_problem(response.status_code, response.headers["content-type"], response.json(), 504, "timeout")
    ended = store.wait_ended(first + 2, timeout_s=10)[first:]  # not the store's own 40 s
    assert all(read.hung_up and read.ended - read.started < 5 for read in ended), ended
    start = time.monotonic()
    scored = api.post("/v1/score", params={"timeout_s": 20}, files=_jpeg(samples_dir))
    assert scored.status_code == 200 and time.monotonic() - start < 15, scored.text


def test_replica_log_lines_carry_the_request_id(api, samples_dir):
    """Our loggers had no handler in a replica: INFO was dropped and warnings went bare to stderr. They log through
    Serve's replica logging: a corrupt upload's warning from the decoder (in its pool thread) is in the Decoder's
    replica log, with its level and the request id the client got as x-request-id."""
    import ray

    data = (samples_dir / "astronaut.jpg").read_bytes()[:3] + bytes(2000)  # a JPEG signature, then nothing: 422
    response = api.post("/v1/score", files={"file": ("corrupt.jpg", data)})
    assert response.status_code == 422, response.text
    request_id = response.headers["x-request-id"]
    logs = ray._private.worker._global_node.get_logs_dir_path()  # noqa: SLF001 - this test Ray's own session
    folder = os.path.join(logs, "serve")
    deadline = time.monotonic() + 10
    while True:
        lines = [line for name in os.listdir(folder) if name.startswith(f"replica_{APP}_Decoder_")
                 for line in open(os.path.join(folder, name), errors="replace") if request_id in line]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert any(line.startswith("WARNING") and "decode failed for corrupt.jpg" in line for line in lines), lines


def test_a_replica_killed_under_a_request_is_a_retryable_503(api, store, samples_dir):
    """kill -9 of the Decoder while it held a request gave a bare 500 internal_error, no error_code: it is 503
    worker_lost with Retry-After (Serve starts a new replica), and uploads are scored again once it is up."""
    (pid,) = [p for p in find_processes(f"ServeReplica:{APP}:Decoder") if memory_kib(p)]
    reads = len(store.reads)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(api.post, "/v1/score", params={"timeout_s": 30}, json=SLOW_URI)
        _wait_for(lambda: len(store.reads) > reads)  # the decoder is reading it
        os.kill(pid, signal.SIGKILL)  # the replica this module's app started
        response = pending.result(timeout=40)
    body = response.json()
    _assert_problem(response.status_code, response.headers["content-type"], body, 503, "worker_lost")
    assert body["error_code"] == "worker_lost" and response.headers["retry-after"] == str(RETRY_AFTER_S)
    deadline = time.monotonic() + 60
    while (scored := api.post("/v1/score", files=_jpeg(samples_dir))).status_code != 200:
        assert time.monotonic() < deadline, scored.text
        time.sleep(1)


def test_draining_answers_the_admitted_and_refuses_the_new(api, samples_dir, settings):
    """SIGTERM closed the connections of the requests in flight, and the graph scored them on for nobody. Stopping
    drains first (serve.app.drain, which stop() runs before Serve goes down): the admitted are answered, a new request
    gets 503 overloaded with Retry-After at once, and the drain returns when none is left. The replica takes nothing
    after it: the next test deploys the app again."""
    from serve.app import drain

    video = {"file": ("v.mp4", (samples_dir / "pair_pan.mp4").read_bytes())}
    answered: list[float] = []

    def post_video() -> httpx.Response:
        response = api.post("/v1/score", files=video)
        answered.append(time.monotonic())
        return response

    with ThreadPoolExecutor(3) as pool:
        inflight = [pool.submit(post_video) for _ in range(INFLIGHT)]
        _wait_for(lambda: _stats()["admitted"] == INFLIGHT)
        drained = pool.submit(lambda: (drain(settings), time.monotonic()))
        _wait_for(lambda: _stats()["draining"] == 1)
        health = api.get("/v1/health")  # a load balancer stops sending here (it had said ready throughout the drain)
        _assert_problem(health.status_code, health.headers["content-type"], health.json(), 503, "overloaded")
        start = time.monotonic()
        refused = api.post("/v1/score", files=_jpeg(samples_dir))
        assert time.monotonic() - start < 2
        _assert_problem(refused.status_code, refused.headers["content-type"], refused.json(), 503, "overloaded")
        assert refused.json()["detail"] == "the server is shutting down; retry later"
        assert refused.headers["retry-after"] == str(RETRY_AFTER_S)
        assert [r.result(timeout=60).status_code for r in inflight] == [200] * INFLIGHT
        left, returned = drained.result(timeout=60)
    assert left == 0 and returned >= max(answered) - 1.0  # it waited for them
    assert api.get("/v1/health").json()["detail"] == "the server is shutting down; retry later"  # the app still answers


def test_a_request_running_past_the_drain_is_answered_503_and_the_stop_is_quick(api, store, settings):
    """The review's stop took drain_timeout_s + about 35 s (56.7 s): a request still running when the drain ended was
    not cancelled, so Serve waited for its replicas (the ingress's, then the decoder's, about 20 s each, then killed
    them) and the client got no answer (its connection closed as the proxy went down). At the drain's end it is cut
    off (Api.cut_off): answered 503 overloaded, shutting down, with Retry-After; its read is cancelled; and Serve goes
    down in seconds. As `deepfakestream serve` stops (serve.app.stop), less Ray's own shutdown. Last of the module."""
    from ray import serve

    from serve.app import deploy, drain
    from serve.problems import SHUTTING_DOWN

    serve.delete(APP)  # the test before drained it
    deploy(settings)
    quick = settings.model_copy(update={"serve": settings.serve.model_copy(update={"drain_timeout_s": 1.0})})
    reads = len(store.reads)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(api.post, "/v1/score", json=SLOW_URI)  # 5 minutes of bytes; a deadline of 60 s
        _wait_for(lambda: len(store.reads) > reads, 30)  # the decoder is reading it
        start = time.monotonic()
        assert drain(quick) == 1
        serve.shutdown()  # what stop() does next: the proxy goes too
        stopped = time.monotonic() - start
        print(f"drained and stopped in {stopped:.1f} s")
        response = pending.result(timeout=10)
    _assert_problem(response.status_code, response.headers["content-type"], response.json(), 503, "overloaded")
    assert response.json()["detail"] == SHUTTING_DOWN and response.headers["retry-after"] == str(RETRY_AFTER_S)
    (read,) = store.wait_ended(reads + 1, timeout_s=10)[reads:]
    assert read.hung_up and read.ended - read.started < 15, read  # the decoder's read was cancelled, not sent on
    assert stopped < 15, stopped  # was over 40 s: 1 s of drain, then Serve waited ~20 s for each replica
