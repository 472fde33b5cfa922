"""Online scoring on Ray Serve: the graph's stages as deployments behind a hardened HTTP API.

Deployments (``serve/deployments.py``), composed with DeploymentHandles by the ingress (``serve/ingress.py``);
responses are chained, so frames go from the decoder to the detector through the object store and never
through the ingress::

    Api (FastAPI) → Decoder (DecodeStage, CPU) → Detector (DetectStage, @serve.batch) → Classifier (ScoreStage, @serve.batch)

Here: ``build_app(settings)`` builds the application, ``app_builder(args)`` is the ``serve deploy`` entry point
(``serve/config.yaml``) and ``run(settings)`` starts it locally (``deepfakestream serve``); what stops it from
starting is a ``ServeStartError`` with a code, one line for the command to print.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import signal
import socket
import threading
import time
from typing import Any

from ray import serve

from pipeline.config import Settings, load_settings
from pipeline.errors import DeepfakeStreamError, one_line
from pipeline.local_ray import advice, start_local_ray
from serve.config import ServeConfig
from serve.deployments import Classifier, Decoder, Detector
from serve.ingress import Api

log = logging.getLogger(__name__)

HEALTH_ROOM = 2  # places on each model replica kept for the ready() calls of /v1/health
DRAIN_POLL_S = 0.2  # how often stopping looks whether the requests in flight are answered
DRAIN_SLACK_S = 5.0  # past drain_timeout_s, how long stopping waits for Serve to answer the drain at all
CUT_OFF_WAIT_S = 2.0  # at the drain's end, how long the requests cut off have to send their 503 (within the slack)
# A replica Serve stops (an update of the app, the app deleted, Serve shut down) waits for its requests up to the
# longest one can run, plus this for its answer (the 408/504 problem, the stage calls cancelled) to go out
SHUTDOWN_MARGIN_S = 10.0
SHUTDOWN_POLL_S = 1.0  # how often a stopping replica looks whether its requests are done (Serve's default: 2 s)


class ServeStartError(DeepfakeStreamError):
    """``deepfakestream serve`` could not start: the address cannot be listened on, or the deploy failed."""

    code = "serve_start_failed"


class PortInUseError(ServeStartError):
    """Another process listens on serve.host:serve.port."""

    code = "port_in_use"


class RayStartError(ServeStartError):
    """The local Ray instance would not start."""

    code = "ray_start_failed"


def check_port(host: str, port: int) -> None:
    """Bind ``host:port`` as Serve's proxy will (same family, SO_REUSEADDR) and let it go: a taken port is one line
    before Ray starts, not the proxy's trace after. Another process may still take it in between. SO_REUSEADDR as
    the proxy sets it: the connections of a server stopped a moment ago wait in TIME_WAIT for a minute, and without
    it they made a restart on the same port a false ``port_in_use``; a process listening there is still refused."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(f"port {port} on {host} is in use; stop what listens there or choose "
                                     "another (--port, serve.port)") from None
            raise ServeStartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _cluster_has_gpu() -> bool:
    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) > 0
    import torch

    return torch.cuda.is_available()


def shutdown_options(cfg: ServeConfig) -> dict[str, float]:
    """Serve's graceful shutdown, the same for every deployment: a replica being stopped gets no new requests and
    waits for its own up to ``graceful_shutdown_timeout_s`` before Serve kills it. Serve's default (20 s) was under
    ``request_timeout_s`` (60 s): an update or an app deleted under load killed the ingress (a plain-text 500 from
    the proxy, or the connection dropped) or a stage replica under it (503 ``worker_lost``). Now the longest a
    request can run, its body (``body_timeout_s``) then the graph (``request_timeout_s``), plus a margin: the API's
    own answer, or its 408/504 problem, always comes first. Stage deployments too: an ingress request waits on them."""
    return {"graceful_shutdown_timeout_s": cfg.body_timeout_s + cfg.request_timeout_s + SHUTDOWN_MARGIN_S,
            "graceful_shutdown_wait_loop_s": SHUTDOWN_POLL_S}


