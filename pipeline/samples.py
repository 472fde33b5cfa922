"""Small demo/test media made from scikit-image's public-domain photos (no download, no third-party faces).

``python -m pipeline.samples [DIR]`` regenerates what ships in ``pipeline/samples/``:
- ``astronaut.jpg``: Eileen Collins (NASA, public domain), one face.
- ``astronauts_pair.jpg``: the same photo beside its mirror image, two faces.
- ``coffee.jpg``: a cup of coffee, no face.
- ``astronaut_zoom.mp4``: 4 s H.264 clip that pans and zooms over the astronaut photo (one face moving).
- ``pair_pan.mp4``: 3 s H.264 clip panning over the two-face picture (two tracks).
- ``astronaut_swap.mp4``: a FAKE made here: a classical landmark face swap (Delaunay piecewise-affine
  warp of another face onto hers, colour-matched, Poisson-blended with ``seamlessClone``), filmed with
  the same pan and zoom as ``astronaut_zoom.mp4``. The only public-domain face skimage ships is hers, so
  the "other face" is her mirror image under flipped light, recoloured: the swap leaves the warp and
  blending traces of a real face swap while identity stays close (what a face-swap detector must see).
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


def swap_landmarks(image: np.ndarray, detector=None) -> np.ndarray | None:
    """MTCNN's 5 points of the most confident face, plus forehead, chin, temples and jaw derived from
    them: 13 points in a fixed order (MTCNN names eyes and mouth corners by image side); None if no face."""
    if detector is None:
        from pipeline.config import DetectConfig
        from pipeline.detect import FaceDetector

        detector = FaceDetector(DetectConfig(), "cpu")
    (boxes, _, points), = detector.detect(image[None])
    if len(points) == 0:
        return None
    eye_l, eye_r, nose, mouth_l, mouth_r = points[0]
    eyes, mouth = (eye_l + eye_r) / 2, (mouth_l + mouth_r) / 2
    down, across = mouth - eyes, eye_r - eye_l
    extra = [eyes - down * 0.9, mouth + down * 0.75,                                      # forehead, chin
             eye_l - across * 0.55, eye_r + across * 0.55,                                # temples
             mouth_l - across * 0.45 + down * 0.2, mouth_r + across * 0.45 + down * 0.2,  # jaw
             eye_l - across * 0.3 - down * 0.6, eye_r + across * 0.3 - down * 0.6]        # brow corners
    return np.concatenate([points[0], np.array(extra)]).astype(np.float32)


def face_swap(target: np.ndarray, source: np.ndarray, target_points: np.ndarray, source_points: np.ndarray) -> np.ndarray:
    """Warp ``source``'s face onto ``target``'s (Delaunay triangles of the landmarks, one affine each),
    match its colour to the target's face, and Poisson-blend it in with ``cv2.seamlessClone``."""
    height, width = target.shape[:2]
    subdiv = cv2.Subdiv2D((0, 0, width, height))
    for x, y in target_points:
        subdiv.insert((float(x), float(y)))
    index = {(round(float(x)), round(float(y))): i for i, (x, y) in enumerate(target_points)}
    warped = np.zeros_like(target)
    for tri in subdiv.getTriangleList().reshape(-1, 3, 2):
        ids = [index.get((round(float(x)), round(float(y)))) for x, y in tri]
        if None in ids:
            continue
        src, dst = source_points[ids].astype(np.float32), target_points[ids].astype(np.float32)
        matrix = cv2.getAffineTransform(src, dst)
        piece = cv2.warpAffine(source, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        mask = np.zeros((height, width), np.uint8)
        cv2.fillConvexPoly(mask, dst.astype(np.int32), 1)
        warped[mask > 0] = piece[mask > 0]
    hull = cv2.convexHull(target_points.astype(np.int32))
    mask = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(mask, hull, 255)
    inside = mask > 0
    # Reinhard-style colour match of the pasted face to the target face (per channel mean/std)
    warped = warped.astype(np.float32)
    for c in range(3):
        w, t = warped[..., c][inside], target[..., c][inside].astype(np.float32)
        warped[..., c] = (warped[..., c] - w.mean()) / (w.std() + 1e-6) * t.std() + t.mean()
    warped = np.clip(warped, 0, 255).astype(np.uint8)
    x, y, w, h = cv2.boundingRect(hull)
    return cv2.seamlessClone(warped, target, mask, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)


def swapped_astronaut() -> np.ndarray:
    """Her mirror image, relit from the other side and recoloured, swapped onto her face."""
    astronaut = _photos()["astronaut"]
    mirror = np.ascontiguousarray(astronaut[:, ::-1])
    ramp = np.linspace(0.8, 1.2, mirror.shape[1], dtype=np.float32)[None, :, None]   # light from the other side
    source = np.clip(mirror.astype(np.float32) * ramp * np.array([1.08, 0.95, 0.9], np.float32), 0, 255).astype(np.uint8)
    target_points = swap_landmarks(astronaut)
    source_points = swap_landmarks(source)  # MTCNN orders points by image side, so they correspond as they are
    return face_swap(astronaut, source, target_points, source_points)


def make_samples(directory: Path = SAMPLES_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    photos = _photos()
    for name, image in photos.items():
        _write_jpeg(directory / f"{name}.jpg", image)
    _write_pan_zoom(directory / "astronaut_zoom.mp4", photos["astronaut"], 4.0, (480, 360), (1.0, 1.6))
    _write_pan_zoom(directory / "pair_pan.mp4", photos["astronauts_pair"], 3.0, (640, 320), (1.0, 1.15))
    _write_pan_zoom(directory / "astronaut_swap.mp4", swapped_astronaut(), 4.0, (480, 360), (1.0, 1.6))
    return sorted(directory.iterdir())


def sample_media() -> list[Path]:
    """The bundled sample files (images and videos)."""
    return sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix in (".jpg", ".mp4"))


if __name__ == "__main__":
    for made in make_samples(Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLES_DIR):
        print(made, made.stat().st_size)
