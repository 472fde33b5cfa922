"""Media made on the fly for hostile-input tests: tiny H.264 MP4s (optionally declaring a huge frame, starting
late, variable-rate, trimmed without re-encoding), a stream that changes size, audio-only MP4s, animated images,
and cheap work bombs (a video of sparse keyframes, an APNG of tiny frames on a big canvas, a JPEG of many scans)."""

from __future__ import annotations

import io
import struct
from fractions import Fraction

import numpy as np


def encode_video(width: int = 64, height: int = 64, frames: int = 10, fps: int = 25, codec: str = "libx264",
                 format: str = "mp4", start: int = 0) -> bytes:
    """A small real video whose brightness changes each frame; ``start``: the first frame's time in frames
    (an MP4 cut from a longer recording keeps its offset, 10 s here is 250 at 25 fps)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), (i * 23) % 256, np.uint8), format="rgb24")
            if start:
                frame.pts, frame.time_base = start + i, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def m2ts(ts: bytes) -> bytes:
    """MPEG-TS ``ts`` as M2TS/AVCHD (a camcorder's .mts): each 188-byte packet behind a 4-byte header (2 copy-control
    bits, a 30-bit arrival time in 27 MHz ticks), so the sync byte 0x47 sits at 4, 196, 388..."""
    assert len(ts) % 188 == 0 and ts[0] == 0x47
    return b"".join(((i * 2700) & 0x3FFFFFFF).to_bytes(4, "big") + ts[at:at + 188]
                    for i, at in enumerate(range(0, len(ts), 188)))


def variable_rate_mp4(gaps_ms: list[int], width: int = 64, height: int = 48) -> bytes:
    """An MP4 whose frames are ``gaps_ms`` apart (a screen recording idling at 1 fps, then 30 fps); frame i's
    brightness is 23 i mod 256."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        t = 0
        for i, gap in enumerate([*gaps_ms, 0]):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), (i * 23) % 256, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            t += gap
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def size_change_ts(sizes: list[tuple[int, int]], frames_each: int = 10, fps: int = 25) -> bytes:
    """MPEG-TS whose H.264 stream changes resolution at each of ``sizes`` (width, height), as a broadcast does at
    an ad break. Each part: left half white, right half black."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *sizes[0], "yuv420p"
        for part, (width, height) in enumerate(sizes):
            encoder = av.CodecContext.create("libx264", "w")  # a new encoder per size: a new SPS mid-stream
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            encoder.time_base, encoder.framerate = Fraction(1, fps), Fraction(fps)
            image = np.zeros((height, width, 3), np.uint8)
            image[:, :width // 2] = 255
            packets = []
            for i in range(frames_each):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, fps)
                packets += encoder.encode(frame)
            for packet in packets + encoder.encode(None):
                packet.stream, packet.time_base = stream, Fraction(1, fps)
                packet.pts += part * frames_each
                packet.dts += part * frames_each
                container.mux(packet)
    return buf.getvalue()


def mjpeg_mkv(sizes: list[tuple[int, int]]) -> bytes:
    """Matroska of one grey MJPEG frame per (width, height) in ``sizes``: the container states the first, each JPEG
    its own (the security review's 6 MB file: 64x64, then two of 16000x16000)."""
    import av
    from PIL import Image

    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as container:
        stream = container.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = *sizes[0], "yuvj420p"
        for i, size in enumerate(sizes):
            jpeg = io.BytesIO()
            Image.new("L", size, 90).save(jpeg, "JPEG", quality=10)
            packet = av.Packet(jpeg.getvalue())
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, 25)
            packet.is_keyframe = True
            container.mux(packet)
    return buf.getvalue()


def trimmed_copy(mp4: bytes, frames: int) -> bytes:
    """``mp4`` cut by ``frames`` at the start without re-encoding (a stream copy from a mid-GOP point): every
    packet stays, shifted so the cut lands at 0; the muxer writes an edit list and FFmpeg marks the packets
    before it discard."""
    import av

    buf = io.BytesIO()
    with av.open(io.BytesIO(mp4)) as source, av.open(buf, "w", format="mp4") as container:
        video = source.streams.video[0]
        stream = container.add_stream_from_template(video)
        shift = round(frames / video.average_rate / video.time_base)
        for packet in source.demux(video):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = stream
            container.mux(packet)
    return buf.getvalue()


