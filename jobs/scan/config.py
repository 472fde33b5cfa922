"""The scan's options."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.media import MEDIA_EXTENSIONS

DEFAULT_OUTPUT = "./scan-output"


@dataclass
class ScanOptions:
    source: str
    output: str = DEFAULT_OUTPUT
    full: bool = False
    retry_errors: bool = False
    extensions: tuple[str, ...] = MEDIA_EXTENSIONS
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_objects: int | None = None
    # storage
    endpoint_url: str | None = None
    anon: bool = False
    profile: str | None = None
    # Ray / resources (None = sized from the cluster)
    ray_address: str | None = None
    num_cpus: int | None = None
    decode_actors: int | None = None
    detect_actors: int | None = None
    classify_actors: int | None = None
    gpus_per_actor: float | None = None
    torch_threads: int | None = None
    classify_batch: int = 4
    decode_batch: int = 1
    object_store_limit: int | None = None
    # fault tolerance and commits
    max_task_retries: int = 2
    max_restarts: int = -1
    max_failed_batches: int = 16
    lost_retries: int = 1
    commit_every: int = 256
    commit_seconds: float = 60.0
    # operations: alerting, one scan per output, bounded stop
    max_error_rate: float = 0.5
    lease_seconds: float = 120.0
    stop_timeout: float = 25.0
    # display
    progress: bool = True
    ray_progress: bool = False
    verbose: bool = False
