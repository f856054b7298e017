"""A tiny test-only model that is not SAM: a click-map network (RITM's way of taking prompts) behind the full
:class:`TrainableSegmenter` face, to prove that training, the app's fine-tune job and the registry work for a
family they were not written for.

Frame: long side 64, padded to 64x64. Encoder: two convolutions (32x32 features, 8 channels), frozen in
``decoder`` mode. Decoder (the "head"): prompts rendered as maps in the 32x32 feature grid (positive clicks and
scribbles, negative ones, boxes and contours filled) plus the previous logits, concatenated with the features,
two convolutions -> one logit map. No quality head (scores are None). Keys: ``encoder.*`` and ``head.*``.
"""
from __future__ import annotations

import uuid
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iseg_core.errors import CheckpointError, PromptError
from iseg_core.models import ImageEmbedding, TrainableSegmenter, TrainOutput, register_model
from iseg_core.models.base import Decoded
from iseg_core.prompts import Box, Click, Contour, Prompt, Scribble

NAME = "clickmap_test"
SIDE, GRID, FEATURES = 64, 32, 8


class ClickMapNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, FEATURES, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(FEATURES, FEATURES, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(FEATURES + 4, 16, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 1, 1))


def prompt_maps(prompts: Sequence[Prompt], size: Tuple[int, int], prev: Optional[torch.Tensor]) -> np.ndarray:
    """(4, GRID, GRID) float32: positive, negative, region (boxes / contours), previous probability; prompts in
    the pixels of an image of ``size`` (h, w) placed top-left in the canvas."""
    cell = SIDE / GRID
    h, w = size
    scale = SIDE / max(h, w) / cell  # image pixels -> grid cells
    maps = np.zeros((4, GRID, GRID), np.float32)

    def cells(points):
        return np.round(np.asarray(points, np.float64) * scale - 0.5).astype(np.int32).reshape(-1, 2)

    for p in prompts:
        if isinstance(p, Click):
            cv2.circle(maps[0 if p.positive else 1], tuple(int(v) for v in cells([(p.x, p.y)])[0]), 1, 1.0, -1)
        elif isinstance(p, Scribble):
            cv2.polylines(maps[0 if p.positive else 1], [cells(p.points)], False, 1.0, 1)
        elif isinstance(p, Box):
            (x0, y0), (x1, y1) = cells([(p.x0, p.y0), (p.x1, p.y1)])
            cv2.rectangle(maps[2], (int(x0), int(y0)), (int(x1), int(y1)), 1.0, -1)
        elif isinstance(p, Contour):
            cv2.fillPoly(maps[2], [cells(p.points)], 1.0)
    if prev is not None:
        maps[3] = torch.sigmoid(prev.detach().float().reshape(GRID, GRID)).cpu().numpy()
    return maps


class ClickMapSegmenter(TrainableSegmenter):
    def __init__(self, name: str, network: ClickMapNet, version: Optional[str] = None,
                 encoder_version: Optional[str] = None, device="cpu"):
        self.name, self.network, self.device = name, network.eval(), torch.device(device)
        self.network.to(self.device)
        self.version = version or f"random-{uuid.uuid4().hex[:8]}"
        self.encoder_version = encoder_version or self.version

    @property
    def image_encoder(self) -> nn.Module:
        return self.network.encoder

    # -- the frame
    @property
    def canvas(self) -> Tuple[int, int]:
        return SIDE, SIDE

    def frame_size(self, height: int, width: int) -> Tuple[int, int]:
        s = SIDE / max(height, width)
        return max(1, round(height * s)), max(1, round(width * s))

    def frame_pixels(self, image: np.ndarray) -> torch.Tensor:
        h, w = self.frame_size(*image.shape[:2])
        small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        x = torch.from_numpy(small).permute(2, 0, 1).unsqueeze(0)
        return F.pad(x, (0, SIDE - w, 0, SIDE - h)).to(self.device)

    # -- inference
    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network.encoder(pixels.to(self.device)).float()

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        feats = self.encode_frames(self.frame_pixels(image))
        return ImageEmbedding(self.cache_key, image.shape[:2], feats, feats.numel() * 4,
                              {"input_size": self.frame_size(*image.shape[:2])})

    def features_of(self, embedding: ImageEmbedding) -> torch.Tensor:
        return embedding.data

    def _head(self, features: torch.Tensor, maps: List[np.ndarray]) -> torch.Tensor:
        m = torch.from_numpy(np.stack(maps)).to(features.device, features.dtype)
        return self.network.head(torch.cat([features, m], 1))  # (B, 1, GRID, GRID)

    def check_logits(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.numel() != GRID * GRID:
            raise PromptError(f"prev_logits must be {GRID}x{GRID}, got {tuple(logits.shape)}")
        return logits.reshape(GRID, GRID).float()

    @torch.inference_mode()
    def decode(self, embedding, prompts, prev_logits=None, multimask=None) -> Decoded:
        # prompts in image pixels -> pixels of the image resized into the frame: the map scale covers both
        logits = self._head(embedding.data, [prompt_maps(prompts, embedding.original_size, prev_logits)])[0]
        return Decoded(logits=logits, score=float(torch.sigmoid(logits).mean()))

    def upsample_logits(self, embedding, logits, size=None) -> np.ndarray:
        h, w = size or embedding.original_size
        nh, nw = embedding.extra["input_size"]
        canvas = cv2.resize(logits.detach().reshape(GRID, GRID).float().cpu().numpy(), (SIDE, SIDE))
        return cv2.resize(canvas[:nh, :nw], (w, h), interpolation=cv2.INTER_LINEAR)

    # -- training
    def forward_train(self, features, prompts, sizes, prev_logits) -> TrainOutput:
        maps = [prompt_maps(p, size, prev) for p, size, prev in zip(prompts, sizes, prev_logits)]
        logits = self._head(features, maps)
        return TrainOutput(logits=logits, scores=None,
                           eligible=torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device))

    def parameters_for(self, mode: str) -> List[nn.Parameter]:
        self.check_mode(mode)
        self.network.requires_grad_(True)
        self.network.encoder.requires_grad_(mode == "full")
        return [p for p in self.network.parameters() if p.requires_grad]

    def checkpoint_state(self) -> Dict[str, torch.Tensor]:
        return self.network.state_dict()

    def load_checkpoint_state(self, state, source: str) -> None:
        expected = self.network.state_dict()
        wrong = sorted(set(expected) ^ set(state)) + sorted(
            k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
        if wrong:
            raise CheckpointError(f"checkpoint {source} does not fit {self.name}: keys {', '.join(wrong[:5])}")
        self.network.load_state_dict(state)


def build(name, weights, device, dtype) -> ClickMapSegmenter:
    net = ClickMapNet()
    model = ClickMapSegmenter(name, net, weights.version if weights else None,
                              weights.encoder_version if weights else None, device)
    if weights is not None:
        model.load_checkpoint_state(weights.state, weights.path)
    return model


def register() -> None:
    register_model(NAME)(build)


def unregister() -> None:
    from iseg_core.models import _REGISTRY

    _REGISTRY.pop(NAME, None)
