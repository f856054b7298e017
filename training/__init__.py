"""Training for any model with the training face (``iseg_core.models.TrainableSegmenter``): simulated
interactions (``training.simulate``), data and augmentation (``training.data``), losses (``training.losses``),
the fine-tuning loop and its CLI (``training.finetune``), and the app's background job (``training.job``)."""
