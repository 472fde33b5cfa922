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

# put into a copy of the page before its Content-Security-Policy (which forbids any script of the page's own): once
# the page has loaded, the browser writes what it rendered, and what the policy blocked, into the DOM it dumps
_PROBE = """<script>
const root = document.documentElement;
let violations = 0;  // reported in tasks of their own, some after load: counted until the DOM is dumped
root.setAttribute('data-violations', 0);
document.addEventListener('securitypolicyviolation', () => root.setAttribute('data-violations', ++violations));
window.addEventListener('load', () => {
  root.setAttribute('data-images', document.images.length);
  root.setAttribute('data-decoded', [...document.images].filter(i => i.complete && i.naturalWidth > 0).length);
  root.setAttribute('data-height', root.scrollHeight);
  root.setAttribute('data-overflow', Math.max(0, root.scrollWidth - root.clientWidth));  // px the page scrolls sideways
});
</script>"""
_HEAD = '<meta charset="utf-8">'  # the page's first tag in <head>: the probe goes right after it


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


def probe(page: Path, timeout: float = 90, width: int | None = None) -> dict[str, int]:
    """Images on the page, images Chromium decoded, page height and how far it scrolls sideways (``overflow``) in
    CSS px, loads the page's CSP blocked; ``width``: the window's, in CSS px (500: a phone, or 200-400% zoom)."""
    size = [f"--window-size={width},900"] if width else []
    with tempfile.TemporaryDirectory(prefix="dfs-probe-") as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(page.read_text(encoding="utf-8").replace(_HEAD, _HEAD + _PROBE, 1), encoding="utf-8")
        dom = _run([*size, "--virtual-time-budget=5000", "--dump-dom", copy.as_uri()], timeout).stdout
    found = dict(re.findall(r'data-(images|decoded|height|overflow|violations)="(\d+)"', dom))
    if len(found) != 5:
        raise BrowserError("chromium rendered the page but the probe did not run")
    return {k: int(v) for k, v in found.items()}


def screenshot(page: Path, png: Path, width: int = 1100, height: int | None = None, timeout: float = 90) -> Path:
    """A PNG of ``page`` as Chromium draws it; ``height`` None = the whole page."""
    height = height or probe(page, timeout, width)["height"] + 16
    png.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--window-size={width},{height}", f"--screenshot={png}", "--virtual-time-budget=5000", page.as_uri()],
         timeout)
    if not png.is_file() or png.stat().st_size == 0:
        raise BrowserError(f"chromium wrote no screenshot to {png}")
    return png
