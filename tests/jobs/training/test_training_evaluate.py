"""The operating point, the aggregation's fit and the model card's writes (jobs/training/evaluate.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.training.evaluate import fit_on_validation, report
from pipeline.config import load_settings


def _records(prefix: str, source: str, label: str, scores, frames: int = 1) -> list[dict]:
    return [{"path": f"{prefix}{i}", "label": label, "method": "original" if label == "REAL" else "X", "source": source,
             "error": "", "frames_sampled": frames, "face_scores": [s], "face_track": [0]} for i, s in enumerate(scores)]


def test_operating_point_keeps_every_real_source_within_the_target_fpr():
    photos = _records("p", "photos", "REAL", np.linspace(0.01, 0.20, 20))        # many easy reals
    videos = _records("v", "videos", "REAL", [0.30, 0.35, 0.40, 0.45, 0.50])     # few hard reals
    fakes = _records("f", "videos", "FAKE", [0.45, 0.6, 0.7, 0.8, 0.9])
    strategy, threshold, comparison = fit_on_validation(photos + videos + fakes, target_fpr=0.05)
    per_source = comparison[strategy]["per_source_threshold"]
    # 20 photos at 5%: one may be called FAKE → just above the 19th; 5 videos at 5%: none → just above the top
    # (at the card's precision: the next number of 6 decimals)
    assert per_source["photos"] == pytest.approx(0.190001, abs=1e-9)
    assert threshold == per_source["videos"] == pytest.approx(0.500001, abs=1e-9)
    # the pooled 5% quantile (what the photos alone would allow) would have called 4 real videos FAKE
    assert np.quantile([r["face_scores"][0] for r in photos + videos], 0.95) < 0.5
    assert comparison[strategy]["fpr"] == 0.0
    # a test split is reported at the validation threshold, untouched, with FPR per real source
    test = _records("tp", "photos", "REAL", [0.1, 0.6]) + _records("tf", "videos", "FAKE", [0.55, 0.4])
    result = report(test, threshold, strategy)
    assert result["threshold"] == threshold and result["real_sources"]["photos"]["fpr"] == 0.5
    assert result["overall"]["confusion"] == {"tn": 1, "fp": 1, "fn": 1, "tp": 1}


def test_aggregation_is_chosen_by_auc_with_the_min_track_rule():
    # one real video whose long main track is clean but a 2-frame side track looks fake: track_max would
    # call it FAKE; with the minimum-track rule (4 frames) the side track gives no verdict
    def video(path, label, main, side=None):
        scores, tracks = [main] * 8, [0] * 8
        if side is not None:
            scores, tracks = scores + [side] * 2, tracks + [1] * 2
        return {"path": path, "label": label, "method": "X", "source": "v", "error": "", "frames_sampled": 8,
                "face_scores": scores, "face_track": tracks}

    records = [video("r1", "REAL", 0.2, side=0.95), video("r2", "REAL", 0.3), video("f1", "FAKE", 0.7), video("f2", "FAKE", 0.8)]
    _, _, without_rule = fit_on_validation(records, 0.05, min_track_frames=1)
    assert without_rule["track_max"]["roc_auc"] < 1.0
    strategy, threshold, with_rule = fit_on_validation(records, 0.05, min_track_frames=4)
    assert with_rule["track_max"]["roc_auc"] == 1.0 and with_rule[strategy]["roc_auc"] == 1.0
    assert 0.3 < threshold < 0.7


def test_evaluate_leaves_the_card_alone_unless_asked(tmp_path, samples_dir, caplog):
    from jobs.training.evaluate import evaluate
    from pipeline.card import card_path
    from pipeline.checkpoint import imagenet_init_checkpoint

    ckpt = imagenet_init_checkpoint(tmp_path / "m.safetensors", "t", "test")
    before = card_path(ckpt).read_text()
    (tmp_path / "labels.csv").write_text(f"path,label,group\n{samples_dir / 'astronaut.jpg'},REAL,a\n"
                                         f"{samples_dir / 'astronauts_pair.jpg'},FAKE,b\n")
    settings = load_settings(**{"classify.checkpoint": str(ckpt)})
    evaluate(tmp_path / "labels.csv", "all", settings, tmp_path / "eval")
    assert card_path(ckpt).read_text() == before
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
