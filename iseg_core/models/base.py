"""The interface every model in the registry implements.

A Segmenter splits work the way interactive segmentation needs it: ``encode`` runs once per image (the
expensive part, cached by the Predictor), ``decode`` runs once per interaction on that cached result.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch

from ..prompts import Prompt


@dataclass
class ImageEmbedding:
    """What a model computes once per image. ``data`` is model-specific; ``nbytes`` sizes the cache."""

    model_key: str
    original_size: Tuple[int, int]  # (H, W) of the image that was encoded
    data: Any
    nbytes: int
    extra: dict = field(default_factory=dict)


@dataclass
class Decoded:
    """One decoder result: low-resolution logits in the model's own frame and a quality score."""

    logits: torch.Tensor
    score: float


class Segmenter(abc.ABC):
    """A promptable segmentation model behind one name in the registry."""

    name: str = ""
    #: Identifies the weights (checkpoint hash, file fingerprint, or a random-init tag).
    version: str = ""
    device: torch.device = torch.device("cpu")

    @property
    def preprocessing(self) -> str:
        """How the model sees an image, for reports (numbers depend on it)."""
        return "native resolution"

    @property
    def cache_key(self) -> str:
        """Embeddings from two models with different keys are never interchangeable."""
        return f"{self.name}@{self.version}"

    @abc.abstractmethod
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Encode a checked ``uint8`` RGB ``(H, W, 3)`` image."""

    @abc.abstractmethod
    def decode(
        self,
        embedding: ImageEmbedding,
        prompts: Sequence[Prompt],
        prev_logits: Optional[torch.Tensor] = None,
        multimask: Optional[bool] = None,
    ) -> Decoded:
        """Run the light per-interaction step. ``prompts`` are validated and in image pixels."""

    @abc.abstractmethod
    def check_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Return the tensor ``logits`` (the Predictor converts arrays) in the shape ``decode`` accepts as
        ``prev_logits``, or raise PromptError."""

    @abc.abstractmethod
    def upsample_logits(
        self, embedding: ImageEmbedding, logits: torch.Tensor, size: Optional[Tuple[int, int]] = None
    ) -> np.ndarray:
        """Float32 logits at ``size`` (H, W; default the original image size) from low-res ``logits``."""
