"""iseg_core: the model package of iseg. No UI, no database: usable on its own.

>>> from iseg_core import Predictor, load_model, Click
"""
from .cache import EmbeddingCache
from .errors import (
    CheckpointError,
    ImageError,
    IsegError,
    PromptError,
    UnknownModelError,
    WeightsUnavailableError,
)
from .image import check_image, load_image
from .models import list_models, load_model
from .predictor import Prediction, Predictor
from .prompts import Box, Click, Contour, Scribble

__all__ = [
    "Box", "CheckpointError", "Click", "Contour", "EmbeddingCache", "ImageError", "IsegError", "Prediction",
    "Predictor", "PromptError", "Scribble", "UnknownModelError", "WeightsUnavailableError", "check_image",
    "list_models", "load_image", "load_model",
]
