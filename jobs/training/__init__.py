"""Training the detector: prepare face-crop datasets, train, evaluate (docs/training.md)."""