def animated_image(format: str, durations_ms: list[int], size: tuple[int, int] = (48, 32)) -> bytes:
    """An animated WebP, PNG (APNG) or AVIF: frame i's brightness is 23 i mod 256, shown ``durations_ms[i]``."""
    from PIL import Image

    frames = [Image.new("RGB", size, ((i * 23) % 256,) * 3) for i in range(len(durations_ms))]
    buf = io.BytesIO()
    lossless = {"lossless": True} if format == "WEBP" else {}
    frames[0].save(buf, format, save_all=True, append_images=frames[1:], duration=durations_ms, loop=0, **lossless)
    return buf.getvalue()


def audio_only_mp4(seconds: float = 1.0, codec: str = "aac") -> bytes:
    """An MP4 with one audio stream and no video stream."""
    import av

    buf = io.BytesIO()
    rate = 44100
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        samples = np.sin(np.arange(int(seconds * rate)) / 20).astype(np.float32)[None] * 0.3
        step = stream.codec_context.frame_size or 1024
        for start in range(0, samples.shape[1], step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + step]),
                                               format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


# ---- H.264 SPS rewriting: make a tiny, decodable-looking MP4 declare a huge frame ------------------------


class _Bits:
    def __init__(self, data: bytes):
        self.bits = "".join(f"{b:08b}" for b in data)
        self.pos = 0

    def u(self, n: int) -> int:
        value = int(self.bits[self.pos:self.pos + n], 2)
        self.pos += n
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bits[self.pos] == "0":
            zeros += 1
            self.pos += 1
        return self.u(zeros + 1) - 1


def _ue(value: int) -> str:
    code = f"{value + 1:b}"
    return "0" * (len(code) - 1) + code


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _escape(rbsp: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _resize_sps(sps: bytes, width: int, height: int) -> bytes:
    """The SPS with pic_width/height_in_mbs replaced (no cropping left: sizes must be multiples of 16)."""
    r = _Bits(_unescape(sps))
    r.u(8)
    profile = r.u(8)
    r.u(16)
    r.ue()
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        if r.ue() == 3:
            r.u(1)
        r.ue(), r.ue(), r.u(1)
        assert r.u(1) == 0, "scaling matrices not handled"
    r.ue()
    poc_type = r.ue()
    assert poc_type != 1, "poc type 1 not handled"
    if poc_type == 0:
        r.ue()
    r.ue(), r.u(1)
    head = r.bits[:r.pos]
    r.ue(), r.ue()
    frame_mbs_only = r.u(1)
    rest = r.bits[r.pos:].rstrip("0")  # ends with the rbsp stop bit
    assert frame_mbs_only, "interlaced not handled"
    bits = head + _ue(width // 16 - 1) + _ue(height // 16 - 1) + "1" + rest
    bits += "0" * (-len(bits) % 8)
    return _escape(bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)))


_PARENTS = {b"moov": 8, b"trak": 8, b"mdia": 8, b"minf": 8, b"stbl": 8, b"stsd": 16, b"avc1": 86}


def _boxes(data: bytes, start: int, end: int, path: tuple = ()):
    while start < end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        yield path + (kind,), start, size
        if kind in _PARENTS:
            yield from _boxes(data, start + _PARENTS[kind], start + size, path + ((kind, start),))
        start += size


def declare_size(mp4: bytes, width: int, height: int) -> bytes:
    """Rewrite a libx264 MP4 (moov after mdat) so its SPS, sample entry and track header declare ``width``x``height``."""
    data = bytearray(mp4)
    boxes = list(_boxes(mp4, 0, len(mp4)))
    (path, avcc, _), = [b for b in boxes if b[0][-1] == b"avcC"]
    assert mp4.find(b"mdat") < mp4.find(b"moov"), "moov must follow mdat (chunk offsets are not rewritten)"
    sps_len = struct.unpack(">H", mp4[avcc + 14:avcc + 16])[0]
    new_sps = _resize_sps(mp4[avcc + 16:avcc + 16 + sps_len], width, height)
    delta = len(new_sps) - sps_len
    for path_, start, size in boxes:
        if path_[-1] == b"tkhd":
            data[start + size - 8:start + size] = struct.pack(">II", width << 16, height << 16)
        if path_[-1] == b"avc1":
            data[start + 32:start + 36] = struct.pack(">HH", width, height)
    for _, start in path[:-1]:  # every box that contains the avcC grows by delta
        data[start:start + 4] = struct.pack(">I", struct.unpack(">I", data[start:start + 4])[0] + delta)
    data[avcc:avcc + 4] = struct.pack(">I", struct.unpack(">I", data[avcc:avcc + 4])[0] + delta)
    data[avcc + 14:avcc + 16 + sps_len] = struct.pack(">H", len(new_sps)) + new_sps
    return bytes(data)


