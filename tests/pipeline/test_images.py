"""Still images (pipeline/images.py): each unusual mode has a defined outcome (16-bit grey, palette, CMYK,
transparency), EXIF orientation is applied, phone formats (HEIC, 10-bit HEIC, AVIF) are read upright, a JPEG of
too many scans is refused before decoding and unreadable bytes get a message without internals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from media_fixtures import decoded_frame as _decoded, encode_image as _encode_image, one_face as _one_face, repeated_scans_jpeg
from pipeline.batch import object_column
from pipeline.config import DecodeConfig
from pipeline.decode import DecodeStage, decode_bytes
from pipeline.errors import MediaError, MediaTooLargeError
from pipeline.images import MAX_JPEG_SCANS, STILL_REDUCE_LIMIT, STILL_WHOLE_LIMIT, jpeg_scans, still_reduction


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


# ---- photos over the pixel limit: scaled down, not refused --------------------------------------------------


@pytest.mark.parametrize("encode", [
    lambda picture: _encode_image(picture, "JPEG", quality=95),  # drafted: libjpeg decodes it at 1/2
    lambda picture: _encode_image(picture.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
    lambda picture: _heic(picture, quality=90),
], ids=["jpeg", "palette png", "heic"])
def test_a_photo_over_the_pixel_limit_is_scaled_down_not_refused(astronaut, detector, encode):
    """A 12-24 MP phone photo was refused over the 8.3 MP (serve) or 16.8 MP (scan) limit; scaled down to it, it
    keeps its own size, so the boxes stay in its pixels."""
    data = encode(astronaut)
    media = decode_bytes(data, DecodeConfig(max_pixels=60_000))  # 262,144 pixels: 4.4 times over
    frame = media.frames[0]
    assert (media.width, media.height) == (512, 512) and frame.shape == (244, 244, 3)
    full = Image.fromarray(decode_bytes(data, DecodeConfig()).frames[0]).resize((244, 244), Image.Resampling.LANCZOS)
    assert np.abs(frame.astype(int) - np.asarray(full)).mean() < 4
    (boxes, probs, _), = detector.detect(frame[None], source_size=(512, 512))
    assert len(boxes) == 1 and probs[0] > 0.95 and 150 < boxes[0][0] < 200 and 40 < boxes[0][1] < 90  # source pixels


def test_a_turned_photo_scaled_down_keeps_its_upright_size(astronaut):
    wide = astronaut.crop((0, 0, 512, 384))  # shown 512 x 384, stored sideways (384 x 512) with EXIF "turn"
    rotated, exif = _sideways(wide)
    media = decode_bytes(_encode_image(rotated, "JPEG", quality=95, exif=exif), DecodeConfig(max_pixels=50_000))
    assert (media.width, media.height) == (512, 384)
    assert media.frames.shape[1:] == (193, 258, 3) and 193 * 258 <= 50_000
    small = np.asarray(wide.resize((258, 193), Image.Resampling.LANCZOS))
    assert np.abs(media.frames[0].astype(int) - small).mean() < 6


def test_the_scaled_down_photo_is_cut_and_boxed_as_the_full_one(astronaut):
    """Faces are detected and cropped on the scaled-down still (the detector maps its source-pixel boxes, as for
    the split scan plan's shrunk frames): the boxes land where the full photo's do."""
    from pipeline.config import DetectConfig
    from pipeline.detect import DetectStage
    from pipeline.tracking import box_iou

    big = astronaut.resize((1536, 1536), Image.Resampling.LANCZOS)
    data = _encode_image(big, "JPEG", quality=95)
    stage = DetectStage(DetectConfig(), "cpu", crop_size=224)
    full = decode_bytes(data, DecodeConfig())
    half = decode_bytes(data, DecodeConfig(max_pixels=1_000_000))
    assert half.frames.shape[1:3] == (1000, 1000) and (half.width, half.height) == (1536, 1536)
    a, b = stage.faces_of(full.frames, (full.width, full.height)), stage.faces_of(half.frames, (half.width, half.height))
    assert len(a["face_boxes"]) == len(b["face_boxes"]) == 1 and box_iou(a["face_boxes"], b["face_boxes"])[0, 0] > 0.95
    assert b["crops"].shape == (1, 224, 224, 3)
    assert np.abs(a["crops"].astype(int) - b["crops"].astype(int)).mean() < 8


@pytest.mark.parametrize("fmt, cut, times", [("PNG", 100, STILL_WHOLE_LIMIT), ("JPEG", 1000, STILL_REDUCE_LIMIT)])
def test_a_photo_far_over_the_limit_is_refused_from_its_header(astronaut, fmt, cut, times):
    """Past 16 times the limit for a JPEG, 6 times for the rest (or PIL's decompression-bomb limit) a still is
    refused before a pixel decodes: here only its header is left, which a decode would call corrupt."""
    header = _encode_image(astronaut, fmt)[:cut]
    least = -(-512 * 512 // times)  # the lowest limit that lets 512x512 in
    refused = f"over the {times * (least - 1)}-pixel limit for photos \\(a {fmt} is decoded"
    with pytest.raises(MediaTooLargeError, match=refused):
        decode_bytes(header, DecodeConfig(max_pixels=least - 1))
    with pytest.raises(MediaError, match="corrupt"):
        decode_bytes(header, DecodeConfig(max_pixels=least))  # within it: it would decode


@pytest.mark.parametrize("bomb", [
    lambda flat: _encode_image(flat, "WEBP", lossless=True),
    lambda flat: _encode_image(flat.convert("P", palette=Image.Palette.ADAPTIVE, colors=2), "PNG", transparency=0),
], ids=["lossless webp", "palette png with transparency"])
def test_a_bomb_without_a_reduced_decode_is_refused_where_a_jpeg_scales_down(bomb):
    """The security review's 3.5 KB lossless WebP of 9400x9500 was within 16 times the server's limit and PIL's
    bomb limit, so it decoded whole before scaling: 1.4 GB (an 11 KB palette PNG: 1 GB). Only a JPEG decodes
    reduced; the others are held to 6 times the limit. Here 10 times over, a few hundred bytes."""
    flat = Image.new("RGB", (800, 800), (10, 20, 30))
    config = DecodeConfig(max_pixels=64_000)
    data = bomb(flat)
    assert len(data) < 2000
    refused = "800x800 is over the 384000-pixel limit for photos \\(a (WEBP|PNG) is decoded whole"
    with pytest.raises(MediaTooLargeError, match=refused):
        decode_bytes(data, config)
    jpeg = _encode_image(flat, "JPEG")
    with Image.open(io.BytesIO(jpeg)) as image:
        assert still_reduction(image, config)[0] == (252, 252) and image.size == (400, 400)  # drafted: 1/2 decodes
    media = decode_bytes(jpeg, config)
    assert media.frames.shape == (1, 252, 252, 3) and (media.width, media.height) == (800, 800)


def test_a_whole_decoded_still_is_held_to_an_absolute_size_whatever_the_limit(monkeypatch):
    """6 times the scan's 16.8 MP is past PIL's 89.5 MP, so the review's 89 MP WebP still took 1.4 GB in `scan`:
    stills decoded whole are held to STILL_WHOLE_MAX_PIXELS too (50 MP; here 300,000), a JPEG is not."""
    import pipeline.images

    monkeypatch.setattr(pipeline.images, "STILL_WHOLE_MAX_PIXELS", 300_000)
    config = DecodeConfig(max_pixels=64_000)  # 6 times: 384,000
    with pytest.raises(MediaTooLargeError, match="640x640 is over the 300000-pixel limit for photos"):
        decode_bytes(_encode_image(Image.new("RGB", (640, 640), (1, 2, 3)), "PNG"), config)
    assert decode_bytes(_encode_image(Image.new("RGB", (500, 500), (1, 2, 3)), "PNG"), config).frames.shape[0] == 1
    assert decode_bytes(_encode_image(Image.new("RGB", (640, 640), (1, 2, 3)), "JPEG"), config).frames.shape[0] == 1


def test_an_animation_over_the_pixel_limit_is_still_refused():
    from media_fixtures import animated_image

    with pytest.raises(MediaTooLargeError, match="48x32 is over the 1000-pixel limit"):
        decode_bytes(animated_image("WEBP", [100, 100, 100]), DecodeConfig(max_pixels=1000))


# ---- hostile stills ------------------------------------------------------------------------------------------


def test_a_jpeg_of_too_many_scans_is_refused_before_decoding():
    """libjpeg goes over the whole picture for every scan and bounds their number by nothing: the review's 409 KB
    4K JPEG of 30,000 repeated scans took 5-6 s to decode. A progressive JPEG has about 10."""
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    assert jpeg_scans(_encode_image(grey, "JPEG"), 1000) == 1
    assert 5 <= jpeg_scans(_encode_image(grey, "JPEG", progressive=True), 1000) <= 20
    assert jpeg_scans(repeated_scans_jpeg(200), 1000) > MAX_JPEG_SCANS
    assert decode_bytes(repeated_scans_jpeg(50), DecodeConfig()).frames.shape == (1, 64, 64, 3)  # 60 scans: read
    with pytest.raises(MediaTooLargeError, match=f"more than {MAX_JPEG_SCANS} scans") as caught:
        decode_bytes(repeated_scans_jpeg(200), DecodeConfig())
    assert caught.value.code == "media_too_large"


def test_scan_markers_inside_other_segments_are_not_counted():
    """Metadata (a comment, EXIF, an ICC profile) may hold the bytes of a scan marker; only the picture's count."""
    data = _encode_image(Image.new("RGB", (16, 16)), "JPEG", comment=b"\xff\xda" * 500)
    assert data.count(b"\xff\xda") == 501 and jpeg_scans(data, 1000) == 1
    assert decode_bytes(data, DecodeConfig()).frames.shape == (1, 16, 16, 3)


@pytest.mark.parametrize("data", [
    _encode_image(Image.new("RGB", (8, 8)), "PNG")[:30],  # a PNG cut inside its header
    b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(range(256)) * 4,  # HEIC's signature, then garbage
    b"\0\0\0\x18ftypavif\0\0\0\0avifmif1" + bytes(range(256)) * 4,
], ids=["truncated png", "garbage heic", "garbage avif"])
def test_unreadable_image_message_holds_no_object_repr(data):
    """PIL's "cannot identify image file <_io.BytesIO object at 0x7f...>" reached the API's 422 detail."""
    out = DecodeStage()({"uri": object_column(["x"]), "data": object_column([data])})
    assert out["error_code"][0] == "media_corrupt"
    assert out["error"][0] == ("corrupt or unreadable image: not recognised as the image type its bytes start as "
                               "(truncated or damaged)")
