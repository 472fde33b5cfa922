"""Re-encode every clip under a folder once more, as a platform's re-upload would (libx264, CRF 28 by default,
`veryfast`, full frame rate, one thread), keeping the folder layout and labels.csv, so a split of the copy holds
the same identities as the original's. Used to measure robustness to recompression (docs/training.md, v23).

With ``--anamorphic``, each clip is instead stored as PAL SD does it: always 720x576, with pixels as wide as keeps the
picture's own shape (64:45 for 16:9, 16:15 for 4:3: a 16:9 picture squeezed to 70% of its width and 80% of its
height, stretched back by players), CRF 18; used to measure the decoders' square-pixel correction
(docs/training.md, "Inputs unlike the training data").

Usage: .venv/bin/python scripts/reencode.py ../shared/data/ffpp-c23 data-cache/ffpp-c23-crf28 [--crf 28] [--anamorphic]
Clips already re-encoded are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import shutil
import time
from fractions import Fraction
from pathlib import Path


PAL = (720, 576)


def reencode(src: Path, dst: Path, crf: int, anamorphic: bool = False) -> None:
    import av

    tmp = dst.with_suffix(".tmp" + dst.suffix)
    with av.open(str(src)) as inp, av.open(str(tmp), "w") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream("libx264", rate=ist.average_rate, options={"crf": str(crf), "preset": "veryfast"})
        ost.width, ost.height, ost.pix_fmt = ist.codec_context.width, ist.codec_context.height, "yuv420p"
        if anamorphic:
            shape = Fraction(ist.codec_context.width * PAL[1], ist.codec_context.height * PAL[0]).limit_denominator(100)
            ost.width, ost.height, ost.codec_context.sample_aspect_ratio = *PAL, shape
        ost.thread_count = 1
        for frame in inp.decode(ist):  # a fresh frame: the source's timestamps would not fit the new stream
            fresh = av.VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")
            if anamorphic:
                fresh = fresh.reformat(width=ost.width, height=ost.height, interpolation="AREA")
            for packet in ost.encode(fresh):
                out.mux(packet)
        for packet in ost.encode():
            out.mux(packet)
    tmp.rename(dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--crf", type=int, default=None, help="default 28 (18 with --anamorphic)")
    ap.add_argument("--anamorphic", action="store_true", help="store as PAL SD (720x576, non-square pixels)")
    args = ap.parse_args()
    crf = args.crf if args.crf is not None else (18 if args.anamorphic else 28)
    args.dest.mkdir(parents=True, exist_ok=True)
    for extra in args.source.glob("*.csv"):
        shutil.copy2(extra, args.dest / extra.name)
    start = time.time()
    clips = sorted(args.source.rglob("*.mp4"))
    for n, clip in enumerate(clips, 1):
        out = args.dest / clip.relative_to(args.source)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.exists():
            reencode(clip, out, crf, args.anamorphic)
        print(f"{n}/{len(clips)} {clip.relative_to(args.source)} ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
