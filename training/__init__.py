"""Training: simulated interactions (``training.simulate``); the fine-tuning loop is still to come (issue 6)."""
