"""Self-blended images (Shiohara & Yamasaki, CVPR 2022): pseudo-fakes made from one real face.

A copy of the face is colour- and frequency-transformed, slightly rescaled and shifted, then blended
back into the original through a soft face mask. The result carries the generic traces of a face swap
(a blending boundary, colour and sharpness mismatch, resampling) without any particular generator's
fingerprint, which is why detectors trained on it generalise to unseen deepfake methods.

All randomness comes from the ``numpy.random.Generator`` passed in, so a seed reproduces a dataset.
"""

from __future__ import annotations

import cv2
import numpy as np

from jobs.training.mesh import OVAL

BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


def face_mask(shape: tuple[int, int], box: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
              outline: np.ndarray | None = None) -> np.ndarray:
    """Soft face mask (H, W) float32 in [0, 1] from MTCNN's box and 5 landmarks (crop coordinates), or from a
    dense ``outline`` (``jobs.training.mesh.OUTLINE`` points) when given.

    Either a convex hull of the landmarks extended to forehead and chin, or an ellipse fitted to the
    box; with an outline, its hull, deformed. Then randomly dilated/eroded and blurred so the blending
    boundary varies in place and width.
    """
    if outline is not None:
        size = _outline_face_size(outline)
        return _soften(_outline_hull(shape, outline, size, rng), size, rng)
    height, width = shape
    points = np.asarray(landmarks, np.float32).reshape(5, 2)
    x1, y1, x2, y2 = np.asarray(box, np.float32).reshape(4)
    mask = np.zeros((height, width), np.float32)
    if rng.random() < 0.5:
        eyes, mouth = points[:2].mean(0), points[3:].mean(0)
        down = mouth - eyes
        inset = lambda: (x2 - x1) * rng.uniform(0.0, 0.12)  # noqa: E731
        extra = np.array([
            eyes - down * rng.uniform(0.5, 0.9),           # forehead
            mouth + down * rng.uniform(0.5, 0.8),          # chin
            [x1 + inset(), eyes[1]], [x2 - inset(), eyes[1]],                    # temples
            [x1 + inset() * 2, mouth[1]], [x2 - inset() * 2, mouth[1]],          # cheeks
        ], np.float32)
        hull = cv2.convexHull(np.concatenate([points, extra]).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1.0)
    else:
        centre = (int((x1 + x2) / 2), int((y1 + y2) / 2 + (y2 - y1) * rng.uniform(-0.05, 0.1)))
        axes = (int((x2 - x1) / 2 * rng.uniform(0.75, 1.0)), int((y2 - y1) / 2 * rng.uniform(0.8, 1.05)))
        cv2.ellipse(mask, centre, (max(axes[0], 2), max(axes[1], 2)), 0, 0, 360, 1.0, -1)
    return _soften(mask, float(min(x2 - x1, y2 - y1)), rng)


