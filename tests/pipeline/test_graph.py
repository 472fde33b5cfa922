"""The graph is composed once (pipeline/graph.py): ordered stages, a runnable prefix, arguments resolved
from the settings and the card, and no network loaded to read the card."""

from __future__ import annotations

import pytest

from pipeline.batch import object_column
from pipeline.card import read_card
from pipeline.config import Settings
from pipeline.errors import CheckpointError
from pipeline.graph import STAGES, Graph, stage_specs


def test_stages_in_order_and_a_prefix(detector_checkpoint):
    settings = Settings(classify={"checkpoint": detector_checkpoint})
    assert [s.name for s in stage_specs(settings)] == list(STAGES) == ["decode", "detect", "score"]
    assert [s.name for s in stage_specs(settings, "detect")] == ["decode", "detect"]


def test_arguments_come_from_the_card_unless_the_settings_override_them(detector_checkpoint):
    card = read_card(detector_checkpoint)
    specs = stage_specs(Settings(classify={"checkpoint": detector_checkpoint}))
    detect, score = specs[1].kwargs, specs[2].kwargs
    assert detect["crop_size"] == card.architecture.input_size
    assert detect["config"].margin == card.architecture.crop_margin  # the crop the weights were trained on
    assert (score["threshold"], score["aggregation"], score["min_track_frames"]) == (
        card.threshold, card.aggregation, card.min_track_frames)
    override = Settings(classify={"checkpoint": detector_checkpoint, "threshold": 0.9, "aggregation": "track_max"},
                        detect={"crop_size": 96}, torch_threads=2)
    assert stage_specs(override, "detect")[1].kwargs["crop_size"] == 96  # crops alone (prepare) may be any size
    with pytest.raises(CheckpointError, match="crop_size 96 does not match the detector's input size"):
        stage_specs(override)  # but not crops the detector cannot take: refused once, not per face
    specs = stage_specs(override.model_copy(update={"detect": override.detect.model_copy(update={"crop_size": None})}))
    assert specs[1].kwargs["torch_threads"] == 2
    assert stage_specs(Settings(classify={"checkpoint": detector_checkpoint}, detect={"margin": 0.5}),
                       "detect")[1].kwargs["config"].margin == 0.5
    assert (specs[2].kwargs["threshold"], specs[2].kwargs["aggregation"]) == (0.9, "track_max")


def test_the_decoder_uses_the_process_threads_unless_told(detector_checkpoint):
    """One thread per scan actor (as torch), frame threads in a 2-thread `score` process; decode.threads wins."""
    settings = Settings(classify={"checkpoint": detector_checkpoint})
    assert stage_specs(settings, torch_threads=1)[0].kwargs["config"].threads == 1
    assert stage_specs(settings, torch_threads=2)[0].kwargs["config"].threads == 2
    told = Settings(classify={"checkpoint": detector_checkpoint}, decode={"threads": 3})
    assert stage_specs(told, torch_threads=1)[0].kwargs["config"].threads == 3


def test_the_crop_margin_travels_with_the_weights(detector_checkpoint, tmp_path):
    import shutil

    card = read_card(detector_checkpoint)
    weights = shutil.copy(detector_checkpoint, tmp_path / "m.safetensors")
    card.architecture.crop_margin = 0.15
    (tmp_path / "m.json").write_text(card.model_dump_json())
    spec = stage_specs(Settings(classify={"checkpoint": weights}), "detect")[1]
    assert spec.kwargs["config"].margin == 0.15 and spec.build().margin == 0.15


def test_reading_the_card_loads_no_network(detector_checkpoint, monkeypatch):
    import pipeline.checkpoint
    import pipeline.classify

    def refuse(*args, **kwargs):
        raise AssertionError("the network was loaded")

    monkeypatch.setattr(pipeline.checkpoint, "load_checkpoint", refuse)
    monkeypatch.setattr(pipeline.classify, "load_checkpoint", refuse)
    specs = stage_specs(Settings(classify={"checkpoint": detector_checkpoint}))
    assert specs[2].cls == "pipeline.score:ScoreStage"  # specs are plain data: nothing is built until .build()
    assert specs[2].resolve().__name__ == "ScoreStage"


def test_without_a_model_only_the_score_stage_is_refused(tmp_path):
    from pipeline.errors import NoTrainedModelError

    settings = Settings(classify={"checkpoint": tmp_path / "none.safetensors"})
    detect = stage_specs(settings, "detect")[1].kwargs
    assert (detect["crop_size"], detect["config"].margin) == (224, 0.3)  # the default crop without a card
    with pytest.raises(NoTrainedModelError):
        stage_specs(settings)


