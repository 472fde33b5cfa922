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
