"""bench/serve.py's closed-loop load: a 503 ``overloaded`` answer is counted as shed, not a failed bench."""

import asyncio
import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import load_bench


def _server(answers):
    """A real HTTP server on 127.0.0.1 answering POST /v1/score with the next status from ``answers``."""
    lock = threading.Lock()  # ThreadingHTTPServer: one thread per connection

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                status, code = next(answers)
            body = json.dumps({"code": code} if code else {"label": "REAL"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if status == 503:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_overloaded_answers_are_counted_as_shed():
    bench = load_bench("serve")
    server = _server(itertools.cycle([(200, None), (503, "overloaded")]))
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        step = asyncio.run(bench.throughput(url, "a.jpg", b"x" * 100, clients=2, seconds=0.5))
    finally:
        server.shutdown()
    assert step["requests"] > 0 and step["shed"] > 0
    assert abs(step["requests"] - step["shed"]) <= 2  # every other answer was a refusal


def test_other_errors_still_stop_the_bench():
    bench = load_bench("serve")
    server = _server(itertools.repeat((500, "internal")))
    try:
        with pytest.raises(RuntimeError, match="HTTP 500"):
            asyncio.run(bench.throughput(f"http://127.0.0.1:{server.server_port}", "a.jpg", b"x", clients=1, seconds=0.3))
    finally:
        server.shutdown()



def test_batch_stats_count_every_replica_and_diff_each_one(ray_session):
    """Two replicas of each batched deployment (serve.detect_replicas is 2 by default): a handle's stats() reaches
    one of them, so the bench must ask each replica and sum; before/after differences are taken per replica."""
    from ray import serve

    from serve.deployments import _Replica

    bench = load_bench("serve")
    app = "bench-stats-test"

    def counting(name):
        @serve.deployment(name=name, num_replicas=2, ray_actor_options={"num_cpus": 0})
        class Counting(_Replica):  # the real stats() of serve/deployments.py, over a trivial batched call
            def __init__(self):
                self._size_batches(self.run, 4, 0.05)

            @serve.batch
            async def run(self, items):
                self.batch_sizes[len(items)] += 1
                return items

            async def __call__(self, item):
                return await self.run(item)

        return Counting

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Front:
        def __init__(self, detector, classifier):
            self.detector, self.classifier = detector, classifier

        async def __call__(self, item):
            return await self.detector.remote(item), await self.classifier.remote(item)

    handle = serve.run(Front.bind(counting("Detector").bind(), counting("Classifier").bind()), name=app, route_prefix=None)
    try:
        def step(n):  # what the bench does around a throughput step: stats before, n requests, difference after
            before = bench.batch_stats(app)
            for response in [handle.remote(i) for i in range(n)]:
                response.result()
            calls = bench._diff(bench.batch_stats(app), before)
            return {d: sum(size * count for size, count in sizes.items()) for d, sizes in calls.items()}

        assert step(24) == {"Detector": 24, "Classifier": 24}  # every request counted once, whichever replica took it
        assert step(10) == {"Detector": 10, "Classifier": 10}
    finally:
        serve.delete(app)
