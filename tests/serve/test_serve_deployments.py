"""Serve's stage deployments (serve/deployments.py) built in-process: a replica that cannot load its stage stays
up, says why on /v1/health's ready() and answers every row with a typed error the ingress turns into a status."""

from __future__ import annotations

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
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.config import Settings
    from serve.deployments import Decoder

    slots = 4
    decoder = Decoder.func_or_class(Settings(serve={"decode_max_ongoing_requests": slots}).model_dump(mode="json"))
    lock, release = threading.Lock(), threading.Event()
    seen = {"running": 0, "peak": 0, "started": 0}

    class SlowStage:  # decoding a big video: holds its frames until the test lets it finish
        def __call__(self, batch):
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

    def crashes(uri, data=None):
        raise crash

    decoder.stage.decode_one = crashes
    row = decoder.decode_row("upload.jpg", b"\xff\xd8\xff" + b"\0" * 100)
    assert row["error_code"][0] == code
    problem = problem_for(row["error_code"][0], row["error"][0], retry_after_s=5)
    assert (problem.status, problem.code) == (status, "out_of_memory" if status == 503 else "internal_error")
    assert (problem.headers or {}).get("Retry-After") == ("5" if status == 503 else None)
    assert status == 503 or problem.detail == INTERNAL
    assert status_for(errors.MediaError.code) == 422
