"""The graph's stages as Serve deployments: each holds one stage built by ``pipeline.graph.stage_specs``.

One request is one batch row. ``@serve.batch`` joins the rows of concurrent requests into one stage batch
and splits the output back; its sizes are set from ``ServeConfig`` only. Failures travel as rows with an
``error`` and a stable ``error_code``; the ingress turns the code into a status.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import math
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from ray import serve
from ray.serve.exceptions import RayServeException

from pipeline.batch import Batch, concat_batches, object_column, split_batch
from pipeline.config import Settings
from pipeline.errors import DeepfakeStreamError
from pipeline.graph import StageSpec, stage_specs
from pipeline.heap import pin_mmap_threshold, release_heap
from pipeline.logsafe import log_safe
from pipeline.result import ScoreResult
from pipeline.work import CANCEL_GRACE_S, Deadline
from serve.guard import server_decode_config

log = logging.getLogger("deepfakestream.serve")

# A decode whose frames take this much hands freed heap back to the OS after it (pipeline/heap.py), as the
# ingress does after a big upload: from 32 frames of 854x480 (39 MB) up. 40 frames of 1080p left 16 MiB of the
# decoder's buffers in its thread's heap without (tests/serve/test_serve_deployments.py).
RELEASE_AFTER_BYTES = 32 * 1024**2


# Our code's loggers: the server's (deepfakestream.serve) and the pipeline stages' (pipeline.decode, …).
OUR_LOGGERS = ("deepfakestream", "pipeline")


def replica_settings(payload: dict[str, Any]) -> Settings:
    """What every replica does first: its settings, and its logging (``replica_logging``)."""
    replica_logging()
    # model_validate does not read the replica's environment: the driver's settings are used as they are.
    return Settings.model_validate(payload)


def replica_logging() -> None:
    """Our loggers log like Serve's in this replica: through the handlers Ray Serve set up for it (level, time,
    replica and the request id the client got as ``x-request-id``; the replica's log file) at its level. They had
    none of their own: INFO was dropped, warnings came out bare on stderr. Outside a replica nothing changes."""
    try:
        serve.get_replica_context()
    except RayServeException:
        return
    serve_logger = logging.getLogger("ray.serve")
    for name in OUR_LOGGERS:
        ours = logging.getLogger(name)
        ours.handlers[:] = serve_logger.handlers
        ours.setLevel(serve_logger.level)
        ours.propagate = False


def _threads(settings: Settings) -> int:
    return settings.serve.torch_threads or settings.torch_threads or len(os.sched_getaffinity(0))


def _spec(settings: Settings, name: str) -> StageSpec:
    """The stage ``name`` of the graph as the server runs it (its limits, its storage, its threads)."""
    graph = settings.model_copy(update={"decode": server_decode_config(settings)})
    return stage_specs(graph, name, storage_options=settings.serve.storage_options, torch_threads=_threads(settings))[-1]


@serve.deployment(name="Decoder")
class Decoder:
    """``DecodeStage`` for one object per request: reads an allowed URI or takes the uploaded bytes, sniffs
    the type and checks the limits from the header, decodes until done, out of budget, or the request's deadline."""

    def __init__(self, settings: dict[str, Any]):
        cfg = replica_settings(settings)
        pin_mmap_threshold()  # frame buffers get mappings of their own, returned to the OS when freed
        self.stage = _spec(cfg, "decode").build()
        # Decodes run in this replica's own pool, as many threads as Ray lets calls in. A cancelled call
        # (504, client gone) frees its Ray slot at once while its decode runs on, so Python's default pool
        # (up to 32 threads) would let more decodes run than the slots allow; this pool keeps the bound, and
        # a cancelled job that has not started yet is dropped.
        self.pool = ThreadPoolExecutor(cfg.serve.decode_max_ongoing_requests, thread_name_prefix="decode")

    def decode_row(self, uri: str, data: bytes | None = None, explain: bool = False,
                   deadline: Deadline | None = None) -> Batch:
        batch: Batch = {"uri": object_column([uri])}
        if data is not None:  # else the ingress has checked the allow-list: the stage reads the URI
            batch["data"] = object_column([data])
        out = self.stage(batch, deadline=deadline)
        out["explain"] = np.array([explain], bool)
        if out["frames"][0].nbytes >= RELEASE_AFTER_BYTES:
            release_heap()  # the decoder's own buffers are freed by now (the frames go once Ray has them)
        return out

    async def decode(self, uri: str, data: bytes | None = None, explain: bool = False,
                     timeout_s: float | None = None, expires_at: float | None = None) -> Batch:
        """``timeout_s``: what is left of the request's deadline. Past it, or once the call is cancelled (504, the
        client gone), the decode stops at its next frame: its thread would otherwise decode on, holding a place
        of the pool after Ray has freed the call's slot. ``expires_at``: the same deadline on the ingress's wall
        clock (``time.time()``), only to say why a cancelled decode stopped."""
        deadline = Deadline(math.inf if timeout_s is None else timeout_s)
        # in this call's context: Serve's request context goes with it, so the decode's log lines carry the request id
        job = functools.partial(contextvars.copy_context().run, self.decode_row, uri, data, explain, deadline)
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, job)
        except asyncio.CancelledError:
            # A call that waited in this deployment's queue came with timeout_s counted from when it was sent, so
            # its deadline here is late by that wait: cancelled at the request's deadline (the ingress's 504), it
            # said "the request was cancelled", as for a client gone. The wall clock only names the reason.
            if expires_at is not None and time.time() >= expires_at - CANCEL_GRACE_S:
                deadline.at = time.monotonic()
            deadline.stop()
            raise