def part_mask(shape: tuple[int, int], box: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Soft mask (H, W) of one part of the face: the mouth and chin (two draws in three) or the eyes.

    Reenactment (Face2Face, NeuralTextures) re-renders the mouth and its surroundings and leaves the rest of the
    frame as it was, so its seam runs across the cheeks, not round the face: a whole-face self-blend never
    shows that. An ellipse placed by MTCNN's points, then moved and softened like the face masks.
    """
    points = np.asarray(landmarks, np.float32).reshape(5, 2)
    x1, y1, x2, y2 = np.asarray(box, np.float32).reshape(4)
    eyes, nose, mouth = points[:2].mean(0), points[2], points[3:].mean(0)
    eye_gap = max(float(np.linalg.norm(points[1] - points[0])), 2.0)
    if rng.random() < 2 / 3:  # mouth, down to the chin: where reenactment changes most
        centre = mouth + (mouth - nose) * rng.uniform(0.0, 0.6)
        axes = (eye_gap * rng.uniform(0.8, 1.3), max(float(np.linalg.norm(mouth - nose)), 2.0) * rng.uniform(1.0, 1.8))
    else:  # both eyes and brows
        centre = eyes - (mouth - eyes) * rng.uniform(0.0, 0.15)
        axes = (eye_gap * rng.uniform(1.0, 1.4), eye_gap * rng.uniform(0.35, 0.6))
    angle = float(np.degrees(np.arctan2(*(points[1] - points[0])[::-1])))  # tilted with the eye line
    mask = np.zeros(shape, np.float32)
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (max(int(axes[0]), 2), max(int(axes[1]), 2)), angle, 0, 360, 1.0, -1)
    return _soften(mask, float(min(x2 - x1, y2 - y1)) * 0.5, rng)  # half a face's softening: the part is smaller


def _outline_hull(shape: tuple[int, int], outline: np.ndarray, face_size: float, rng: np.random.Generator) -> np.ndarray:
    """The whole oval (forehead included) or, as dlib's 68 points give, brows to jaw; its corners moved a
    little so the seam is not always the hull's straight edges (SBI deforms its mask elastically)."""
    points = np.asarray(outline, np.float32).reshape(-1, 2)
    oval, brows = points[:len(OVAL)], points[len(OVAL):]
    if rng.random() < 0.5:
        up = oval[0] - oval[len(OVAL) // 2]  # forehead top minus chin
        up /= max(float(np.linalg.norm(up)), 1e-6)
        oval = oval[oval @ up <= (brows @ up).max()]
        points = np.concatenate([oval, brows])
    hull = cv2.convexHull(points).reshape(-1, 2)
    hull = hull + rng.normal(0, face_size * rng.uniform(0.0, 0.03), hull.shape)
    mask = np.zeros(shape, np.float32)
    cv2.fillPoly(mask, [np.round(hull).astype(np.int32)], 1.0)
    return mask


def _outline_face_size(outline: np.ndarray) -> float:
    """A face size comparable to MTCNN's box side (brows to chin is about 1/1.2 of the oval)."""
    points = np.asarray(outline, np.float32).reshape(-1, 2)
    return float((points.max(0) - points.min(0)).min()) / 1.2


def _soften(mask: np.ndarray, face_size: float, rng: np.random.Generator) -> np.ndarray:
    face_size = max(4.0, face_size)
    k = max(1, int(face_size * rng.uniform(0.0, 0.12)))
    kernel = np.ones((k, k), np.uint8)
    mask = cv2.erode(mask, kernel) if rng.random() < 0.5 else cv2.dilate(mask, kernel)
    for _ in range(2):
        blur = int(face_size * rng.uniform(0.05, 0.25)) | 1
        mask = cv2.GaussianBlur(mask, (blur, blur), 0)
    peak = mask.max()
    return mask / peak if peak > 0 else mask


def _colour_transform(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = image.astype(np.float32)
    out += rng.uniform(-20, 20, size=3)                         # RGB shift
    out = (out - out.mean()) * rng.uniform(0.85, 1.15) + out.mean() + rng.uniform(-15, 15)  # contrast/brightness
    hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + rng.integers(-5, 6)) % 180     # hue
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.85, 1.15), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _frequency_transform(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    choice = rng.integers(3)
    if choice == 0:  # down- then up-scale: resampling blur
        factor = rng.uniform(0.4, 0.8)
        small = cv2.resize(image, (max(4, int(width * factor)), max(4, int(height * factor))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    if choice == 1:  # sharpen
        blurred = cv2.GaussianBlur(image, (0, 0), 1.0)
        return cv2.addWeighted(image, 1 + rng.uniform(0.3, 1.0), blurred, -rng.uniform(0.3, 1.0), 0)
    return cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.2))


def _shift_scale(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    scale = rng.uniform(0.95, 1.05)
    tx, ty = rng.uniform(-0.03, 0.03) * width, rng.uniform(-0.03, 0.03) * height
    matrix = np.array([[scale, 0, (1 - scale) * width / 2 + tx], [0, scale, (1 - scale) * height / 2 + ty]], np.float32)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def self_blend(face: np.ndarray, box: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
               outline: np.ndarray | None = None, part: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return (pseudo-fake uint8 image, the blend mask actually used (H, W) in [0, 1]); ``outline``: see
    ``face_mask``; ``part``: blend only the mouth or the eyes (``part_mask``)."""
    # Only the blended-in copy is transformed: outside the mask the image stays exactly the real face
    # (a global change would teach nothing about blending and would tint the zero padding).
    target = face
    source = face
    if rng.random() < 0.8:
        source = _colour_transform(source, rng)
    if rng.random() < 0.8:
        source = _frequency_transform(source, rng)
    source = _shift_scale(source, rng)
    mask = (part_mask(face.shape[:2], box, landmarks, rng) if part
            else face_mask(face.shape[:2], box, landmarks, rng, outline)) * rng.choice(BLEND_RATIOS)
    blended = mask[..., None] * source.astype(np.float32) + (1 - mask[..., None]) * target.astype(np.float32)
    return np.clip(blended, 0, 255).astype(np.uint8), mask
