"""InterFormer (ICCV'23): an MAE ViT + SimpleFPN once per image, the I-MSA neck and UPerHead per click (see
:mod:`.model`)."""
from .labels import InterFormerZoomIn
from .model import (INTERFORMER_CONFIGS, InterFormerConfig, InterFormerNetwork, InterFormerSegmenter,
                    build_interformer, with_max_side)

__all__ = ["INTERFORMER_CONFIGS", "InterFormerConfig", "InterFormerNetwork", "InterFormerSegmenter", "InterFormerZoomIn",
           "build_interformer", "with_max_side"]
