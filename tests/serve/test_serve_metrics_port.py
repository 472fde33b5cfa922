"""`deepfakestream serve --metrics-port`: the local Ray it starts exports Prometheus metrics on that port."""

import http.client
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from helpers import stop_group

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback only
        return r.status, r.read().decode(errors="replace")


def test_metrics_port_flag_exports_prometheus_metrics(detector_env):
    api, metrics = _free_port(), _free_port()
    env = {**os.environ}
    cmd = [sys.executable, "-m", "jobs.cli", "serve", "--port", str(api), "--metrics-port", str(metrics)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, body = time.monotonic() + 240, ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, body = _get(f"http://127.0.0.1:{metrics}/metrics")
                if status == 200 and "ray_" in body:
                    break
            except (OSError, http.client.HTTPException):  # not up yet, or not yet the exporter answering
                time.sleep(2)
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert "ray_" in body, "no Ray metrics on the requested port"
    finally:
        stop_group(proc, 60)
