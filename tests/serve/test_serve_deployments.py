"""Serve's stage deployments (serve/deployments.py) built in-process: a replica that cannot load its stage stays
up, says why on /v1/health's ready() and answers every row with a typed error the ingress turns into a status."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import torch

from pipeline.batch import object_column


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_replicas_asked_for_a_gpu_they_lack_stay_up_and_answer_503(samples_dir):
    from pipeline.config import load_settings
    from serve.deployments import Classifier, Decoder, Detector
    from serve.problems import status_for

    settings = load_settings(device="cuda").model_dump(mode="json")
    detector = Detector.func_or_class(settings)                   # no exception: the replica stays up
    ok, why = detector.ready()
    assert not ok and "no CUDA GPU" in why
    decoded = Decoder.func_or_class(settings).decode_row("astronaut.jpg", (samples_dir / "astronaut.jpg").read_bytes())
    failed = {"uri": object_column(["earlier.jpg"]), "frames": object_column([None]),
              "error": object_column(["file is empty (0 bytes)"]), "error_code": object_column(["media_empty"])}
    for batch, code in [(decoded, "device_unavailable"), (failed, "media_empty")]:
        out = detector._run(batch)
        assert list(out["error_code"]) == [code]                   # a row's own earlier error is kept
        assert out["crops"][0].shape == (0, 224, 224, 3) and "frames" not in out
    assert status_for("device_unavailable") == 503
    classifier = Classifier.func_or_class(settings)
    ok, why = classifier.ready()
    assert not ok and "no CUDA GPU" in why


def test_a_replica_without_its_stage_gives_the_healthy_stage_s_columns(samples_dir):
    """The failed detector's rows must concatenate with a healthy replica's in the classifier's batch."""
    from pipeline.config import load_settings
    from pipeline.detect import failed_detection
    from serve.deployments import Decoder, Detector

    settings = load_settings(device="cpu").model_dump(mode="json")
    decoded = Decoder.func_or_class(settings).decode_row("astronaut.jpg", (samples_dir / "astronaut.jpg").read_bytes())
    healthy = Detector.func_or_class(settings)._run(dict(decoded))
    failed = failed_detection(dict(decoded), healthy["crops"][0].shape[1], "broken", "device_unavailable")
    assert set(failed) == set(healthy)
    for key in healthy:
        if isinstance(healthy[key][0], np.ndarray):
            assert failed[key][0].dtype == healthy[key][0].dtype and failed[key][0].shape[1:] == healthy[key][0].shape[1:], key


