"""Still images (pipeline/images.py): each unusual mode has a defined outcome (16-bit grey, palette, CMYK,
transparency), EXIF orientation is applied, and phone formats (HEIC, 10-bit HEIC, AVIF) are read upright."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from media_fixtures import decoded_frame as _decoded, encode_image as _encode_image, one_face as _one_face
from pipeline.config import DecodeConfig
from pipeline.decode import decode_bytes


def test_16_bit_grey_png_is_scaled_not_clipped(astronaut, detector):
    grey = np.asarray(astronaut.convert("L"))
    wide = Image.fromarray(grey.astype(np.uint16) * 257)
    assert wide.mode == "I;16"
    frame = _decoded(_encode_image(wide, "PNG"))
    assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8
    assert np.abs(frame[..., 0].astype(int) - grey).max() <= 1 and (frame == 255).mean() < 0.01
    _one_face(detector, frame)


def test_palette_png_keeps_its_colours(astronaut, detector):
    frame = _decoded(_encode_image(astronaut.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"))
    assert np.abs(frame.astype(int) - np.asarray(astronaut)).mean() < 6
    _one_face(detector, frame)


def test_cmyk_jpeg_is_converted_to_rgb(astronaut, detector):
    data = _encode_image(astronaut.convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    frame = _decoded(data)
    assert np.abs(frame.astype(int) - np.asarray(astronaut)).mean() < 4
    _one_face(detector, frame)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_composited_on_white(astronaut, mode):
    rgba = astronaut.convert("RGBA")
    pixels = np.asarray(rgba).copy()
    pixels[:, :256, :3] = 0  # the hidden colour under the transparent half is black
    pixels[:, :256, 3] = 0
    image = Image.fromarray(pixels, "RGBA")
    image = image.convert("LA") if mode == "LA" else image
    kwargs = {}
    if mode == "P":  # a palette whose entry 0 is transparent
        image = Image.fromarray(np.where(pixels[..., 3] == 0, 0, 1).astype(np.uint8), "P")
        image.putpalette([0, 0, 0, 90, 120, 200] + [0] * 762)
        kwargs = {"transparency": 0}
    frame = _decoded(_encode_image(image, "PNG", **kwargs))
    assert frame.shape == (512, 512, 3)
    assert (frame[:, :256] == 255).all()  # transparent: white, not the black underneath
    assert frame[:, 256:].mean() < 200  # the opaque half is still the picture


def _sideways(astronaut: Image.Image) -> tuple[Image.Image, bytes]:
    """The photo stored sideways, as phones store it, and EXIF saying "rotate 90° clockwise to view"."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return astronaut.rotate(90, expand=True), exif.tobytes()


def test_exif_rotation_is_applied(astronaut, detector):
    rotated, exif = _sideways(astronaut)
    frame = _decoded(_encode_image(rotated, "JPEG", quality=95, exif=exif))
    assert frame.shape == (512, 512, 3)
    assert np.abs(frame.astype(int) - np.asarray(astronaut)).mean() < 4
    _one_face(detector, frame)


# ---- phone photo formats: HEIC (iPhone's default) and AVIF -----------------------------------------------


def _heic(picture, **kwargs) -> bytes:
    """A PIL image or a pillow_heif file encoded as HEIC (the test extra's encoder; the pipeline reads with
    pi-heif, which cannot write)."""
    import pillow_heif

    buf = io.BytesIO()
    heif = pillow_heif.from_pillow(picture) if isinstance(picture, Image.Image) else picture
    heif.save(buf, format="HEIF", **kwargs)
    return buf.getvalue()


def test_heic_photo_is_read_upright(astronaut, detector):
    rotated, exif = _sideways(astronaut)
    data = _heic(rotated, quality=90, exif=exif)
    assert data[4:12] == b"ftypheic"
    media = decode_bytes(data, DecodeConfig())
    assert (media.kind, media.mime) == ("image", "image/heic")
    assert np.abs(media.frames[0].astype(int) - np.asarray(astronaut)).mean() < 4
    _one_face(detector, media.frames[0])


def test_ten_bit_heic_is_scaled_to_eight_bits(astronaut, detector):
    import pillow_heif

    wide = (np.asarray(astronaut).astype(np.uint16) * 257)  # 16-bit RGB, stored at 10 bits as HDR phones do
    frame = _decoded(_heic(pillow_heif.from_bytes("RGB;16", astronaut.size, wide.tobytes()), quality=90))
    assert frame.dtype == np.uint8 and np.abs(frame.astype(int) - np.asarray(astronaut)).mean() < 4
    _one_face(detector, frame)


def test_avif_photo_is_read_upright(astronaut, detector):
    rotated, exif = _sideways(astronaut)
    data = _encode_image(rotated, "AVIF", quality=90, exif=exif)
    # Pillow's writer turns the EXIF orientation into the container's rotation box (irot) and keeps no EXIF,
    # so this checks that a turn stored as irot alone (as phones and encoders write it) is honoured
    assert b"irot" in data and b"Exif" not in data
    media = decode_bytes(data, DecodeConfig())
    assert (media.kind, media.mime) == ("image", "image/avif")
    assert np.abs(media.frames[0].astype(int) - np.asarray(astronaut)).mean() < 4
    _one_face(detector, media.frames[0])
