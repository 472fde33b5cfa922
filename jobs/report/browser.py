"""Look at the report the way a person does: Debian's headless Chromium, no network, a fresh profile.

Used by the tests (screenshot + which images the browser really decoded) and to refresh
docs/images/report.png. ``apt-get install chromium`` provides the binary.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from pipeline.errors import DeepfakeStreamError

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--host-resolver-rules=MAP * ~NOTFOUND"]  # any network fetch fails: the page must not need one

# appended to a copy of the page: the browser writes what it rendered into the DOM it dumps
_PROBE = """<script>
document.documentElement.setAttribute('data-images', document.images.length);
document.documentElement.setAttribute('data-decoded',
  [...document.images].filter(i => i.complete && i.naturalWidth > 0).length);
document.documentElement.setAttribute('data-height', document.documentElement.scrollHeight);
</script>"""


class BrowserError(DeepfakeStreamError):
    """Chromium is missing or failed."""

    code = "browser_failed"


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    binary = chromium()
    if not binary:
        raise BrowserError("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="dfs-chromium-") as profile:
        proc = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BrowserError(f"chromium exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc


def probe(page: Path, timeout: float = 90) -> dict[str, int]:
    """Images on the page, images Chromium decoded, page height in CSS px."""
    with tempfile.TemporaryDirectory(prefix="dfs-probe-") as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
        dom = _run(["--virtual-time-budget=5000", "--dump-dom", copy.as_uri()], timeout).stdout
    found = dict(re.findall(r'data-(images|decoded|height)="(\d+)"', dom))
    if len(found) != 3:
        raise BrowserError("chromium rendered the page but the probe did not run")
    return {k: int(v) for k, v in found.items()}


def screenshot(page: Path, png: Path, width: int = 1100, height: int | None = None, timeout: float = 90) -> Path:
    """A PNG of ``page`` as Chromium draws it; ``height`` None = the whole page."""
    height = height or probe(page, timeout)["height"] + 16
    png.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--window-size={width},{height}", f"--screenshot={png}", "--virtual-time-budget=5000", page.as_uri()],
         timeout)
    if not png.is_file() or png.stat().st_size == 0:
        raise BrowserError(f"chromium wrote no screenshot to {png}")
    return png
