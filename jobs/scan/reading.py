"""The scan's decode stage: it reads the listing's URIs as they are. A listed URI names its key exactly, so
it is never normalised (``pipeline.media.normalize_uri`` is for URIs a user typed, as ``score`` and the
server take them; decoding ``%41`` in S3 key ``clip%41.mp4`` would read ``clipA.mp4``, another object).
Imported by the actors only (``jobs.scan.plan.read_literally`` names it)."""

from __future__ import annotations

from pipeline.decode import DecodedMedia, DecodeStage
from pipeline.media import read_media_bytes


class ListedDecodeStage(DecodeStage):
    """``DecodeStage`` reading each URI literally (it came from the listing)."""

    def decode_one(self, uri: str, data: bytes | None = None) -> DecodedMedia:
        if data is None:
            data = read_media_bytes(uri, self.config.max_bytes, self.storage_options, literal=True)
        return super().decode_one(uri, data)


__all__ = ["ListedDecodeStage"]
