"""Scoring through the graph, the report and when the model card is written (jobs/training/evaluate.py)."""

from __future__ import annotations

import json

import pytest

from pipeline.config import load_settings

from training_fixtures import score_records


def test_evaluate_leaves_the_card_alone_unless_asked(tmp_path, samples_dir, caplog):
    from jobs.training.evaluate import evaluate
    from pipeline.card import card_path
    from pipeline.checkpoint import imagenet_init_checkpoint

    ckpt = imagenet_init_checkpoint(tmp_path / "m.safetensors", "t", "test")
    before = card_path(ckpt).read_text()
    (tmp_path / "labels.csv").write_text(f"path,label,group\n{samples_dir / 'astronaut.jpg'},REAL,a\n"
                                         f"{samples_dir / 'astronauts_pair.jpg'},FAKE,b\n")
    settings = load_settings(**{"classify.checkpoint": str(ckpt)})
    result = evaluate(tmp_path / "labels.csv", "all", settings, tmp_path / "eval")
    assert card_path(ckpt).read_text() == before
    for row in result["strategies"].values():  # each strategy's real FPR at the card's threshold, not a blank
        confusion = row["confusion"]
        assert row["fpr"] == confusion["fp"] / (confusion["fp"] + confusion["tn"])
    assert "model card" not in caplog.text
    evaluate(tmp_path / "labels.csv", "all", settings, tmp_path / "eval", record=True)
    summary = json.loads(card_path(ckpt).read_text())["metrics"]["all_report"]
    assert summary["roc_auc_ci95"] is not None  # each AUC with its interval
    assert set(summary["per_method_auc_ci95"]) == set(summary["per_method_auc"])
    assert ("own_sources_auc_ci95" in summary) == ("own_sources_auc" in summary)
    assert f"model card {card_path(ckpt)}: all report's summary written" in caplog.text  # a card write is never silent


def test_cached_scores_are_reused_only_for_the_same_weights_and_a_cut_line_is_rescored(tmp_path, samples_dir, caplog):
    """Two detectors with one version string (every `train` run is `dev` unless told): the second is scored anew."""
    from safetensors.torch import load_file, save_file

    from jobs.training.evaluate import evaluate
    from pipeline.card import card_path
    from pipeline.checkpoint import imagenet_init_checkpoint

    first = imagenet_init_checkpoint(tmp_path / "a.safetensors", "dev", "test")
    second = tmp_path / "b.safetensors"
    tensors = load_file(first)
    head = next(k for k in tensors if k.startswith("head") and k.endswith("bias"))
    tensors[head] = tensors[head] + 2.0  # other weights, same card and version
    save_file(tensors, second)
    card_path(second).write_text(card_path(first).read_text())
    (tmp_path / "labels.csv").write_text(f"path,label,group\n{samples_dir / 'astronaut.jpg'},REAL,a\n"
                                         f"{samples_dir / 'astronauts_pair.jpg'},FAKE,b\n")
    out = tmp_path / "eval"
    scores = {}
    for ckpt in (first, second, first):
        evaluate(tmp_path / "labels.csv", "all", load_settings(**{"classify.checkpoint": str(ckpt)}), out)
        rows = [json.loads(line) for line in (out / "scores-all-labels.jsonl").read_text().splitlines()]
        scores.setdefault(ckpt.name, []).append([r["face_scores"] for r in rows[-2:]])
    assert scores["a.safetensors"][0] != scores["b.safetensors"][0]      # b was scored, not read from a's cache
    assert len((out / "scores-all-labels.jsonl").read_text().splitlines()) == 6  # a again: a's key differs from b's
    cache = out / "scores-all-labels.jsonl"
    cache.write_text(cache.read_text()[:-40])                              # an interrupted run's last line
    evaluate(tmp_path / "labels.csv", "all", load_settings(**{"classify.checkpoint": str(first)}), out)
    assert "is not a whole record" in caplog.text


