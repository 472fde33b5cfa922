"""Client-supplied text (file names, URIs, error messages quoting them) made safe for one log line."""

from __future__ import annotations

from typing import Any


def log_safe(value: Any, limit: int = 500) -> str:
    """``value`` as text with control and line-separator characters escaped (``\\n`` → ``\\\\n``), so a
    newline in an upload's name cannot start a forged log line; cut to ``limit`` characters."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    safe = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return safe if len(safe) <= limit else safe[:limit] + "…"
