"""``classical``: an interactive segmenter that needs no weights (GrabCut colour models + graph cut)."""
from .model import ClassicalConfig, ClassicalSegmenter

__all__ = ["ClassicalConfig", "ClassicalSegmenter"]