def test_cancelled_decodes_never_run_past_the_decoder_s_slots():
    """Ray frees a Decoder slot as soon as the ingress cancels the call (504, client gone, ?timeout_s) while
    the decode runs on in its thread: the replica's own pool, sized to its slots, keeps the memory bound,
    and cancelled calls whose decode has not started never start it."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.config import Settings
    from serve.deployments import Decoder

    slots = 4
    decoder = Decoder.func_or_class(Settings(serve={"decode_max_ongoing_requests": slots}).model_dump(mode="json"))
    lock, release = threading.Lock(), threading.Event()
    seen = {"running": 0, "peak": 0, "started": 0}

    class SlowStage:  # decoding a big video: holds its frames until the test lets it finish
        def __call__(self, batch, deadline=None):
            with lock:
                seen["running"] += 1
                seen["started"] += 1
                seen["peak"] = max(seen["peak"], seen["running"])
            release.wait(30)
            with lock:
                seen["running"] -= 1
            return dict(batch)

    decoder.stage = SlowStage()

    async def main():
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32))  # what a 28+ core node gets
        ray_slots = asyncio.Semaphore(slots)  # Ray's max_ongoing_requests: a cancelled call frees its slot at once

        async def call():
            async with ray_slots:
                await asyncio.wait_for(decoder.decode("s3://b/in/x.mp4"), 0.05)

        try:
            for _ in range(4):
                results = await asyncio.gather(*(call() for _ in range(slots)), return_exceptions=True)
                assert all(isinstance(r, TimeoutError) for r in results), results
            await asyncio.sleep(0.1)
            return dict(seen)
        finally:
            release.set()

    during = asyncio.run(main())
    decoder.pool.shutdown(wait=True)
    assert during["peak"] == slots, during       # never more decodes than slots, though 16 calls came and went
    assert seen["started"] == slots, seen        # the later rounds' cancelled calls never started decoding
    assert seen["running"] == 0


def _slow_decoder():
    """A Decoder with the server's limits, and an upload within them that takes seconds to decode (3,000 frames of
    720p after one keyframe: 1.8 s on one core of the 2-core CI box)."""
    from media_fixtures import sparse_keyframes_mkv
    from pipeline.config import Settings
    from serve.deployments import Decoder

    decoder = Decoder.func_or_class(Settings(decode={"threads": 1}).model_dump(mode="json"))
    seen = {}
    decode_row = decoder.decode_row

    def timed(*args):  # when the decode itself (in the pool's thread) ends, whoever still waits for it
        start = time.monotonic()
        out = decode_row(*args)
        seen.update(seconds=time.monotonic() - start, code=out["error_code"][0], error=out["error"][0])
        return out

    decoder.decode_row = timed
    return decoder, sparse_keyframes_mkv(1280, 720, 3000), seen


def test_a_decode_stops_at_the_request_s_deadline():
    """The ingress gives the decoder what is left of the request's deadline: past it the decode stops (the review's
    slow uploads each held a decode thread long after their 504), answered as the 504 the ingress gives."""
    from serve.problems import status_for

    decoder, data, seen = _slow_decoder()
    row = asyncio.run(decoder.decode("slow.mkv", data, False, 0.3))
    assert row["error_code"][0] == "deadline_exceeded" and status_for("deadline_exceeded") == 504
    assert seen["seconds"] < 1.5, seen
    assert seen["error"] == "decoding stopped: the request's deadline passed"
    decoder.pool.shutdown(wait=True)


@pytest.mark.parametrize("expires_in,why", [(60, "the request was cancelled"), (0.2, "the request's deadline passed")],
                         ids=["client gone", "queued, then its deadline"])
def test_a_cancelled_decode_stops_at_its_next_frame(expires_in, why):
    """A call cancelled by the ingress (its 504, the client gone) frees its Ray slot at once: its decode must end
    too, or a few slow uploads hold every thread of the decoder's pool. What the log says: a client gone is not a
    deadline, and a call that waited in the decoder's queue (sent with 60 s left, only ``expires_in`` of them left
    when it started) and was cancelled at its deadline is a deadline, not a cancellation (it said cancelled)."""
    decoder, data, seen = _slow_decoder()

    async def main():
        call = asyncio.ensure_future(decoder.decode("slow.mkv", data, False, 60, time.time() + expires_in))
        await asyncio.sleep(0.3)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(main())
    decoder.pool.shutdown(wait=True)
    assert seen["code"] == "deadline_exceeded" and seen["seconds"] < 1.5, seen
    assert seen["error"] == f"decoding stopped: {why}"


def test_the_decoder_hands_freed_heap_back_after_a_big_decode():
    """As the ingress after a big upload: a decode leaves its decoder's buffers freed in the heap of the pool thread
    (16 MiB for 40 frames of 1080p, measured) unless given back (pipeline/heap.py). In a fresh process, so the heap
    is this test's alone."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = """
import gc, json, sys, threading
sys.path.append("tests")
from media_fixtures import encode_video
from pipeline.config import Settings
from pipeline.heap import release_heap
from serve.deployments import Decoder
data = encode_video(1920, 1080, frames=40)
release_heap()  # the encoder's buffers are not the decoder's to give back
decoder = Decoder.func_or_class(Settings(decode={"threads": 1}).model_dump(mode="json"))
def anon():
    return int(next(line for line in open("/proc/self/status") if line.startswith("RssAnon")).split()[1]) / 1024
kept = []
for _ in range(3):
    before = anon()
    thread = threading.Thread(target=decoder.decode_row, args=("clip.mp4", data))  # a pool thread, as in Serve
    thread.start()
    thread.join()
    gc.collect()
    kept.append(anon() - before)
print(json.dumps(kept))
"""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120, check=True)
    kept = json.loads(out.stdout.strip().splitlines()[-1])
    assert sum(kept) < 8, kept  # MiB still held after three decodes and their frames are gone (22 without)


@pytest.mark.parametrize("crash,code,status", [(MemoryError(), "out_of_memory", 503), (RuntimeError("bug"), "decode_failed", 500)],
                         ids=["out of memory", "bug"])
def test_a_decoder_crash_is_a_server_fault_not_broken_media(crash, code, status):
    """A row the decode stage itself crashed on is the server's fault, never the 422 that tells the caller its
    media is broken: out of memory is a 503 to retry later (Retry-After), any other crash a 500 whose detail stays
    in the log."""
    from pipeline import errors
    from pipeline.config import Settings
    from serve.deployments import Decoder
    from serve.problems import INTERNAL, problem_for, status_for

    decoder = Decoder.func_or_class(Settings().model_dump(mode="json"))

    def crashes(uri, data=None, deadline=None):
        raise crash

    decoder.stage.decode_one = crashes
    row = decoder.decode_row("upload.jpg", b"\xff\xd8\xff" + b"\0" * 100)
    assert row["error_code"][0] == code
    problem = problem_for(row["error_code"][0], row["error"][0], retry_after_s=5)
    assert (problem.status, problem.code) == (status, "out_of_memory" if status == 503 else "internal_error")
    assert (problem.headers or {}).get("Retry-After") == ("5" if status == 503 else None)
    assert status == 503 or problem.detail == INTERNAL
    assert status_for(errors.MediaError.code) == 422
