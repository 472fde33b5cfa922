"""Label-independent augmentation: every training crop, real or (pseudo-)fake, goes through the same path.

The codec path matters most. Reals come mostly from still photos (JPEG) while every real fake is an H.264
frame; a detector can learn "was it a video" instead of "was it blended". So any crop may be downscaled
and pushed through an H.264 encode/decode round trip at a random quantiser, with the same probability
whatever its label, and self-blended fakes are made *before* it (as a real swap is blended before the
video is compressed).
"""

from __future__ import annotations

import cv2
import numpy as np

INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_CUBIC)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) if ok else image


_ENCODERS: dict[tuple[int, int, int], object] = {}


def _encoder(width: int, height: int, qp: int):
    """A cached all-intra libx264 encoder: creating one costs ~10 ms, encoding a crop ~1 ms. Constant QP
    and IDR-only frames make each output independent of what the encoder saw before (reproducible runs)."""
    import av

    key = (width, height, qp)
    if key not in _ENCODERS:
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
        encoder.options = {"qp": str(qp), "preset": "ultrafast", "tune": "zerolatency", "threads": "1",
                           "x264-params": "keyint=1:repeat-headers=1"}
        encoder.thread_count = 1
        _ENCODERS[key] = encoder
    return _ENCODERS[key]


def h264(image: np.ndarray, qp: int) -> np.ndarray:
    """One H.264 IDR frame (libx264, yuv420p, constant ``qp``) encoded and decoded back; size kept."""
    import av

    height, width = image.shape[:2]
    even = np.ascontiguousarray(image[: height - height % 2, : width - width % 2])
    packets = list(_encoder(even.shape[1], even.shape[0], int(qp)).encode(av.VideoFrame.from_ndarray(even, format="rgb24")))
    decoder = av.CodecContext.create("h264", "r")
    decoder.thread_count = 1
    frames = [f for p in packets for f in decoder.decode(p)] + list(decoder.decode(None))
    if not frames:
        raise RuntimeError("H.264 round trip produced no frame")
    out = frames[-1].to_ndarray(format="rgb24")
    if out.shape[:2] != (height, width):
        out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
    return out


QPS = (20, 24, 28, 32, 36)            # about CRF 18-35 for intra frames
SCALES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # few sizes, so few cached encoders


def codec_roundtrip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random downscale (lower-resolution source), H.264 at a random QP, then back to the crop size."""
    height, width = image.shape[:2]
    factor = SCALES[rng.integers(len(SCALES))]
    small = image
    if factor < 0.98:
        size = (max(16, round(width * factor)), max(16, round(height * factor)))
        small = cv2.resize(image, size, interpolation=INTERPOLATIONS[rng.integers(len(INTERPOLATIONS))])
    out = h264(small, QPS[rng.integers(len(QPS))])
    if out.shape[:2] != (height, width):
        out = cv2.resize(out, (width, height), interpolation=INTERPOLATIONS[rng.integers(len(INTERPOLATIONS))])
    return out


def capture(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """How a camera saw the whole scene, the same for any label: grain (sensor noise, often in a dark room,
    so sometimes darkened first) or a soft lens. Applied before a blend, as a swap is made in footage that
    already looks that way, so uniform grain or softness cannot read as a blend but a patch without it can."""
    image = image.astype(np.float32)
    if rng.random() < 0.6:
        if rng.random() < 0.5:  # under-exposed: darker mid-tones, then the grain a high gain adds
            image = 255.0 * (image / 255.0) ** rng.uniform(1.2, 1.8)
        image = image + rng.normal(0.0, rng.uniform(2.0, 8.0), image.shape).astype(np.float32)
    else:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5))
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def erase_part(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Black out the eyes, the nose or the mouth (MTCNN's 5 landmarks, crop coordinates), any label: the
    DFDC winner's remedy for a detector that learns a few people's features instead of the blend; it must
    find the seam wherever it still shows. Before the flip and the codec, as an occluder in the scene."""
    points = np.asarray(landmarks, np.float32).reshape(5, 2)
    eyes = float(np.linalg.norm(points[1] - points[0])) or 1.0
    image = np.ascontiguousarray(image).copy()
    part = rng.integers(3)
    if part == 1:  # nose: a disc
        cv2.circle(image, tuple(int(v) for v in points[2].round()), max(2, round(0.35 * eyes)), (0, 0, 0), -1)
        return image
    a, b = (points[0], points[1]) if part == 0 else (points[3], points[4])
    out = (b - a) / max(float(np.linalg.norm(b - a)), 1e-3) * 0.3 * eyes  # reach past the outer corners
    cv2.line(image, tuple(int(v) for v in (a - out).round()), tuple(int(v) for v in (b + out).round()), (0, 0, 0),
             max(2, round(0.4 * eyes)))
    return image


def augment(image: np.ndarray, rng: np.random.Generator, codec_p: float = 0.0) -> np.ndarray:
    """Flip, brightness/contrast, then either the H.264 path (``codec_p``) or JPEG (half the rest)."""
    return augment_with_map(image, None, rng, codec_p)[0]


def augment_with_map(image: np.ndarray, blend_map: np.ndarray | None, rng: np.random.Generator,
                     codec_p: float = 0.0) -> tuple[np.ndarray, np.ndarray | None]:
    """``augment``, with the crop's blend map (H, W) flipped alongside; the same random draws either way."""
    if rng.random() < 0.5:
        image = image[:, ::-1]
        blend_map = None if blend_map is None else np.ascontiguousarray(blend_map[:, ::-1])
    if rng.random() < 0.3:
        image = np.clip(image.astype(np.float32) * rng.uniform(0.9, 1.1) + rng.uniform(-10, 10), 0, 255).astype(np.uint8)
    image = np.ascontiguousarray(image)
    if rng.random() < codec_p:
        image = codec_roundtrip(image, rng)
    elif rng.random() < 0.5:
        image = jpeg(image, rng.integers(60, 96))
    return np.ascontiguousarray(image), blend_map
