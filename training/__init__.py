"""Training: simulated interactions (``training.simulate``), data and augmentation (``training.data``); the
fine-tuning loop is still to come (issue 6)."""