def build_app(settings: Settings):
    """The Serve application for ``settings`` (replicas, CPUs/GPUs, batch sizes and how long a stopping replica
    waits for its requests, all from ``settings.serve``)."""
    cfg = settings.serve
    payload = settings.model_dump(mode="json")
    if cfg.gpus is not None:
        gpus = cfg.gpus
    else:  # one GPU shared by every model replica (Ray takes fractions to 4 decimals)
        gpus = math.floor(10_000 / (cfg.detect_replicas + cfg.classify_replicas)) / 10_000 if _cluster_has_gpu() else 0.0

    def actor(cpus: float, gpu: float = 0.0) -> dict[str, float]:
        return {"num_cpus": cpus, **({"num_gpus": gpu} if gpu else {})}

    def model_slots(batch: int) -> int:
        # room for every request the ingress replicas let run (in the worst case all on one replica), twice
        # the batch so @serve.batch fills, and HEALTH_ROOM so /v1/health's ready() never queues behind them
        return max(8, 2 * batch, cfg.ingress_replicas * cfg.max_inflight) + HEALTH_ROOM

    stopping = shutdown_options(cfg)
    # decoded frames are the big memory: the replica's decode pool has the same size (serve/deployments.py)
    decoder = Decoder.options(num_replicas=cfg.decode_replicas, ray_actor_options=actor(cfg.decode_cpus),
                              max_ongoing_requests=cfg.decode_max_ongoing_requests, **stopping).bind(payload)
    detector = Detector.options(num_replicas=cfg.detect_replicas, ray_actor_options=actor(cfg.detect_cpus, gpus),
                                max_ongoing_requests=model_slots(cfg.detect_max_batch_size), **stopping).bind(payload)
    classifier = Classifier.options(num_replicas=cfg.classify_replicas,
                                    ray_actor_options=actor(cfg.classify_cpus, gpus),
                                    max_ongoing_requests=model_slots(cfg.classify_max_batch_size), **stopping).bind(payload)
    # max_ongoing_requests > max_inflight + max_queued (ServeConfig checks it): scoring never fills the ingress
    return Api.options(num_replicas=cfg.ingress_replicas, ray_actor_options=actor(cfg.ingress_cpus),
                       max_ongoing_requests=cfg.max_ongoing_requests, **stopping).bind(payload, decoder, detector,
                                                                                       classifier)


def app_builder(args: dict[str, Any]):
    """``serve deploy`` / KubeRay entry point (``import_path: serve.app:app_builder``).

    ``args``: ``config`` (a settings file, optional) and ``settings`` (nested settings, e.g.
    ``{serve: {classify_max_batch_size: 16}}``), applied over the environment (``DFS_*``).
    """
    args = dict(args or {})
    unknown = set(args) - {"config", "settings"}
    if unknown:
        raise ValueError(f"unknown application args {sorted(unknown)}; expected 'config' and/or 'settings'")
    config, tree = args.get("config"), args.get("settings") or {}
    if not isinstance(tree, dict):  # else an AttributeError or TypeError from deep inside, naming no arg
        raise ValueError(f"the application's args.settings must be a mapping of settings (decode:, serve:, ...); "
                         f"got {type(tree).__name__}")
    if config is not None and not isinstance(config, (str, os.PathLike)):
        raise ValueError(f"the application's args.config must be the path of a settings file (YAML/JSON/TOML) on "
                         f"the nodes; got {type(config).__name__}")
    return build_app(load_settings(config, overrides_from="the application's args.settings", tree=tree))


def deploy(settings: Settings, *, blocking: bool = False):
    """Start Serve's HTTP proxy on ``serve.host:serve.port`` (if Serve is not running) and deploy the app."""
    serve.start(http_options={"host": settings.serve.host, "port": settings.serve.port})
    return serve.run(build_app(settings), name=settings.serve.app_name, route_prefix=settings.serve.route_prefix,
                     blocking=blocking)


