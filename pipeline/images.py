"""Stage 1 for images: a still as one frame; an animated WebP, APNG or AVIF sequence sampled like a video
(``pipeline/decode.py``'s sampling), timed by its frames' durations."""

from __future__ import annotations

import functools
import io
import math
import re

import numpy as np

from pipeline.config import DecodeConfig
from pipeline.decode import DecodedMedia, sample_indices, sample_times
from pipeline.errors import MediaError, MediaTooLargeError, media_errors
from pipeline.frames import SampledFrames
from pipeline.probe import check_duration, check_pixels
from pipeline.work import DecodeWork

# formats whose extra images are an animation's frames; HEIC's and MPO's are other pictures (bursts, depth maps)
ANIMATED = ("WEBP", "PNG", "AVIF")
# Frames an animation may have when ``decode.max_frames`` is unset (its default). PIL learns a frame's duration only
# by decoding it and every frame before it, so sampling reads the whole animation (twice where durations vary):
# time grows with the frame count, which the header states and a few KB of tiny frames can make enormous. 10,000 is
# over 5 minutes at 30 fps, beyond any real GIF-style animation; videos are not bound by it (they seek).
MAX_ANIMATION_FRAMES = 10_000
# A progressive JPEG comes in about 10 scans (libjpeg's default script has 10), and libjpeg goes over the whole
# picture for each scan however many follow: a 409 KB 4K JPEG of 30,000 repeated scans took 5-6 s to decode
# (2.9 MB: 45 s). No encoder writes a hundred.
MAX_JPEG_SCANS = 100
# a JPEG marker: 0xFF followed by neither 0x00 (a 0xFF stuffed into entropy-coded data), a fill 0xFF nor a restart
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xff\xd0-\xd7]")
# A still over ``decode.max_pixels`` (a 12-48 MP phone photo) is decoded scaled down to it rather than refused: the
# detector sees 640 px and the classifier 224 px crops. A JPEG (or MPO) up to this factor over: libjpeg decodes it
# at 1/2, 1/4 or 1/8, so the pixels it drops never decode.
STILL_REDUCE_LIMIT = 16
# Other formats up to this factor over: PNG, WebP, HEIC and AVIF have no reduced decode, so the whole picture
# decodes before it is scaled, at 6-15 bytes a pixel (lossless WebP the most: a 3.5 KB 9400x9500 one took 1.4 GB).
# 6 times the server's 8.3 MP is 49.8 MP: a 48 MP phone HEIC (8064x6048) still fits (6 times the scan's 16.8 MP
# is past PIL's 89.5 MP, which bounds it there).
STILL_WHOLE_LIMIT = 6
# ... and never over this many pixels, whatever max_pixels: 6 times the scan's 16.8 MP is past PIL's 89.5 MP, where
# the same 3.5 KB WebP of 89 MP still took 1.4 GB in `score` and `scan`. 50 MP holds a 48 MP phone HEIC (8064x6048)
# at up to ~760 MiB (a lossless WebP; a PNG 300 MiB)
STILL_WHOLE_MAX_PIXELS = 50_000_000
# formats ``still_reduction`` drafts: decoded reduced
DRAFTED = ("JPEG", "MPO")


def jpeg_scans(data: bytes, stop_after: int) -> int:
    """Start-of-scan segments from SOI to EOI as libjpeg meets them (segments skipped by their length, entropy-coded
    data up to the next marker), counted up to ``stop_after``."""
    scans, at = 0, 2
    while scans < stop_after and (found := _JPEG_MARKER.search(data, at)):
        marker = data[found.start() + 1]
        if marker == 0xD9:  # end of image: what follows (an MPO's other pictures) is not decoded
            break
        at = found.end()
        if marker != 0x01:  # every marker but TEM has a length, its own two bytes included
            at += int.from_bytes(data[at:at + 2], "big")
        scans += marker == 0xDA
    return scans


def image_to_rgb(image) -> np.ndarray:
    """A PIL image in any mode PNG, JPEG or WebP produce → (H, W, 3) uint8 RGB.

    16-bit grey is scaled to 8 bits (PIL's own conversion clips it, turning most pixels white);
    transparency is composited over white (dropping alpha would show whatever colour transparent pixels
    happen to hold, often black); CMYK, palette, 1-bit and grey go through PIL's conversion.
    """
    from PIL import Image

    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        wide = np.asarray(image).astype(np.int64).clip(0, 65535)
        grey = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def still_reduction(image, config: DecodeConfig) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(the size to scale it to, its size as shown) for a still over ``max_pixels`` by at most
    ``STILL_REDUCE_LIMIT`` (JPEG) or ``STILL_WHOLE_LIMIT`` (the rest); None for one within it and for animations
    (their frames are held to ``max_pixels``). Refuses the rest from the header. A JPEG is drafted first: libjpeg's
    DCT scaling by 1/2, 1/4 or 1/8, never below that size, so the pixels it drops are never decoded."""
    from PIL import ExifTags, Image

    width, height = image.size
    if count_frames(image) > 1 or width * height <= config.max_pixels:
        check_pixels(width, height, config)
        return None
    drafted = image.format in DRAFTED
    times = STILL_REDUCE_LIMIT if drafted else STILL_WHOLE_LIMIT
    bomb = Image.MAX_IMAGE_PIXELS or math.inf
    ceiling = times * config.max_pixels if drafted else min(times * config.max_pixels, STILL_WHOLE_MAX_PIXELS)
    if width * height > min(ceiling, bomb):
        limit = (f"the {bomb}-pixel decompression-bomb limit (PIL's)" if bomb < ceiling
                 else f"the {ceiling}-pixel limit for photos")
        how = "a JPEG is decoded reduced, then" if drafted else f"a {image.format} is decoded whole, then"
        raise MediaTooLargeError(f"resolution {width}x{height} is over {limit} ({how} scaled down to the "
                                 f"{config.max_pixels}-pixel limit from at most {times} times it)")
    turned = image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)  # as ImageOps.exif_transpose turns
    scale = math.sqrt(config.max_pixels / (width * height))
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    if drafted:
        image.draft(image.mode, size)
    return size, (height, width) if turned else (width, height)


def scaled(image, size: tuple[int, int] | None):
    """``image`` resized to ``size`` (Lanczos: least loss of the fine detail the classifier reads; a palette or
    1-bit image first in the mode ``image_to_rgb`` would give it); as it is when ``size`` is None or its own."""
    from PIL import Image

    if size is None or image.size == size:
        return image
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    elif image.mode == "1":
        image = image.convert("L")
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


@functools.cache
def _heif_opener() -> None:
    """Teach PIL to open HEIC (AVIF it reads itself); pi-heif is libheif's decode-only build (no GPL encoder)."""
    import pi_heif

    pi_heif.register_heif_opener()