def test_a_prefix_runs_as_one_callable(samples_dir):
    graph = Graph(stage_specs(Settings(decode={"num_frames": 2}), "decode"))
    out = graph({"uri": object_column([str(samples_dir / "astronaut.jpg")])})
    assert out["frames"][0].shape[0] == 1 and out["error_code"][0] == ""


@pytest.mark.parametrize("keep", [0, 1, 2])
def test_score_keeps_thumbnails_of_each_objects_top_faces(detector_checkpoint, samples_dir, keep):
    import io

    import numpy as np
    from PIL import Image

    settings = Settings(classify={"checkpoint": detector_checkpoint}, decode={"num_frames": 2})
    graph = Graph(stage_specs(settings, thumbnails=keep, thumbnail_px=48))
    uris = [str(samples_dir / n) for n in ("astronauts_pair.jpg", "astronaut.jpg", "coffee.jpg")]
    out = graph({"uri": object_column(uris)})
    if not keep:
        assert "face_thumbs" not in out and "crops" not in out
        return
    assert [len(t) for t in out["face_thumbs"]] == [len(s) for s in out["face_scores"]]
    assert len(out["face_scores"][0]) >= 2 and len(out["face_scores"][2]) == 0  # two people; no face
    for thumbs, scores in zip(out["face_thumbs"], out["face_scores"]):
        kept = [i for i, t in enumerate(thumbs) if t is not None]
        assert len(kept) == min(keep, len(scores))
        assert sorted(kept) == sorted(np.argsort(-np.asarray(scores), kind="stable")[:keep].tolist())
        for i in kept:
            image = Image.open(io.BytesIO(thumbs[i]))
            assert image.format == "JPEG" and max(image.size) <= 48


def test_a_score_stage_built_by_hand_takes_its_verdict_rule_from_the_card(detector_checkpoint):
    """ScoreStage(checkpoint) alone judges as the graph does: threshold, aggregation and minimum track of its card."""
    from types import SimpleNamespace

    from pipeline.score import ScoreStage

    card = read_card(detector_checkpoint).model_copy(update={"threshold": 0.37, "aggregation": "confident",
                                                              "min_track_frames": 3})
    stage = ScoreStage(detector_checkpoint, classifier=SimpleNamespace(card=card))  # the network is not needed here
    rule = stage.aggregate
    assert (rule.threshold, rule.strategy, rule.min_track_frames) == (0.37, "confident", 3)
    rule = ScoreStage(detector_checkpoint, 0.9, "mean", 1, classifier=SimpleNamespace(card=card)).aggregate
    assert (rule.threshold, rule.strategy, rule.min_track_frames) == (0.9, "mean", 1)


def _python_blocks(section: str) -> list[str]:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in body.split("```python\n")[1:]]


def test_the_documented_library_use_runs(detector_env, samples_dir, monkeypatch):
    """docs/architecture.md "Using it from Python": the in-process snippet scores the samples; the Ray Data one hands
    map_batches what Graph takes (checked against a stand-in dataset: no Ray started here)."""
    import inspect
    import sys
    from types import SimpleNamespace

    scoring, on_ray = _python_blocks("Using it from Python")
    monkeypatch.chdir(samples_dir.parents[1])
    scope: dict = {}
    exec(scoring, scope)  # noqa: S102 - the docs' own example
    assert scope["result"].label in ("REAL", "FAKE") and scope["upload"].score == scope["result"].score
    calls = []

    class Dataset:
        def map_batches(self, fn, **kwargs):
            inspect.signature(fn).bind(**kwargs["fn_constructor_kwargs"])
            calls.append((fn, kwargs))
            return self

        def take_all(self):
            return []

    data = SimpleNamespace(from_items=lambda items: Dataset(), ActorPoolStrategy=lambda size: ("actors", size))
    monkeypatch.setitem(sys.modules, "ray", SimpleNamespace(data=data))
    exec(on_ray, {"paths": [str(samples_dir / "astronaut.jpg")]})  # noqa: S102
    (fn, kwargs), = calls
    assert fn is Graph and [s.name for s in kwargs["fn_constructor_kwargs"]["specs"]] == list(STAGES)
    assert kwargs["batch_format"] == "numpy"
