"""Reports on a scan's output."""