def count_frames(image) -> int:
    """An animation's frames; 1 for a still, and for formats whose extra images are not frames."""
    return int(getattr(image, "n_frames", 1) or 1) if image.format in ANIMATED else 1


def read_frames(image, wanted: np.ndarray, work: DecodeWork,
                size: tuple[int, int] | None = None) -> tuple[SampledFrames, np.ndarray]:
    """(the ``wanted`` frames upright in RGB, slot i: ``wanted[i]``; every frame's display time in ms), in one
    pass from the first frame: an animation's frames are drawn over the ones before, and PIL knows a frame's
    duration only once it has decoded it. Each frame is drawn on the whole canvas: that is its cost to ``work``.
    ``size``: a still's, scaled down (``still_reduction``)."""
    from PIL import ImageOps

    count = count_frames(image)
    work.plan(count, image.width, image.height, "animation")
    slots = {int(i): slot for slot, i in enumerate(wanted)}
    sampled = SampledFrames(len(slots))
    durations = []
    for i in range(count):
        work.spend(image.width * image.height)
        image.seek(i)
        image.load()
        durations.append(float(image.info.get("duration") or 0))  # a still has none
        if i in slots:
            sampled.put(slots[i], image_to_rgb(ImageOps.exif_transpose(scaled(image, size))))
    return sampled, np.array(durations)


def _sampled(image, config: DecodeConfig, work: DecodeWork,
             size: tuple[int, int] | None) -> tuple[SampledFrames, np.ndarray, np.ndarray]:
    """(frames kept, their indices, every frame's start in seconds then the last one's end). The first pass keeps
    frames by number; a second reads the frames evenly spaced in time where uneven durations move the samples."""
    count = count_frames(image)  # from the header: no frame is decoded yet
    # the lower of the two: a video's frame limit (the server's 36,000) is no bound on reading every frame
    limit = min(config.max_frames or MAX_ANIMATION_FRAMES, MAX_ANIMATION_FRAMES)
    if count > limit:
        raise MediaTooLargeError(f"animation has {count} frames, over the {limit}-frame limit")
    by_number = sample_indices(count, config.num_frames)
    sampled, durations = read_frames(image, by_number, work, size)
    starts = np.concatenate([[0.0], np.cumsum(durations)]) / 1000
    indices = sample_times(starts[:-1], config.num_frames)
    if not np.array_equal(indices, by_number):
        sampled = None  # its frames go before the second pass allocates its own
        sampled = read_frames(image, indices, work, size)[0]
    return sampled, indices, starts


def decode_image(data: bytes, mime: str, config: DecodeConfig, work: DecodeWork | None = None) -> DecodedMedia:
    from PIL import Image, UnidentifiedImageError

    work = work or DecodeWork(config)
    if mime == "image/jpeg" and jpeg_scans(data, MAX_JPEG_SCANS + 1) > MAX_JPEG_SCANS:
        raise MediaTooLargeError(f"JPEG has more than {MAX_JPEG_SCANS} scans (a progressive JPEG has about 10)")
    if mime == "image/heic":
        _heif_opener()
    with media_errors("image"):  # PIL raises many types for bad files
        try:
            with Image.open(io.BytesIO(data)) as image:
                reduction = still_reduction(image, config)
                sampled, indices, starts = _sampled(image, config, work, reduction and reduction[0])
        except Image.DecompressionBombError as exc:
            raise MediaTooLargeError(f"image is a decompression bomb: {exc}") from exc
        except UnidentifiedImageError:  # its message is the reader's repr, a heap address
            raise MediaError("corrupt or unreadable image: not recognised as the image type its bytes start as "
                             "(truncated or damaged)") from None
    count = len(starts) - 1
    duration = float(starts[-1]) if count > 1 else 0.0  # a still's own duration (AVIF says 1 s) means nothing
    check_duration(duration, config)
    frames, _ = sampled.result()  # every wanted frame: the animation has them all, or reading it failed
    # a scaled-down still keeps its own size: boxes are in its pixels (the detector maps them, as for split-plan frames)
    width, height = reduction[1] if reduction else (frames.shape[2], frames.shape[1])
    return DecodedMedia(frames, indices, starts[indices].astype(np.float32), count / duration if duration else 0.0,
                        count, duration, width, height, "image", mime)
