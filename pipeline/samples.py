"""Small demo/test media made from scikit-image's public-domain photos (no download, no third-party faces).

``python -m pipeline.samples [DIR]`` regenerates what ships in ``pipeline/samples/``:
- ``astronaut.jpg``: Eileen Collins (NASA, public domain), one face.
- ``astronauts_pair.jpg``: the same photo beside its mirror image, two faces.
- ``coffee.jpg``: a cup of coffee, no face.
- ``astronaut_zoom.mp4``: 4 s H.264 clip that pans and zooms over the astronaut photo (one face moving).
- ``pair_pan.mp4``: 3 s H.264 clip panning over the two-face picture (two tracks).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

SAMPLES_DIR = Path(__file__).parent / "samples"


def _photos() -> dict[str, np.ndarray]:
    import skimage.data

    astronaut = skimage.data.astronaut()
    pair = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)
    return {"astronaut": astronaut, "astronauts_pair": pair, "coffee": skimage.data.coffee()}


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])


def _write_pan_zoom(path: Path, image: np.ndarray, seconds: float, size: tuple[int, int], zoom: tuple[float, float], fps: int = 25) -> None:
    """Encode a virtual camera that pans left→right and zooms over ``image``."""
    import av

    out_w, out_h = size
    height, width = image.shape[:2]
    frames = int(seconds * fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = out_w, out_h, "yuv420p"
        stream.options = {"crf": "26", "preset": "medium"}
        for i in range(frames):
            t = i / max(frames - 1, 1)
            z = zoom[0] + (zoom[1] - zoom[0]) * t
            crop_w = min(width, int(width / z))
            crop_h = min(height, int(crop_w * out_h / out_w))
            x0 = int((width - crop_w) * (0.3 + 0.4 * t))
            y0 = int((height - crop_h) * 0.3)
            view = cv2.resize(image[y0:y0 + crop_h, x0:x0 + crop_w], (out_w, out_h), interpolation=cv2.INTER_AREA)
            for packet in stream.encode(av.VideoFrame.from_ndarray(view, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_samples(directory: Path = SAMPLES_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    photos = _photos()
    for name, image in photos.items():
        _write_jpeg(directory / f"{name}.jpg", image)
    _write_pan_zoom(directory / "astronaut_zoom.mp4", photos["astronaut"], 4.0, (480, 360), (1.0, 1.6))
    _write_pan_zoom(directory / "pair_pan.mp4", photos["astronauts_pair"], 3.0, (640, 320), (1.0, 1.15))
    return sorted(directory.iterdir())


def sample_media() -> list[Path]:
    """The bundled sample files (images and videos)."""
    return sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix in (".jpg", ".mp4"))


if __name__ == "__main__":
    for made in make_samples(Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLES_DIR):
        print(made, made.stat().st_size)