def run(settings: Settings) -> None:
    """``deepfakestream serve``: a local Ray instance of its own, the app on host:port, until Ctrl-C or SIGTERM."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started_ray = not ray.is_initialized()
    if started_ray:
        check_port(settings.serve.host, settings.serve.port)
    elif settings.serve.metrics_port:
        log.warning("serve.metrics_port is ignored: Ray is already running and exports metrics on its own port")

    def _stop(signum, frame):  # SIGTERM (docker stop, systemd) shuts down like Ctrl-C
        raise KeyboardInterrupt

    ray_up = deployed = False
    try:
        if started_ray:
            start_ray(settings)
        signal.signal(signal.SIGTERM, _stop)  # after ray.init, which installs its own handler (an exit)
        ray_up = True
        try:
            deployed = True  # from here a stop drains: a signal while serve.run waits may find requests admitted
            deploy(settings)
        except Exception as exc:  # noqa: BLE001 - the proxy's bind, a replica that fails to build: one line
            deployed = False
            log.debug("deploying the app failed", exc_info=True)
            raise ServeStartError(f"could not deploy the app: {one_line(exc)}") from exc
        host = f"[{settings.serve.host}]" if ":" in settings.serve.host else settings.serve.host
        url = f"http://{host}:{settings.serve.port}{settings.serve.route_prefix.rstrip('/')}"
        print(f"DeepfakeStream API on {url}  (OpenAPI: {url}/openapi.json; Ctrl-C stops)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if ray_up:
            stop(settings, started_ray, drain_first=deployed)


def start_ray(settings: Settings) -> None:
    """A local Ray instance of its own; Ray that will not start is a ``RayStartError``. On the main thread: off it
    (tried, to keep our SIGTERM handler through Ray's first seconds), every stop took 10 s longer and left Ray's
    agents running for a minute. ``ray.init`` replaces the SIGTERM handler, so ``run`` puts its own back after."""
    import ray

    extra = {"_metrics_export_port": settings.serve.metrics_port} if settings.serve.metrics_port else {}
    try:
        # an instance of our own (never a `ray start` cluster's nor RAY_ADDRESS's), so that stopping takes down
        # nobody else's Serve applications; on 127.0.0.1 only (Serve's proxy binds serve.host itself)
        start_local_ray(log_to_driver=True,
                        runtime_env={"env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}}, **extra)
    except Exception as exc:  # noqa: BLE001 - whatever Ray raises: one line, the trace in the debug log
        log.debug("ray.init failed", exc_info=True)
        ray.shutdown()  # whatever it had started
        raise RayStartError(f"could not start Ray: {one_line(exc)}{advice(exc)}") from exc


def drain(settings: Settings) -> int:
    """Stop taking requests and let the admitted be answered while the proxy is still up: from now on every ingress
    replica answers ``POST /v1/score`` (and ``/v1/health``) 503 ``overloaded`` (Retry-After), and this waits up to
    ``serve.drain_timeout_s`` for the requests they had admitted. Those still running then are cut off (``Api.cut_off``:
    answered 503 the same way, their stage calls cancelled, so Serve need not wait for their replicas); returns how
    many. A second Ctrl-C or SIGTERM stops waiting. The Serve calls run on a thread joined with the bound plus
    ``DRAIN_SLACK_S``: with the controller gone (Ray's OOM killer) they had blocked for a minute."""
    cfg = settings.serve
    left = [0]
    worker = threading.Thread(target=_drain, args=(cfg, left), name="dfs-drain", daemon=True)
    worker.start()
    try:
        worker.join(cfg.drain_timeout_s + DRAIN_SLACK_S)
    except KeyboardInterrupt:
        log.warning("stopping now, without waiting for the requests in flight")
    if worker.is_alive():
        log.warning("the API did not drain within %g s: stopping", cfg.drain_timeout_s + DRAIN_SLACK_S)
    if left[0]:
        log.warning("%d request(s) still running were cut off: answered 503 (serve.drain_timeout_s: %g s)", left[0],
                    cfg.drain_timeout_s)
    return left[0]


def _drain(cfg, left: list[int]) -> None:
    until = time.monotonic() + cfg.drain_timeout_s
    try:
        api = serve.get_deployment_handle("Api", cfg.app_name)
        answers = api.broadcast("drain").results(timeout_s=max(cfg.drain_timeout_s, 1.0))
        while True:
            left[0] = sum(stats["admitted"] for stats in answers)
            if not left[0] or time.monotonic() >= until:
                break
            time.sleep(DRAIN_POLL_S)
            answers = api.broadcast("stats").results(timeout_s=max(until - time.monotonic(), 1.0))
        if left[0]:
            api.broadcast("cut_off", CUT_OFF_WAIT_S).results(timeout_s=CUT_OFF_WAIT_S + 1.0)
    except Exception as exc:  # noqa: BLE001 - a dead or stuck ingress: stop without it
        log.warning("could not drain the API, stopping: %s", one_line(exc))


def stop(settings: Settings, started_ray: bool, drain_first: bool = True) -> None:
    """Undo ``run``: first ``drain`` (when the app was deployed), then Serve and Ray when ``run`` started that Ray
    (nothing else runs on it); otherwise only this application, so the Serve apps of whoever started Ray in this
    process keep running."""
    import ray

    if drain_first:
        drain(settings)
    if started_ray:
        serve.shutdown()
        ray.shutdown()
        return
    try:
        serve.delete(settings.serve.app_name)
    except Exception as exc:  # noqa: BLE001 - never hide why run() is stopping
        log.warning("could not delete the Serve application %r: %s", settings.serve.app_name, exc)


__all__ = ["PortInUseError", "RayStartError", "ServeStartError", "app_builder", "build_app", "check_port", "deploy",
           "drain", "run", "shutdown_options", "start_ray", "stop"]
