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

