"""Reports on a scan output: text (``text``), HTML (``html``), drift (``drift``), face thumbnails (``thumbs``)."""