@pytest.mark.parametrize("args, why", [
    (["--split", "test", "--fit"], "validation split only"),
    (["--split", "val", "--fit", "--record"], "two commands"),
    (["--split", "test", "--target-fpr", "0.01"], "use them with --fit"),
    (["--split", "test", "--min-track-frames", "2"], "use them with --fit"),
])
def test_evaluate_refuses_options_that_would_do_nothing_or_fit_on_test(tmp_path, samples_dir, args, why):
    from typer.testing import CliRunner

    from jobs.cli import app
    from pipeline.card import card_path

    (tmp_path / "labels.csv").write_text(f"path,label,group\n{samples_dir / 'astronaut.jpg'},REAL,a\n")
    shipped = card_path(load_settings().classify.checkpoint).read_text()
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "labels.csv"), "-o", str(tmp_path / "ev"), *args])
    assert result.exit_code == 2 and why in " ".join(result.output.split()), result.output
    assert card_path(load_settings().classify.checkpoint).read_text() == shipped  # nothing written
    assert not (tmp_path / "ev" / "report-test.md").exists()


def _card_only_checkpoint(tmp_path, **card_fields):
    """Weights that are never loaded (the scores are stubbed) and a card with these fields."""
    from pipeline.card import ModelCard, ModelSpec, write_card

    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"not loaded")
    write_card(ModelCard(version="t", architecture=ModelSpec(), **card_fields), ckpt)
    return ckpt


@pytest.mark.parametrize("overrides", [{}, {"classify.threshold": 0.25, "classify.aggregation": "track_max",
                                            "classify.min_track_frames": 3}])
def test_report_takes_threshold_aggregation_and_min_track_as_the_graph_does(tmp_path, monkeypatch, overrides):
    """Settings override the card (pipeline.graph.stage_specs, the one rule) on a report; a fit's report is at what
    it fitted (the fit's min-track choice is the flag, then the settings, then 4), as the card now holds it."""
    import jobs.training.evaluate as evaluate_module
    from pipeline.graph import stage_specs

    records = score_records("r", "v", "REAL", [0.1, 0.2, 0.3, 0.4], frames=8) + score_records("f", "v", "FAKE", [0.6, 0.7, 0.8], frames=8)
    for record in records:  # one track of 4 faces: a verdict under any of the minimum-track rules here
        record["face_scores"], record["face_track"] = record["face_scores"] * 4, [0] * 4
    monkeypatch.setattr(evaluate_module, "score_videos", lambda videos, settings, cache, source: records)
    (tmp_path / "labels.csv").write_text("path,label,group\nr0,REAL,a\n")
    ckpt = _card_only_checkpoint(tmp_path, threshold=0.55, aggregation="confident", min_track_frames=2)
    settings = load_settings(**{"classify.checkpoint": str(ckpt), **overrides})
    result = evaluate_module.evaluate(tmp_path / "labels.csv", "all", settings, tmp_path / "eval")
    expected = stage_specs(settings)[-1].kwargs
    assert (result["threshold"], result["aggregation"], result["min_track_frames"]) == (
        expected["threshold"], expected["aggregation"], expected["min_track_frames"])
    assert (result["threshold"] == 0.25) == bool(overrides) and (result["threshold"] == 0.55) != bool(overrides)
    fitted = evaluate_module.evaluate(tmp_path / "labels.csv", "val", settings, tmp_path / "fit", fit=True,
                                      min_track_frames=2)
    from pipeline.card import read_card

    card = read_card(ckpt)  # the card now holds the fitted operating point
    assert (fitted["threshold"], fitted["aggregation"], fitted["min_track_frames"]) == (
        card.threshold, card.aggregation, card.min_track_frames) and card.min_track_frames == 2


