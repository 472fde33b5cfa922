"""The training settings (jobs/training/config.py): typed, unknown keys refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobs.training.config import TrainConfig


def test_a_misspelt_setting_is_refused_not_trained_with_its_default(tmp_path):
    config = TrainConfig(dataset=tmp_path, out_dir=tmp_path / "run", lr=1e-4)
    # Ray Train's workers rebuild the config from its JSON: every field survives the trip
    assert TrainConfig.model_validate(config.model_dump(mode="json")) == config
    with pytest.raises(ValidationError, match="learning_rate"):
        TrainConfig(dataset=tmp_path, out_dir=tmp_path / "run", learning_rate=1e-4)
    with pytest.raises(ValidationError, match="label_smoothing"):
        TrainConfig(dataset=tmp_path, out_dir=tmp_path / "run", label_smoothing=0.5)  # targets would cross 0.5


def test_an_encoder_without_offline_imagenet_weights_is_refused_before_any_crop_is_read(tmp_path):
    for name in ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"):
        assert TrainConfig(dataset=tmp_path, out_dir=tmp_path / "run", encoder=name).encoder == name
    with pytest.raises(ValidationError, match="no offline ImageNet weights known for 'tf_efficientnet_lite3'"):
        TrainConfig(dataset=tmp_path, out_dir=tmp_path / "run", encoder="tf_efficientnet_lite3")
    assert not TrainConfig(dataset=tmp_path, out_dir=tmp_path / "run", encoder="tf_efficientnet_lite3", imagenet=False).imagenet
