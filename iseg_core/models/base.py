"""The interface every model in the registry implements.

A Segmenter splits work the way interactive segmentation needs it: ``encode`` runs once per image (the
expensive part, cached by the Predictor), ``decode`` runs once per interaction on that cached result.

A :class:`TrainableSegmenter` adds the training face that ``training/`` uses, so one trainer serves every
family: images in the model's own training frame, a batched differentiable forward, the parameters each
training mode trains, and checkpoint contents. See its docstring for the contract.
"""
from __future__ import annotations

import abc
import copy
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..errors import IsegError
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

    @classmethod
    def scored_by_confidence(cls, logits: torch.Tensor) -> "Decoded":
        """For networks without a quality head: the score is the mean probability inside the predicted object."""
        probs = torch.sigmoid(logits)
        inside = probs > 0.5
        return cls(logits=logits, score=float(probs[inside].mean()) if inside.any() else 0.0)


def probability_to_logit(p: float) -> float:
    """The logit of probability ``p`` (0 < p < 1): thresholds are kept as logits, people set probabilities."""
    p = float(p)
    if not 0.0 < p < 1.0:
        raise ValueError(f"a probability threshold is between 0 and 1 (exclusive), not {p}")
    return math.log(p / (1.0 - p))


def logit_to_probability(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-float(x)))


#: RITM's pred_thr, the probability its lineage's predictors and evaluations threshold at
RITM_PROBABILITY_THRESHOLD = 0.49
RITM_LOGIT_THRESHOLD = probability_to_logit(RITM_PROBABILITY_THRESHOLD)


class Segmenter(abc.ABC):
    """A promptable segmentation model behind one name in the registry."""

    name: str = ""
    #: Identifies the weights (checkpoint hash, file fingerprint, or a random-init tag).
    version: str = ""
    device: torch.device = torch.device("cpu")
    #: Which weights ``encode`` depends on; a decoder-only fine-tune keeps its base's, so embeddings cached
    #: before it was swapped in stay valid. Empty: the model's ``version``.
    encoder_version: str = ""
    #: The logit above which a pixel is in the mask when nobody says otherwise (the studio's starting
    #: threshold, the Predictor's default, the evaluation's): the family's own rule. SAM and its family, the
    #: classical engine and InterFormer (its argmax of two classes) decide at logit 0 = probability 0.5.
    default_threshold: float = 0.0

    @property
    def preprocessing(self) -> str:
        """How the model sees an image, for reports (numbers depend on it)."""
        return "native resolution"

    @property
    def cache_key(self) -> str:
        """Embeddings from two models with different keys are never interchangeable."""
        return f"{self.name}@{self.encoder_version or self.version}"

    @property
    def image_encoder(self) -> Optional[nn.Module]:
        """The module ``encode`` runs (once per image), or None for models without one (classical). ZeroGPU
        moves it alone to a lent GPU."""
        return None

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

    def page_graph(self) -> Optional["PageGraph"]:
        """The decode step as a graph a browser runs itself (:class:`PageGraph`), or None: the server decodes
        every prompt of this model (the default)."""
        return None


class PageGraph(abc.ABC):
    """A model's decode step as an ONNX graph for the page (onnxruntime-web): exported once per model version,
    fed the image's arrays once and each object's prompts as the server's session gives them."""

    #: Names the graph file of one model version (what the export is cached under).
    key: str

    @abc.abstractmethod
    def export(self, folder) -> "os.PathLike":
        """The graph's file in ``folder``, exported (and checked) the first time."""

    @abc.abstractmethod
    def arrays(self, embedding: ImageEmbedding) -> Dict[str, np.ndarray]:
        """The image's float32 arrays the graph reads, by input name."""

    @abc.abstractmethod
    def meta(self, embedding: ImageEmbedding) -> dict:
        """What the page needs besides the arrays to feed the graph for this image (sizes, token order)."""


@dataclass
class TrainOutput:
    """A batched training forward.

    ``logits`` ``(B, K, h, w)``: K candidate masks per sample, covering the model's training canvas (see
    :attr:`TrainableSegmenter.canvas`) at the model's own resolution. ``scores`` ``(B, K)``: the model's
    predicted IoU of each candidate, or None when it has no quality head. ``eligible`` ``(B, K)`` bool: the
    candidates inference would pick from for that sample's prompts (by highest score); the trainer trains the
    best-fitting eligible one and the score of every eligible one (SAM: token 0 alone, or tokens 1-3 for a
    lone click without a previous mask).

    What a model's own recipe adds: ``aux_logits`` ``(B, 1, h, w)``, an auxiliary head's logits over the same
    canvas, trained with the same mask losses times ``aux_weight`` (InterFormer's FCN head, 0.4); and
    ``extra_loss(target, valid)``, a scalar from the canvas' ground truth and valid pixels ``(B, H, W)``, added
    as it is (MST's token losses).
    """

    logits: torch.Tensor
    scores: Optional[torch.Tensor]
    eligible: torch.Tensor
    aux_logits: Optional[torch.Tensor] = None
    aux_weight: float = 0.0
    extra_loss: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None

    def chosen(self) -> torch.Tensor:
        """Index ``(B,)`` of the candidate inference would read: the best-scored eligible one."""
        if self.scores is None:
            return self.eligible.float().argmax(1)
        return self.scores.detach().float().masked_fill(~self.eligible, float("-inf")).argmax(1)