class _Replica:
    """A batched stage replica. It stays up when its stage cannot load (a device it lacks): rows get a typed
    error and ``ready()`` says why, so /v1/health answers 503 instead of Serve crash-looping the replica.
    ``stats`` counts how many requests each ``@serve.batch`` call saw (benchmarks and tests read it)."""

    stage: Any = None
    error: str = ""
    error_code: str = ""

    def _load(self, settings: Settings, name: str, what: str) -> None:
        try:  # reading the card may fail too (no checkpoint installed)
            self.stage = _spec(settings, name).build()
        except DeepfakeStreamError as exc:
            self.error, self.error_code = str(exc), exc.code
            log.error("no %s loaded: %s", what, exc)

    def _size_batches(self, handler: Any, max_batch_size: int, wait_s: float) -> None:
        handler.set_max_batch_size(max_batch_size)
        handler.set_batch_wait_timeout_s(wait_s)
        self.batch_sizes: Counter[int] = Counter()

    def stats(self) -> dict[str, Any]:
        return {"batch_sizes": dict(self.batch_sizes)}

    def ready(self) -> tuple[bool, str]:
        return (False, self.error) if self.stage is None else (True, self._version())

    def _version(self) -> str:
        return ""


@serve.deployment(name="Detector")
class Detector(_Replica):
    """``DetectStage`` (MTCNN) with dynamic batching across concurrent requests."""

    def __init__(self, settings: dict[str, Any]):
        cfg = replica_settings(settings)
        self.crop_size = _spec(cfg, "detect").kwargs["crop_size"]  # the failed rows' empty crops keep this shape
        self._load(cfg, "detect", "face detector")
        self._size_batches(self.detect, cfg.serve.detect_max_batch_size, cfg.serve.detect_batch_wait_s)

    def _run(self, batch: Batch) -> Batch:
        if self.stage is None:
            from pipeline.detect import failed_detection  # torch stays out of the modules the ingress imports

            return failed_detection(batch, self.crop_size, self.error, self.error_code)
        return self.stage(batch)

    @serve.batch
    async def detect(self, batches: list[Batch]) -> list[Batch]:
        self.batch_sizes[len(batches)] += 1
        out = await asyncio.to_thread(self._run, concat_batches(batches))  # off the event loop, or batches stay at 1
        return split_batch(out, [len(b["uri"]) for b in batches])


@serve.deployment(name="Classifier")
class Classifier(_Replica):
    """``ScoreStage`` (classify + aggregate) with dynamic batching; answers ``{error_code, detail, result}``."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = replica_settings(settings)
        self._load(self.settings, "score", "model")
        cfg = self.settings.serve
        self._size_batches(self.score, cfg.classify_max_batch_size, cfg.classify_batch_wait_s)

    def _run(self, batch: Batch) -> tuple[Batch, dict[int, list[str | None]]]:
        heat_maps = {}
        if batch["explain"].any():
            from serve.explain import explain_crops

            for i in np.flatnonzero(batch["explain"]):
                heat_maps[int(i)] = explain_crops(self.stage.classifier, batch["crops"][i],
                                                  self.settings.serve.explain_max_faces)
        return self.stage(batch), heat_maps

    @serve.batch
    async def score(self, batches: list[Batch]) -> list[dict[str, Any]]:
        if self.stage is None:
            return [{"error_code": self.error_code, "detail": self.error, "result": None}] * len(batches)
        self.batch_sizes[len(batches)] += 1
        out, heat_maps = await asyncio.to_thread(self._run, concat_batches(batches))
        answers = []
        for index, rows in enumerate(split_batch(out, [len(b["uri"]) for b in batches])):
            row = {k: v[0] for k, v in rows.items()}
            result = ScoreResult.from_row(row)
            if result.error:
                log.warning("scoring %s failed (%s): %s", log_safe(result.uri), result.error_code, log_safe(result.error))
                answers.append({"error_code": result.error_code, "detail": result.error, "result": None})
                continue
            body = result.model_dump(mode="json")
            if index in heat_maps:
                body["explanations"] = explanations(result, heat_maps[index])
            answers.append({"error_code": None, "detail": None, "result": body})
        return answers

    def card(self) -> tuple[dict[str, Any] | None, str]:
        """(the model card, "") or (None, why no model is loaded): both from this replica. The card as trained, and
        beside it ``effective``: what this replica scores with, the card's values or ``classify.*``'s overrides (a
        threshold of 0.3 in force while the card says 0.56 was shown only in the responses)."""
        if self.stage is None:
            return None, self.error
        aggregate = self.stage.aggregate
        effective = {"threshold": aggregate.threshold, "aggregation": aggregate.strategy,
                     "min_track_frames": aggregate.min_track_frames, "tta_flip": self.stage.classifier.tta_flip}
        return {**self.stage.card.model_dump(mode="json"), "effective": effective}, ""

    def _version(self) -> str:
        return self.stage.card.version


def explanations(result: ScoreResult, pngs: list[str | None]) -> list[dict[str, Any]]:
    """One Grad-CAM entry per face, in the order of the object's crops (face number: frames, then boxes)."""
    from serve.ingress import FaceExplanation

    return [FaceExplanation(face=face.face, frame=face.frame, track=track, box=face.box, score=face.score,
                            heatmap_png=png).model_dump(mode="json") for (track, face), png in zip(result.faces(), pngs)]
