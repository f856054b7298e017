"""SAM (ViT-B/L/H) on timm's image encoder, loading official SAM checkpoints."""
from .model import SAM_CONFIGS, SamConfig, SamNetwork, SamSegmenter, preprocess_shape

__all__ = ["SAM_CONFIGS", "SamConfig", "SamNetwork", "SamSegmenter", "preprocess_shape"]
