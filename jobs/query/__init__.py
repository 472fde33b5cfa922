"""SQL over a scan's output with DuckDB (the views of `deepfakestream query`)."""
