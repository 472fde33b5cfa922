"""A slow object store on 127.0.0.1 (a thread of this process): HEAD answers at once, GET trickles the body
(``bytes_per_s``, for at most ``max_s``). Plain HTTP and S3 path-style alike (any path is the one object), so
fsspec's HTTP file system and s3fs both read it. ``reads`` records each GET: when it started and when its sending
ended, and whether the reader hung up first."""

from __future__ import annotations

import email.utils
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Read:
    started: float
    ended: float | None = None
    hung_up: bool = False


@dataclass
class SlowStore:
    url: str
    reads: list[Read] = field(default_factory=list)

    @property
    def storage_options(self) -> dict:
        """s3fs's options for reading ``s3://ANY-BUCKET/ANY-KEY`` from this store."""
        return {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": self.url}}

    def reading(self) -> int:
        return sum(read.ended is None for read in self.reads)

    def wait_ended(self, count: int, timeout_s: float) -> list[Read]:
        """The first ``count`` reads once they have all ended; AssertionError past ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while len(self.reads) < count or any(read.ended is None for read in self.reads[:count]):
            assert time.monotonic() < deadline, f"reads still being sent after {timeout_s} s: {self.reads}"
            time.sleep(0.05)
        return self.reads[:count]


@contextmanager
def slow_store(data: bytes, bytes_per_s: int = 200, max_s: float = 30.0) -> Iterator[SlowStore]:
    store = SlowStore("")
    step = 0.1

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _head(self, status: int, length: int, extra: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in {"Content-Length": str(length), "Content-Type": "image/jpeg", "ETag": '"slow"',
                               "Last-Modified": email.utils.formatdate(usegmt=True), "Accept-Ranges": "bytes",
                               **extra}.items():
                self.send_header(key, value)
            self.end_headers()

        def do_HEAD(self) -> None:
            self._head(200, len(data), {})

        def do_GET(self) -> None:
            start, end = 0, len(data) - 1
            ranged = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if ranged:
                start, end = int(ranged[1]), min(int(ranged[2] or end), end)
            body = data[start:end + 1]
            self._head(206 if ranged else 200, len(body),
                       {"Content-Range": f"bytes {start}-{end}/{len(data)}"} if ranged else {})
            read = Read(time.monotonic())
            store.reads.append(read)
            chunk = max(1, int(bytes_per_s * step))
            try:
                for i in range(0, len(body), chunk):
                    if time.monotonic() - read.started > max_s:
                        break  # bounded: the reader gets a short body
                    self.wfile.write(body[i:i + chunk])
                    self.wfile.flush()
                    time.sleep(step)
            except OSError:
                read.hung_up = True
            finally:
                read.ended = time.monotonic()
                self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield store
    finally:
        server.shutdown()
        server.server_close()
