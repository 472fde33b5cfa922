"""Time ``deepfakestream score``'s in-process graph on real face videos (per video and per stage).

Usage: .venv/bin/python bench/score.py [VIDEO ...]   (default: 6 FaceForensics++ originals/fakes from
../shared/data/ffpp-c23, or $DFS_SHARED_DATA/ffpp-c23; else the bundled clips). Prints a Markdown table;
results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))

from bench_common import shared_data  # noqa: E402

from pipeline.config import load_settings  # noqa: E402
from pipeline.graph import ScoringPipeline  # noqa: E402


def main(paths: list[str]) -> None:
    if not paths:
        data = shared_data() / "ffpp-c23"
        paths = [str(p) for p in sorted((data / "original").glob("*.mp4"))[:3] + sorted((data / "Deepfakes").glob("*.mp4"))[:3]]
        if not paths:  # a clone without ../shared: the bundled clips (smaller than FF++'s 720p, so faster)
            paths = [str(p) for p in sorted((ROOT / "pipeline" / "samples").glob("*.mp4"))]
            print(f"no {data}: timing the bundled clips {[Path(p).name for p in paths]}", file=sys.stderr)
    start = time.perf_counter()
    scorer = ScoringPipeline(load_settings())
    load_s = time.perf_counter() - start
    scorer.score(paths[0])  # warm-up (first MTCNN/torch call allocates)
    rows = []
    for path in paths:
        t0 = time.perf_counter()
        result = scorer.score(path)
        wall = time.perf_counter() - t0
        rows.append((Path(path).name, result, wall))
    print(f"model load: {load_s:.1f} s; torch threads: {__import__('torch').get_num_threads()}; frames/video: {scorer.settings.decode.num_frames}\n")
    print("| video | resolution | duration | faces | label | wall s | decode ms | detect ms | classify ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r, wall in rows:
        if r.label == "ERROR":  # a missing or unreadable file: say so, time nothing
            print(f"| {name} | – | – | – | ERROR {r.error_code} | – | – | – | – |")
            continue
        m, t = r.media, r.timings_ms
        faces = sum(f.faces for f in r.frames)
        print(f"| {name} | {m.width}x{m.height} | {m.duration:.1f} s | {faces} | {r.label} | {wall:.2f} | "
              f"{t.get('decode', 0):.0f} | {t.get('detect', 0):.0f} | {t.get('classify', 0):.0f} |")
    walls = [w for _, r, w in rows if r.label != "ERROR"] or [0.0]
    print(f"\nmedian {statistics.median(walls):.2f} s per video, max {max(walls):.2f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
