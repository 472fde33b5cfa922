"""The scan's Ray (jobs/scan/ray_session.py): its local instance listens on loopback only and wants its token; a
cluster it joins gets this machine's Ray token, and one that refuses it is said to."""

from __future__ import annotations

import pytest

LOCAL_RAY = """
import sys, ray
from jobs.scan.config import ScanConfig
from jobs.scan.ray_session import ensure_ray
assert ensure_ray(ScanConfig(source="x", num_cpus=1))
ray.get(ray.remote(lambda: 0).remote())  # a worker up: workers listen too
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test is done
"""


@pytest.mark.slow
def test_the_local_ray_a_scan_starts_listens_on_loopback_only_and_wants_its_token():
    """The security review: the local Ray (GCS, raylet, workers, the dashboard agent's job API) listened on every
    interface. Now only on 127.0.0.1 (pipeline/local_ray.py), and Ray's token authentication stays on: a call
    without the token is refused. Watched for a while: the agents bind their servers after ray.init returns."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from pathlib import Path

    import grpc
    from helpers import is_loopback, listeners, process_title, process_tree
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="dfs-home-", dir="/tmp"))  # no token yet: the start makes one
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}  # Ray's defaults
    env["HOME"] = str(home)
    child = subprocess.Popen([sys.executable, "-c", LOCAL_RAY], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=env, start_new_session=True)
    try:
        gcs = child.stdout.readline().strip()
        assert gcs, "the local Ray did not start"
        token = home / ".ray" / "auth_token"
        assert oct(token.stat().st_mode & 0o777) == oct(0o600)  # Ray wrote it 0644: any local user read the token
        seen: set[tuple[str, str, int]] = set()
        until, quiet = time.monotonic() + 12, 0
        # until the dashboard agent (the last to bind) is seen and 4 s pass with no new server, at most 12 s
        while time.monotonic() < until and quiet < 4:
            found = listeners(process_tree(child.pid))
            if found is None:
                pytest.skip("this machine's listening sockets cannot be read from /proc")
            now = seen | {(process_title(pid)[:60], address, port) for pid, address, port in found}
            agent = any("DashboardAgent" in title for title, _, _ in now)
            quiet = quiet + 1 if agent and now == seen else 0
            seen = now
            time.sleep(1)
        assert any("DashboardAgent" in title for title, _, _ in seen), seen  # Ray's servers were seen, not nothing
        assert [s for s in seen if not is_loopback(s[1])] == []
        with grpc.insecure_channel(gcs) as channel, pytest.raises(grpc.RpcError) as refused:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(gcs_service_pb2.GetClusterIdRequest(),
                                                                               timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


JOIN_RAY = """
import json
from jobs.scan.config import ScanConfig
from jobs.scan.errors import ScanError
from jobs.scan.ray_session import ensure_ray
try:
    ensure_ray(ScanConfig(source="x"))
    import ray
    print(json.dumps({"cpus": ray.cluster_resources().get("CPU")}))
except ScanError as exc:
    print(json.dumps({"refused": str(exc)}))
"""


@pytest.mark.slow
def test_joining_a_cluster_with_token_authentication_sends_this_machines_token_or_says_why_it_cannot():
    """`ray start` turns token authentication on wherever it finds ~/.ray/auth_token (any local scan or serve makes
    one); Ray's ray.init sends that token only to a cluster it finds itself, so `--ray-address`/RAY_ADDRESS failed
    after ~20 s of InvalidAuthToken lines with "ConnectionError: Failed to connect". Now the token goes with it, and
    a token the cluster refuses is said to be an authentication failure."""
    import json
    import os
    import re
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    home = Path(tempfile.mkdtemp(prefix="dfs-ray-", dir="/tmp"))  # short: Ray's socket paths live under it
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("0123456789abcdef" * 2)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
                                                              "RAY_AUTH_TOKEN_PATH")}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--num-cpus", "1",
                             "--port", str(port), "--include-dashboard", "false", "--temp-dir", str(home / "rt")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        address = next(m.group(1) for line in head.stdout if (m := re.search(r"ray start --address='([^']+)'", line)))

        def join(**extra: str) -> dict:
            out = subprocess.run([sys.executable, "-c", JOIN_RAY], capture_output=True, text=True, timeout=120,
                                 env={**env, "RAY_ADDRESS": address, "RAY_gcs_server_port_wait_time_s": "2", **extra})
            return json.loads(out.stdout.strip().splitlines()[-1])

        assert join() == {"cpus": 1.0}  # with ~/.ray/auth_token and RAY_AUTH_MODE unset
        refused = join(RAY_AUTH_TOKEN="f" * 32)["refused"]
        assert "authentication failed (RAY_AUTH_MODE=token)" in refused and "RAY_AUTH_TOKEN" in refused, refused
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # `ray start`'s processes are all in its session: no global `ray stop`
        head.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


def test_a_temp_dir_too_long_for_ray_s_sockets_is_said_with_its_fix(monkeypatch):
    """A long TMPDIR failed with Ray's bare "AF_UNIX path length cannot exceed 107 bytes"."""
    import jobs.scan.ray_session as session
    from jobs.scan.config import ScanConfig
    from jobs.scan.errors import ScanError

    def too_long(**options):
        raise OSError("validate_socket_filename failed: AF_UNIX path length cannot exceed 107 bytes: /t/ray/s/plasma")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(session, "start_local_ray", too_long)
    monkeypatch.setattr("ray.is_initialized", lambda: False)  # the suite's own Ray may be up: this start is the test's
    with pytest.raises(ScanError, match="AF_UNIX path length .* set RAY_TMPDIR .* to a short writable folder"):
        session.ensure_ray(ScanConfig(source="x", num_cpus=1))