def decoded_frame(data: bytes) -> np.ndarray:
    """The first sampled frame of ``data`` under default settings."""
    from pipeline.config import DecodeConfig
    from pipeline.decode import decode_bytes

    return decode_bytes(data, DecodeConfig()).frames[0]


def one_face(detector, frame: np.ndarray) -> None:
    """Exactly one face, confidently, where it is in the upright astronaut photo."""
    (boxes, probs, _), = detector.detect(frame[None])
    assert len(boxes) == 1 and probs[0] > 0.95
    x1, y1, x2, y2 = boxes[0]
    assert 150 < x1 < 200 and 40 < y1 < 90


def encode_image(image, format: str, **kwargs) -> bytes:
    """A PIL image saved as ``format`` (PNG, JPEG, …) in memory."""
    buf = io.BytesIO()
    image.save(buf, format, **kwargs)
    return buf.getvalue()


# ---- work bombs: little data, much decoding (the security review's payloads, small) -----------------------


class _Unseekable:
    """A file the muxer cannot seek back in, as a live stream: Matroska then states no duration, count or cues."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        return self.file.write(data)


def sparse_keyframes_mkv(width: int, height: int, frames: int, fps: int = 30, keyint: int | None = None,
                         streamed: bool = False) -> bytes:
    """Matroska of ``frames`` frames, one H.264 keyframe every ``keyint`` (None: only the first) and the same tiny
    P-frame between, so every frame decodes to the same picture: a few bytes a frame, a whole frame of decoding each.
    ``streamed``: written as a live stream, so the header states neither duration nor frame count."""
    import av

    mp4 = io.BytesIO()
    with av.open(mp4, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"g": "100000", "bf": "0", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        picture = np.zeros((height, width, 3), np.uint8)
        picture[height // 4:height // 2, width // 4:width // 2] = 200
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    mp4.seek(0)
    with av.open(mp4) as source:
        video = source.streams.video[0]
        (key, _), *_, (step, _) = [(bytes(p), p.is_keyframe) for p in source.demux(video) if p.size]
        out = io.BytesIO()
        with av.open(_Unseekable(out) if streamed else out, "w", format="matroska") as container:
            stream = container.add_stream_from_template(video)
            for i in range(frames):
                is_key = i % (keyint or frames) == 0
                packet = av.Packet(key if is_key else step)
                packet.stream, packet.time_base = stream, Fraction(1, 1000)
                packet.pts = packet.dts = round(i * 1000 / fps)
                packet.is_keyframe = is_key
                container.mux(packet)
    return out.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def canvas_apng(width: int, height: int, frames: int) -> bytes:
    """An APNG of ``frames`` frames on a ``width``x``height`` canvas: a blank first frame, then 1x1 frames of a few
    bytes each, every one composited over the whole canvas."""
    import zlib

    chunks = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)),
              _png_chunk(b"acTL", struct.pack(">II", frames, 0)),
              _png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", 0, width, height, 0, 0, 1, 30, 0, 0)),
              _png_chunk(b"IDAT", zlib.compress((b"\0" + b"\0" * width * 4) * height, 9))]
    dot, sequence = zlib.compress(b"\0\xff\x00\x00\xff"), 1
    for i in range(1, frames):
        chunks.append(_png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", sequence, 1, 1, i % width, 0, 1, 30, 0, 0)))
        chunks.append(_png_chunk(b"fdAT", struct.pack(">I", sequence + 1) + dot))
        sequence += 2
    return b"".join(chunks + [_png_chunk(b"IEND", b"")])


def scan_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each scan of a JPEG: its SOS segment and the entropy-coded data after it."""
    scans, at = [], 2
    while data[at + 1] != 0xD9:
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2:at + 4])[0]
        end = at + 2 + length
        if marker == 0xDA:  # entropy-coded data runs to the next marker that is not 0xFF00 or a restart
            while data[end] != 0xFF or data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                end += 1
            scans.append((at, end))
        at = end
    return scans


def repeated_scans_jpeg(repeats: int, size: int = 64) -> bytes:
    """A progressive JPEG with its smallest refinement scan repeated ``repeats`` times more: libjpeg decodes every
    one over the whole picture."""
    from PIL import Image

    data = encode_image(Image.new("RGB", (size, size), (128, 128, 128)), "JPEG", progressive=True, quality=50)
    start, end = min(scan_spans(data)[1:], key=lambda scan: scan[1] - scan[0])
    eoi = data.rindex(b"\xff\xd9")
    return data[:eoi] + data[start:end] * repeats + data[eoi:]
