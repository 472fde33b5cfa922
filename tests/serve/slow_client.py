"""A client that trickles a multipart upload over a raw socket (httpx always sends a whole body first)."""

from __future__ import annotations

import socket
import time

BOUNDARY = "slow-client"


def start_slow_upload(port: int, declared: int = 1_000_000, sent: int = 1000, path: str = "/v1/score") -> socket.socket:
    """Send the headers (``Content-Length: declared``) and the first ``sent`` bytes of the file, then stop."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {declared}\r\n\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.mp4\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    sock.sendall(head + b"\0" * sent)
    return sock


def read_response(sock: socket.socket, timeout_s: float) -> tuple[int, dict[str, str], bytes, float]:
    """(status, headers, body so far, seconds waited) of the answer to a request still being sent."""
    start = time.monotonic()
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    if not data:
        raise ConnectionError("the server closed the connection without an answer")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    headers = {k.lower(): v for k, v in headers.items()}
    length = int(headers.get("content-length", len(body)))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body, time.monotonic() - start
