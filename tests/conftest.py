"""Shared fixtures: sample media, ../shared data (skipped when absent), a detector checkpoint, one Ray instance."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # the tests' Rays only; tests of the token remove it
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DFS_SHARED_DATA", ROOT.parent / "shared" / "data"))
SAMPLES = ROOT / "pipeline" / "samples"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not present ({SHARED_DATA}); this test needs the shared media")
    return SHARED_DATA


@pytest.fixture(scope="session")
def faces_dir(shared_data: Path) -> Path:
    return shared_data / "faces"


@pytest.fixture(scope="session")
def ffpp_dir(shared_data: Path) -> Path:
    path = shared_data / "ffpp-c23"
    if not path.is_dir():
        pytest.skip("ffpp-c23 not present in ../shared/data")
    return path


@pytest.fixture(scope="session")
def detector_checkpoint(tmp_path_factory) -> Path:
    """The shipped default detector when installed, else an ImageNet-initialised one made for the tests.

    The fallback is a real network with real (ImageNet) encoder weights and an untrained head: its
    scores are meaningless as verdicts but identical wherever the same graph runs, which is what the
    composition tests (CLI, scan, serve agree) check.
    """
    from pipeline.config import DEFAULT_CHECKPOINT

    if DEFAULT_CHECKPOINT.exists():
        return DEFAULT_CHECKPOINT
    from pipeline.checkpoint import imagenet_init_checkpoint

    path = tmp_path_factory.mktemp("checkpoint") / "test-detector.safetensors"
    return imagenet_init_checkpoint(path, "test-imagenet-init", "composition tests only")


@pytest.fixture(scope="session")
def detector_env(detector_checkpoint: Path):
    """Point every in-process and child-process consumer (Ray workers inherit env) at the checkpoint."""
    old = os.environ.get("DFS_CLASSIFY__CHECKPOINT")
    os.environ["DFS_CLASSIFY__CHECKPOINT"] = str(detector_checkpoint)
    yield detector_checkpoint
    if old is None:
        os.environ.pop("DFS_CLASSIFY__CHECKPOINT", None)
    else:
        os.environ["DFS_CLASSIFY__CHECKPOINT"] = old


@pytest.fixture(scope="session")
def ray_session(detector_env):
    """One local Ray instance for the whole test session (starting Ray costs 5–7 s)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"DFS_CLASSIFY__CHECKPOINT": str(detector_env), "HF_HUB_OFFLINE": "1"}})
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    except Exception:  # noqa: BLE001
        pass
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real local S3 server (moto's server mode on 127.0.0.1, free port) for the whole session.

    Yields a dict with ``endpoint_url`` and ``storage_options`` (for s3fs/fsspec); credentials are
    set in the environment so child processes (Ray workers) can reach it too.
    """
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=endpoint)
    yield {"endpoint_url": endpoint,
           "storage_options": {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint}}}
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture()
def s3_bucket(s3_server):
    """A fresh, empty bucket on the local S3 server; returns its name."""
    import uuid

    import boto3

    name = f"dfs-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server["endpoint_url"]).create_bucket(Bucket=name)
    return name
