"""The online API's settings (``serve:`` in the settings file, ``DFS_SERVE__*``): a section of
``pipeline.config.Settings``, kept here with the server it configures. Imports only pydantic, so the
settings can be composed without loading the server."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DAY_S = 24 * 3600  # the cap on the server's waits: longer is a typo, and inf would overflow the timers
HOSTNAME = re.compile(r"(?!-)[\w-]{1,63}(?<!-)(\.(?!-)[\w-]{1,63}(?<!-))*\.?", re.ASCII)  # RFC 1123, and "_" as Docker names have


class ServeConfig(BaseModel):
    """The online API (``serve/``): HTTP, request limits, URI allow-list, replicas and batching.

    Media limits here are applied on top of ``decode.*``: the server uses the stricter of the two.
    """

    # a typo in a RayService's settings fails, it is not dropped; inf/nan are never a limit or a wait
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    host: str = Field("127.0.0.1", min_length=1, max_length=253,
                      description="address `deepfakestream serve` listens on: an IP address or a host name")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port of `deepfakestream serve`")
    metrics_port: int | None = Field(None, ge=1, le=65535, description="Prometheus /metrics port of the local Ray `deepfakestream serve` starts (the PodMonitor scrapes 8080); None = Ray picks one")
    # deepfakestream serve only: under `serve deploy`/KubeRay the config file's applications[] name and route them
    app_name: str = Field("deepfakestream", min_length=1, description="Serve application name (`deepfakestream serve`)")
    route_prefix: str = Field("/", description="URL prefix of the API (`deepfakestream serve`): Ray's rules, `/` or "
                              "`/path` without a trailing `/`, `{` or `}`")
    max_upload_bytes: int = Field(100 * 1024**2, gt=0, description="larger uploads/objects get 413")
    max_pixels: int = Field(3840 * 2160, gt=0, description="larger video frames/animations get 413; a photo up to 16x larger (a JPEG; 6x and at most 50 MP any other format) is scaled down to it")
    max_duration_s: float = Field(600.0, gt=0, description="longer videos get 413")
    max_frames: int = Field(36_000, gt=0, description="videos with more frames get 413")
    max_decoded_pixels: int = Field(
        32 * 75 * 3840 * 2160, gt=0, description="decoding work per object (decode.max_decoded_pixels) over which it gets "
        "413: 75 4K frames per sample for 32 samples, 19.9 gigapixels (pipeline/work.py)")
    allowed_uri_prefixes: list[str] = Field(
        default_factory=list,
        description="object-store prefixes `{\"uri\": ...}` may read, e.g. s3://bucket/uploads/; empty = none",
    )
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for allowed URIs")
    request_timeout_s: float = Field(60.0, gt=0, le=DAY_S, description="per-request deadline; past it the API answers 504")
    ingress_replicas: int = Field(1, ge=1)
    decode_max_ongoing_requests: int = Field(
        8, ge=1, description="decodes at once per decoder replica (its Ray max_ongoing_requests and its thread "
        "pool): decoded frames are the big memory")
    decode_replicas: int = Field(1, ge=1)
    detect_replicas: int = Field(2, ge=1, description="detection costs most and one replica does not fill 2 cores")
    classify_replicas: int = Field(1, ge=1)
    ingress_cpus: float = Field(0.1, ge=0)
    decode_cpus: float = Field(0.25, ge=0)
    detect_cpus: float = Field(0.5, ge=0)
    classify_cpus: float = Field(0.5, ge=0)
    gpus: float | None = Field(
        None, ge=0, description="GPUs per detect/classify replica; None = one GPU shared by all of them if the cluster has one"
    )
    torch_threads: int = Field(0, ge=0, description="torch threads per model replica; 0 = all cores of the node")
    detect_max_batch_size: int = Field(4, ge=1, description="requests per MTCNN batch (@serve.batch)")
    detect_batch_wait_s: float = Field(0.01, ge=0, le=60)
    classify_max_batch_size: int = Field(16, ge=1, description="requests whose crops go through the network together")
    classify_batch_wait_s: float = Field(0.01, ge=0, le=60)
    body_timeout_s: float = Field(
        30.0, gt=0, le=DAY_S, description="time to receive a whole request body; slower clients get 408 and free their place")
    spool_memory_bytes: int = Field(
        1024**2, gt=0, description="an upload is held in memory up to this size, then spooled to a temporary file")
    max_inflight: int = Field(
        8, ge=1, description="POST /v1/score requests running the model graph at once, per ingress replica")
    # 4: on 2 cores the graph finishes about one short clip every 4 s under load, so with 8 + 16 places the last
    # admitted waited past request_timeout_s (9 of 24 got 504, bench/serve_load.py); 8 + 4 all finish in time
    max_queued: int = Field(
        4, ge=0, description="POST /v1/score requests being received or waiting for the graph, per ingress replica; "
        "past max_inflight + max_queued a request gets 503 with Retry-After at once")
    retry_after_s: int = Field(5, ge=1, le=DAY_S, description="Retry-After (s) sent with that 503")
    drain_timeout_s: float = Field(
        10.0, ge=0, le=DAY_S, description="on Ctrl-C/SIGTERM `deepfakestream serve` answers new requests 503 and waits "
        "up to this long for the admitted ones; those still running are then answered 503 too and stopping follows "
        "(a few seconds); keep it under the orchestrator's grace period")
    max_ongoing_requests: int = Field(
        64, ge=2, description="Ray's limit of concurrent requests per ingress replica (all routes); must exceed "
        "max_inflight + max_queued so /v1/health always has room")
    explain_max_faces: int = Field(32, ge=0, description="Grad-CAM heat maps per request (explain=true)")

    @field_validator("host")
    @classmethod
    def _check_host(cls, host: str) -> str:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not HOSTNAME.fullmatch(host):
                raise ValueError(f"serve.host must be an IP address or a host name, not {host!r}") from None
        return host

    @field_validator("route_prefix")
    @classmethod
    def _check_route_prefix(cls, prefix: str) -> str:
        # Ray's own rules (ray.serve._private.utils.validate_route_prefix), checked before Ray starts
        if not prefix.startswith("/") or (prefix != "/" and prefix.endswith("/")) or "{" in prefix or "}" in prefix:
            raise ValueError(f"serve.route_prefix must be '/' or start with '/' and end without one, with no '{{' or "
                             f"'}}' (Ray's rules), not {prefix!r}")
        return prefix

    @field_validator("allowed_uri_prefixes")
    @classmethod
    def _check_prefixes(cls, prefixes: list[str]) -> list[str]:
        from serve.guard import check_filesystem  # here, not at the top: guard imports the settings

        for prefix in prefixes:  # a bad entry fails the settings (exit 2, a deploy error), not every request
            check_filesystem(prefix)  # check_uri's rules (parse_allowed_prefix), and fsspec can read the scheme
        return prefixes

    @model_validator(mode="after")
    def _room_for_health(self) -> ServeConfig:
        if self.max_ongoing_requests <= self.max_inflight + self.max_queued:
            raise ValueError(f"serve.max_ongoing_requests ({self.max_ongoing_requests}) must exceed serve.max_inflight + "
                             f"serve.max_queued ({self.max_inflight + self.max_queued}), or health checks queue behind scoring")
        return self