class TrainableSegmenter(Segmenter):
    """A Segmenter that ``training/`` can fine-tune. The contract, in the order the trainer uses it:

    - **Frame.** The model trains on a fixed ``canvas`` ``(H, W)``: :meth:`frame_size` gives the size an
      ``(h, w)`` image is resized to inside it (placed top-left, the rest padding); :meth:`frame_pixels`
      gives that network input. Targets and prompts live in frame pixels (the resized image's pixels).
    - **Features.** :meth:`encode_frames` runs the once-per-image part on a batch of frames (differentiable;
      the trainer decides about gradients). :meth:`features_of` turns an inference embedding of the same
      encoder into the same form (where its frame is training's), so embeddings the app has cached need no
      second encoder run.
    - **Forward.** :meth:`forward_train` decodes a batch: features, each sample's prompts, frame size and
      previous logits (one candidate's ``(h, w)`` logits from an earlier forward, or None) -> :class:`TrainOutput`.
    - **Parameters.** :meth:`parameters_for` freezes what a mode leaves alone and returns what it trains;
      ``training_modes`` lists the modes (``decoder``: the image encoder is frozen and runs once per image;
      ``full``: everything trains). ``prompt_kinds`` and ``loss_weights`` say what the trainer simulates and
      optimises for this model (its publishers' choices: click-map models train on clicks with the NFL alone).
    - **Checkpoints.** :meth:`checkpoint_state` is the state dict under the publisher's key names (what
      ``load_model`` reads); :meth:`load_checkpoint_state` loads one, checked, naming the file. The trainer
      writes beside it a ``meta`` dict with at least ``model`` (this name: a file is refused by another
      model), ``version`` (becomes the loaded model's version) and ``encoder_version`` (decoder mode: the
      base's, so cached embeddings stay valid); ``load_model`` reads those three.
    """

    training_modes: Tuple[str, ...] = ("decoder", "full")
    #: The prompt kinds training simulates for this model (those it was made for).
    prompt_kinds: Tuple[str, ...] = ("click", "box", "scribble", "contour")
    #: Weights of the trainer's losses: normalized focal, soft Dice, quality (IoU) head.
    loss_weights: Dict[str, float] = {"focal": 1.0, "dice": 1.0, "iou": 1.0}
    #: Every trainable part (what DistributedDataParallel wraps and ``train()`` / ``eval()`` switch).
    network: nn.Module

    @property
    @abc.abstractmethod
    def canvas(self) -> Tuple[int, int]:
        """(H, W) of the training input."""

    @abc.abstractmethod
    def frame_size(self, height: int, width: int) -> Tuple[int, int]:
        """(h, w) an image of ``(height, width)`` takes inside the canvas."""

    @abc.abstractmethod
    def frame_pixels(self, image: np.ndarray) -> torch.Tensor:
        """``(1, 3, H, W)`` float network input of a ``uint8`` RGB image, on the model's device."""

    @abc.abstractmethod
    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """Features ``(B, ...)`` of frames ``(B, 3, H, W)``, float32, on the model's device."""

    @abc.abstractmethod
    def features_of(self, embedding: ImageEmbedding) -> Optional[torch.Tensor]:
        """``(1, ...)`` features, as :meth:`encode_frames` gives them, of an embedding made by ``encode``; None
        when that embedding was made in another frame than training's (the trainer then encodes the image)."""

    @abc.abstractmethod
    def forward_train(self, features: torch.Tensor, prompts: Sequence[Sequence[Prompt]],
                      sizes: Sequence[Tuple[int, int]], prev_logits: Sequence[Optional[torch.Tensor]]) -> TrainOutput:
        """Decode a batch; ``prompts`` are in frame pixels of the samples' ``sizes`` (h, w)."""

    @abc.abstractmethod
    def parameters_for(self, mode: str) -> List[nn.Parameter]:
        """Freeze what ``mode`` leaves alone (``requires_grad=False``) and return the parameters it trains."""

    @abc.abstractmethod
    def checkpoint_state(self) -> Dict[str, torch.Tensor]:
        """The weights under the publisher's key names."""

    @abc.abstractmethod
    def load_checkpoint_state(self, state: Dict[str, torch.Tensor], source: str) -> None:
        """Load weights given as :meth:`checkpoint_state` names them; CheckpointError naming ``source`` and the
        mismatching keys when they do not fit."""

    def check_mode(self, mode: str) -> None:
        if mode not in self.training_modes:
            raise IsegError(f"{self.name} trains in {' or '.join(self.training_modes)} mode, not {mode!r}")

    def twin(self) -> "TrainableSegmenter":
        """A copy that can train in ``decoder`` mode while this model keeps serving: the image encoder (the bulk
        of the memory, frozen in that mode) is shared, everything else is copied."""
        encoder = self.image_encoder
        memo = {id(encoder): encoder} if encoder is not None else {}
        return copy.deepcopy(self, memo)


def supports_training(model: Segmenter) -> bool:
    return isinstance(model, TrainableSegmenter)
