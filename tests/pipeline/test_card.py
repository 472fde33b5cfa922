"""Model cards (pipeline/card.py): a rewritten card appears whole or not at all; a hand-edited one is read as written or
refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.card import card_path, read_card, write_card


def test_a_card_rewrite_that_fails_half_way_leaves_the_old_card(tmp_path, monkeypatch, detector_env):
    from pipeline.config import load_settings

    shipped = Path(load_settings().classify.checkpoint)
    weights = tmp_path / "detector.safetensors"
    shutil.copy(shipped, weights)
    shutil.copy(card_path(shipped), card_path(weights))
    card = read_card(weights)
    card.threshold = 0.25
    assert write_card(card, weights) == card_path(weights) and read_card(weights).threshold == 0.25

    real_write = Path.write_bytes

    def disk_full(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    card.threshold = 0.75
    with pytest.raises(OSError, match="No space"):
        write_card(card, weights)
    monkeypatch.undo()
    assert read_card(weights).threshold == 0.25                     # the old card, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detector.json", "detector.safetensors"]  # no leftovers


def test_a_threshold_outside_0_1_is_refused(tmp_path, detector_env):
    """A hand-edited percentage (56.3) would call every object REAL: the card is refused, not read."""
    import json

    from pipeline.config import load_settings
    from pipeline.errors import CheckpointError

    shipped = Path(load_settings().classify.checkpoint)
    weights = tmp_path / "detector.safetensors"
    shutil.copy(shipped, weights)
    card = json.loads(card_path(shipped).read_text())
    card["threshold"] = 56.3
    card_path(weights).write_text(json.dumps(card))
    with pytest.raises(CheckpointError):
        read_card(weights)


@pytest.mark.parametrize("edit, misspelt", [({"treshold": 0.99}, "treshold"),
                                            ({"architecture": {"input_sise": 160}}, "input_sise")])
def test_a_misspelt_key_is_refused_not_ignored(tmp_path, detector_env, edit, misspelt):
    """A hand-edited ``"treshold": 0.99`` would leave the fitted threshold in force, silently."""
    import json

    from pipeline.config import load_settings
    from pipeline.errors import CheckpointError

    shipped = Path(load_settings().classify.checkpoint)
    weights = tmp_path / "detector.safetensors"
    shutil.copy(shipped, weights)
    card = json.loads(card_path(shipped).read_text())
    card_path(weights).write_text(json.dumps(card))
    assert read_card(weights).version == card["version"]  # the shipped card, as it is, still reads
    for key, value in edit.items():
        card[key] = {**card[key], **value} if isinstance(value, dict) else value
    card_path(weights).write_text(json.dumps(card))
    with pytest.raises(CheckpointError) as refused:
        read_card(weights)
    assert refused.value.code == "checkpoint_error" and misspelt in str(refused.value)
