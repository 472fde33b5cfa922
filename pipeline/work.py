"""How much decoding one object may cost: a budget of decoded pixels, and the request's deadline.

The header limits (pixels, duration, frames) bound what is kept, not the work to get it: a 125 KB 4K Matroska
of 3,000 frames with one keyframe made the decoder go through all 3,000 to reach its samples (11-15 s), a 702 KB
APNG of 10,000 1x1 frames on a 4K canvas composited 10,000 4K frames (42 s). Frames decoded × their pixels are
refused before decoding where the plan already exceeds the budget, and counted frame by frame as they decode,
where the request's deadline is checked too (serve; a scan has none).
"""

from __future__ import annotations

import time

from pipeline.config import DecodeConfig
from pipeline.errors import DeadlineExceededError, MediaTooLargeError

# The limit is a setting, ``decode.max_decoded_pixels``: none by default (a scan decodes what its size and
# duration limits let in, as before: a one-hour MPEG-TS broadcast has no index to seek by and decodes every frame
# up to its last sample), 19.9 gigapixels on the server (``serve.max_decoded_pixels``: 75 4K frames for each of
# 32 samples). A 10-minute 1080p video with a keyframe every 10 s (x264's default is 250 frames, phones 1-2 s)
# needs at most 32 x 300 frames of 1080p, half that on average; what needs more has keyframes sparser than that
# at a higher resolution, or no index (MPEG-TS, AVI, MPEG-PS: about 5 minutes of 1080p at 30 fps).


def budget_pixels(config: DecodeConfig) -> float:
    """The pixels one object may decode under ``config`` (infinite without a limit)."""
    return float("inf") if config.max_decoded_pixels is None else config.max_decoded_pixels


# frames decoded / frames planned was 0.53-1.0 over the decode review's fixtures (B-frames skipped unless sampled)
SKIPPABLE_SLACK = 2


def _amount(pixels: float) -> str:
    return f"{pixels / 1e9:.3g} gigapixels" if pixels >= 1e8 else f"{pixels:,.0f} pixels"


# The ingress cancels its downstream calls at the request's deadline, and the decoder's deadline (what was left of it
# when the call arrived) ends a transit later: a stop() this close to the deadline is that 504, not a cancellation.
CANCEL_GRACE_S = 0.5


class Deadline:
    """When a request's work must end, on ``time.monotonic()``'s clock; ``stop()`` ends it at once (the call was
    cancelled: the client went away, or the ingress gave up). Decodes check it at every frame, object-store reads
    (``pipeline.media.read_media_bytes``) while they wait."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds
        self.cancelled = False

    def stop(self) -> None:
        if self.at != float("-inf"):  # once: a second stop() must not forget why the first came
            self.cancelled = time.monotonic() < self.at - CANCEL_GRACE_S
            self.at = float("-inf")

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def why(self) -> str:
        """What ended the work, for its error and the log: a client that went away is not a deadline."""
        return "the request was cancelled" if self.cancelled else "the request's deadline passed"


class DecodeWork:
    """What one object's decode has spent of its budget, and its deadline (None: decode to the end)."""

    def __init__(self, config: DecodeConfig, deadline: Deadline | None = None):
        self.limit = budget_pixels(config)
        self.spent = 0
        self.deadline = deadline

    def plan(self, frames: int, width: int, height: int, what: str, skippable: bool = False) -> None:
        """Refuse before decoding when ``frames`` of ``width``x``height`` would exceed the budget. ``skippable``: the
        stream has B-frames, which the decoder skips unless sampled (PyAV with timestamps: about half of an x264
        stream's frames), so ``frames`` is an upper bound; refused here only past ``SKIPPABLE_SLACK`` times the
        budget, the frames it really decodes are counted against the budget itself (``spend``)."""
        pixels = frames * width * height
        if self.spent + pixels > self.limit * (SKIPPABLE_SLACK if skippable else 1):
            raise MediaTooLargeError(
                f"{what} needs {frames} frames of {width}x{height} decoded to reach its samples ({_amount(pixels)}), "
                f"over the decode limit of {_amount(self.limit)} (decode.max_decoded_pixels)")

    def spend(self, pixels: int) -> None:
        """One more frame decoded: stop past the budget or the deadline."""
        self.check_deadline()
        self.spent += pixels
        if self.spent > self.limit:
            raise MediaTooLargeError(f"decoding needs more than the decode limit of {_amount(self.limit)} "
                                     "(decode.max_decoded_pixels)")

    def check_deadline(self) -> None:
        if self.deadline is not None and self.deadline.passed():
            raise DeadlineExceededError(f"decoding stopped: {self.deadline.why()}")
