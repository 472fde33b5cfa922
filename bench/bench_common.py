"""Shared by the benchmarks: where ../shared's media is, which detector checkpoint to time, percentiles, waiting
for the API, and writing docs only from a quiet machine, with the command line that measured them.

    .venv/bin/python bench/bench_common.py --settle-s 300   # wait for a quiet machine (bench/run_all.sh, per step)
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MACHINE_BUSY = "machine_busy"  # the code of a refused --write-docs: the load average says the machine is not quiet


def shared_data() -> Path:
    """../shared/data (FF++ clips, talking heads), or DFS_SHARED_DATA where it lives elsewhere, as in the tests."""
    return Path(os.environ.get("DFS_SHARED_DATA", ROOT.parent / "shared" / "data"))


def checkpoint(workdir: Path, purpose: str) -> tuple[Path, str]:
    """The settings' detector (DFS_CLASSIFY__CHECKPOINT or DFS_CONFIG as everywhere), else an ImageNet-initialised
    one (timing only)."""
    from pipeline.card import read_card
    from pipeline.checkpoint import imagenet_init_checkpoint
    from pipeline.config import DEFAULT_CHECKPOINT, load_settings

    chosen = Path(load_settings().classify.checkpoint)
    if chosen.resolve() != DEFAULT_CHECKPOINT.resolve() and not chosen.exists():
        raise SystemExit(f"bench: no detector at {chosen} (the settings' classify.checkpoint)")
    if chosen.exists():
        where = "shipped detector" if chosen.resolve() == DEFAULT_CHECKPOINT.resolve() else f"settings' detector {chosen}"
        return chosen, f"{where} {read_card(chosen).version}"
    path = imagenet_init_checkpoint(workdir / "bench-detector.safetensors", "bench-imagenet-init", purpose)
    return path, "ImageNet-initialised (no shipped detector)"


def write_section(path: Path, section: str, body: str) -> None:
    """Replace (or append) only the ``section`` heading's part of a Markdown file; the rest stays byte for byte."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == section), None)
    if start is None:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = "".join(lines[end:])
        text = "".join(lines[:start]) + body + ("\n" + tail if tail else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def wait_healthy(url: str, timeout_s: float = 300) -> None:
    """Until ``GET {url}/v1/health`` answers 200 (TimeoutError after ``timeout_s``)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError("the API did not become healthy")


def add_docs_flags(parser: argparse.ArgumentParser, section: str) -> None:
    """--write-docs and the flags that guard it: numbers from a loaded machine do not go into the docs."""
    parser.add_argument("--write-docs", type=Path, help=f"replace the '{section.removeprefix('## ')}' section of this file "
                        "(refused when the machine is not quiet: --max-load, --force)")
    add_quiet_flags(parser)
    parser.add_argument("--force", action="store_true", help="--write-docs even when the load is above --max-load")


def add_quiet_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-load", type=float, default=0.75 * (os.cpu_count() or 1),
                        help="the 1-minute load average above which the machine is not quiet "
                             "(default 0.75 per core: %(default)g here)")
    parser.add_argument("--settle-s", type=float, default=0,
                        help="wait up to this long for the load to fall to --max-load first (default 0)")


def quiet_load(args: argparse.Namespace) -> tuple[float, float, float]:
    """The load averages before the run, once settled (up to --settle-s). Above --max-load, --write-docs is
    refused (exit 2, ``machine_busy: …``) unless --force: other load changes every time. Else it is a warning."""
    load = settle(args.max_load, args.settle_s)
    if load[0] > args.max_load:
        why = f"1-minute load average {load[0]:.2f} > --max-load {args.max_load:g} before the run"
        if args.write_docs and not args.force:
            busy(f"{why}: not writing {args.write_docs} from a busy machine (--force writes anyway)")
        print(f"warning: {why}: these numbers will not be a quiet machine's", file=sys.stderr)
    return load


def settle(max_load: float, wait_s: float) -> tuple[float, float, float]:
    """The load averages once the 1-minute one is at most ``max_load``, or after ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()


def busy(message: str) -> None:
    print(f"{MACHINE_BUSY}: {message}", file=sys.stderr)
    raise SystemExit(2)


def command_line() -> str:
    """This bench's command as it was run, every argument (the "Measured by" line of what it writes)."""
    return shlex.join([f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])


if __name__ == "__main__":  # bench/run_all.sh: wait for a quiet machine before each step; refuse as the benches do
    cli = argparse.ArgumentParser(description="Wait (--settle-s) until the 1-minute load average is at most --max-load.")
    add_quiet_flags(cli)
    cli_args = cli.parse_args()
    if (load := settle(cli_args.max_load, cli_args.settle_s))[0] > cli_args.max_load:
        busy(f"1-minute load average {load[0]:.2f} still > --max-load {cli_args.max_load:g} "
             f"after {cli_args.settle_s:g} s (FORCE=1 to time anyway)")
