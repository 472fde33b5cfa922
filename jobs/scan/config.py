"""The scan's settings: the ``scan:`` section of ``pipeline.config.Settings`` (file, ``DFS_SCAN__*``
environment, then the ``scan`` command's flags, like every other section). Imports only pydantic and the
media extensions, so the settings can be composed without loading the scan."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.media import MEDIA_EXTENSIONS
from pipeline.thumbs import MAX_PX

DEFAULT_OUTPUT = "./scan-output"
DAY_S = 24 * 3600  # the cap on the scan's waits: longer is a typo, and inf would overflow the timers


class ScanConfig(BaseModel):
    """What to scan, where to, and how the Ray job runs (None = sized from the cluster)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    source: str | None = Field(None, description="what to scan (the command's argument): s3://bucket/prefix, a folder, a file")
    output: str = Field(DEFAULT_OUTPUT, description="where the Parquet tables go (fsspec URI or folder)")
    full: bool = Field(False, description="rescan everything, even objects already scanned")
    retry_errors: bool = Field(False, description="also rescan objects whose last row is ERROR")
    extensions: tuple[str, ...] = MEDIA_EXTENSIONS
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_objects: int | None = Field(None, ge=1)
    # an empty folder where a volume should be mounted, a half-done sync: a listing that lost most of the source
    # must not end their current verdicts
    max_deleted_share: float = Field(0.5, ge=0, le=1, description="the largest share of the source's current objects "
                                     "one scan marks DELETED; past it none are marked (held) and it warns")
    # storage
    endpoint_url: str | None = None
    anon: bool = False
    profile: str | None = None
    # Ray / resources
    ray_address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    num_gpus: int | None = Field(None, ge=0, description="GPUs of the local Ray instance (default: detected)")
    plan: Literal["auto", "fused", "split"] = Field(
        "auto", description="fused: one actor pool runs the whole graph per object (CPU nodes); split: CPU decode "
                            "actors → model actors (GPU nodes); auto: split when the cluster has a GPU")
    fused_actors: int | None = Field(None, ge=1, description="actors of the fused plan (default: one per CPU)")
    # off by default: crops cut from shrunk frames change scores on sources over the working size (measured:
    # 1 of 4 FF++ 720p labels flipped at 4 frames), so on, the split plan no longer matches `score` and fused
    shrink_frames: bool = Field(False, description="split plan: decode sends frames at the detector's working size "
                                                   "(crops are cut from them); off: full frames travel")
    decode_actors: int | None = Field(None, ge=1)
    detect_actors: int | None = Field(None, ge=1)
    classify_actors: int | None = Field(None, ge=1)
    gpus_per_actor: float | None = Field(None, ge=0)
    torch_threads: int | None = Field(None, ge=1)
    classify_batch: int = Field(4, ge=1, description="split plan only: objects per classifier call")
    decode_batch: int = Field(1, ge=1)
    tasks_per_actor: int = Field(2, ge=1, description="batches queued on each actor in the first pass: 2 hides the "
                                 "dispatch gap between batches; the passes that rescan lost objects always use 1, "
                                 "so a crashing object's batch is alone on its worker there")
    object_store_limit: int | None = Field(None, ge=1)
    # Ray Data waits forever by default for a pool whose actors the cluster has no room for (held by Serve, say)
    actor_start_timeout: int = Field(600, ge=1, le=DAY_S, description="seconds an actor pool may take to start (its "
                                     "actors placed, their models loaded) before the scan stops with cluster_busy")
    # fault tolerance and commits
    max_task_retries: int = Field(2, ge=0)
    max_restarts: int = -1
    max_failed_batches: int = Field(16, ge=0)
    lost_retries: int = Field(1, ge=0)
    commit_every: int = Field(256, ge=1)
    commit_seconds: float = Field(60.0, ge=0.1, le=DAY_S)
    # operations: alerting, one scan per output, bounded stop
    max_error_rate: float = Field(0.5, ge=0, le=1)
    lease_seconds: float = Field(120.0, ge=1, le=DAY_S)
    stop_timeout: float = Field(25.0, ge=1, le=DAY_S)
    # evidence for the report: JPEGs of each object's top-scoring faces in faces.thumb_jpeg
    thumbnails: int = Field(3, ge=0, le=32, description="face thumbnails kept per object (0 = off)")
    thumbnail_px: int = Field(MAX_PX, ge=16, le=256, description="long side of a face thumbnail, pixels")
    # display
    progress: bool = True
    ray_progress: bool = False
    verbose: bool = False

    @field_validator("source", "output")
    @classmethod
    def _not_blank(cls, value: str | None, info) -> str | None:
        if value is not None and not value.strip():  # "" would mean the current directory
            raise ValueError(f"scan.{info.field_name} must name a folder or a URI, not be blank")
        if value is not None and not value.isascii():
            try:  # a local name in another encoding (its bytes kept as surrogates) cannot be a row's or record's text
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"scan.{info.field_name} is not valid UTF-8: rename the folder") from None
        return value

    def storage_options(self, uri: str) -> dict:
        """fsspec options for ``uri`` (the source or the output) from these settings' endpoint, anon and profile."""
        from jobs.scan.listing import storage_options_for  # fsspec: not needed to compose the settings

        return storage_options_for(uri, self.endpoint_url, self.anon, self.profile)
