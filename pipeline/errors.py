"""Typed errors: every failure a caller should turn into a clear message instead of a crash."""

from __future__ import annotations


class DeepfakeStreamError(Exception):
    """Base class for errors that carry a message meant for the user."""


class MediaError(DeepfakeStreamError):
    """The input could not be read as an image or video (missing, empty, corrupt, unsupported)."""


class UnsupportedMediaError(MediaError):
    """The bytes are not an image or video type we decode."""


class MediaTooLargeError(MediaError):
    """The media exceeds a configured limit (bytes, pixels, duration)."""


class CheckpointError(DeepfakeStreamError):
    """A checkpoint is missing, malformed, or does not match the architecture."""


class NoTrainedModelError(CheckpointError):
    """No trained detector is installed, so no honest score can be given."""