def test_cached_scores_take_the_labels_as_they_read_now(tmp_path, samples_dir):
    """A corrected labels CSV reaches the report (and --fit) though the scores come from the cache."""
    from jobs.training.evaluate import evaluate
    from pipeline.checkpoint import imagenet_init_checkpoint

    ckpt = imagenet_init_checkpoint(tmp_path / "m.safetensors", "t", "test")
    settings = load_settings(**{"classify.checkpoint": str(ckpt)})
    labels, photo, pair = tmp_path / "labels.csv", samples_dir / "astronaut.jpg", samples_dir / "astronauts_pair.jpg"
    labels.write_text(f"path,label,method,group\n{photo},REAL,,a\n{pair},FAKE,Swap,b\n")
    first = evaluate(labels, "all", settings, tmp_path / "eval")
    labels.write_text(f"path,label,method,group\n{photo},FAKE,Swap,c\n{pair},REAL,,d\n")  # the labels were the wrong way round
    again = evaluate(labels, "all", settings, tmp_path / "eval")
    cache = tmp_path / "eval" / "scores-all-labels.jsonl"
    assert len(cache.read_text().splitlines()) == 2  # nothing scored again
    before = {r["path"]: (r["label"], r["score"]) for r in first["per_video"]}
    after = {r["path"]: (r["label"], r["method"], r["score"]) for r in again["per_video"]}
    assert after == {str(photo): ("FAKE", "Swap", before[str(photo)][1]), str(pair): ("REAL", "original", before[str(pair)][1])}
    assert set(again["per_method"]) == {"Swap"} and again["overall"]["positives"] == 1
    # records of older scoring code (no revision, or another: the tracking fix changed tracks under the same key) are
    # scored again, once; the key itself stays the one old caches hold
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    cache.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "revision"}) + "\n" for r in rows))
    evaluate(labels, "all", settings, tmp_path / "eval")
    evaluate(labels, "all", settings, tmp_path / "eval")
    rescored = [json.loads(line) for line in cache.read_text().splitlines()][2:]
    assert len(rescored) == 2 and {r["scoring_key"] for r in rescored} == {rows[0]["scoring_key"]}


@pytest.mark.parametrize("rows, split, counts", [
    ("{bad},REAL,train\n{missing},FAKE,train\n", "train", "2 objects, 2 unreadable, 0 without a face"),
    ("{coffee},REAL,val\n", "val", "1 objects, 0 unreadable, 1 without a face"),
    ("{coffee},REAL,train\n", "test", "0 objects, 0 unreadable, 0 without a face"),  # an empty split
])
def test_nothing_to_score_is_a_coded_refusal_naming_the_split_and_the_counts(tmp_path, samples_dir, rows, split, counts):
    from typer.testing import CliRunner

    from jobs.cli import app
    from pipeline.checkpoint import imagenet_init_checkpoint

    ckpt = imagenet_init_checkpoint(tmp_path / "m.safetensors", "t", "test")
    (tmp_path / "bad.jpg").write_text("not an image")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,split\n" + rows.format(bad=tmp_path / "bad.jpg", missing=tmp_path / "gone.mp4",
                                                         coffee=samples_dir / "coffee.jpg"))
    result = CliRunner().invoke(app, ["evaluate", str(labels), "--split", split, "-o", str(tmp_path / "ev"),
                                      "--checkpoint", str(ckpt)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and f"nothing_scored: nothing to report on the {split} split of labels: {counts}" in said, said
    assert not (tmp_path / "ev" / f"report-{split}.md").exists()


def test_per_video_scores_are_never_rounded_across_the_threshold():
    """A fitted threshold sits just above the highest real: rounded to 6 decimals that real's score would land on it
    and read FAKE while the report counts it a true negative. Shown as `score --json` shows it, it stays below."""
    from jobs.training.evaluate import report

    threshold = 0.562955
    records = (score_records("r", "v", "REAL", [0.1, 0.56295496]) + score_records("f", "v", "FAKE", [0.56295501, 0.9]))
    result = report(records, threshold, "mean")
    shown = {r["path"]: r["score"] for r in result["per_video"]}
    assert result["overall"]["confusion"] == {"tn": 2, "fp": 0, "fn": 0, "tp": 2}
    assert shown["r1"] == 0.562954 < threshold <= shown["f0"] == 0.562955
    assert shown["r0"] == 0.1 and shown["f1"] == 0.9
    assert result["real_sources"]["v"]["scores"]["max"] == 0.5629 < threshold  # the reals' quantiles alike, at 4 decimals
