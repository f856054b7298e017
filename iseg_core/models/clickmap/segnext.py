"""SegNext (CVPR'24): a ViT-B image encoder run once per image, and a light-ish prompt fusion run per click.

Once per image (``encode``): the image, normalised, is squashed to 1024 x 1024 (bilinear; aspect not kept, as
SegNext's own inference does) and goes through an MAE ViT-B whose blocks attend within 16 x 16-token windows
except every third (3, 6, 9, 12), which are global. The 64 x 64 x 768 feature map is the embedding (12.6 MB).

Per click (``decode``): the dense visual prompt (the previous probabilities resized to 1024 x 1024, positive and
negative click disks of radius 5 px in that frame; clicks rounded to the nearest pixel as SegNext does) goes
through its own patch embedding, is added to the image features, and one ("sax1") or two ("sax2") global
self-attention blocks fuse them; the SimpleFPN neck and the MLP head give logits at 256 x 256, upsampled to
1024 x 1024 (corners aligned) and then to the image (bilinear). The fusion blocks attend over all 4096 tokens,
which is most of a click's time on a CPU.

The logits are kept at the image's own size (its long side capped at ``max_side``, 2048 px, above which they
are kept at that size and resized on use), because SegNext feeds the previous prediction back from there.
Files of SegNext's trainer (``{"state_dict", "config"}``) load as they are; the backbone's unused ``fc_norm``
is dropped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CheckpointError
from ..base import Decoded, ImageEmbedding, TrainOutput
from .model import ClickMapSegmenter
from .maps import IMAGENET_MEAN, IMAGENET_STD, config_params, disk_maps, fit_long_side, points_tensor, unit_pixels
from .simpleclick import PLAINVIT_CLASS, publisher_kind
from .vit import Block, MLPHead, PatchEmbed, PlainViT, SimpleFPN, tokens_to_map

UNUSED_KEYS = ("backbone.fc_norm.",)


@dataclass(frozen=True)
class SegNextConfig:
    fusion_depth: int  # global self-attention blocks that fuse prompts and image ("sax1" / "sax2")
    checkpoint: str  # the official file name
    dim: int = 768
    depth: int = 12
    heads: int = 12
    patch: int = 16
    frame: int = 1024
    global_every: int = 3
    fpn: Tuple[int, int, int, int] = (128, 256, 512, 1024)
    head_channels: int = 256
    disk_radius: float = 5.0
    max_side: int = 2048  # long side of the kept logits
    multi_input = False  # clicks only (a class attribute, not a field)

    @property
    def global_blocks(self) -> Tuple[int, ...]:
        if self.global_every <= 1:
            return tuple(range(1, self.depth + 1))
        return tuple(i for i in range(1, self.depth + 1) if i % self.global_every == 0 or i == self.depth)

    @property
    def canvas(self) -> Tuple[int, int]:
        return self.frame, self.frame

    def describe(self) -> str:
        return f"SegNext ViT (dim {self.dim}, {self.depth} blocks) + {self.fusion_depth} fusion blocks"


# SegNext's released models (segnext/models/default/plainvit_base1024_*.py)
SEGNEXT_CONFIGS: Dict[str, SegNextConfig] = {
    "segnext_vit_b1024_sax1_cocolvis": SegNextConfig(1, "vitb_sa1_cocolvis_epoch_90.pth"),
    "segnext_vit_b1024_sax2_cocolvis": SegNextConfig(2, "vitb_sa2_cocolvis_epoch_90.pth"),
    "segnext_vit_b1024_sax2_hqseg44k": SegNextConfig(2, "vitb_sa2_cocolvis_hq44k_epoch_0.pth"),
}


class SegNextNetwork(nn.Module):
    unused_keys = UNUSED_KEYS

    def __init__(self, config: SegNextConfig):
        super().__init__()
        c = self.config = config
        self.backbone = PlainViT(c.dim, c.depth, c.heads, c.patch, (c.frame, c.frame), c.global_blocks)
        self.visual_prompts_encoder = PatchEmbed(3, c.dim, c.patch)
        # the fusion blocks use LayerNorm's default eps (1e-5), the backbone's 1e-6
        self.fusion_blocks = nn.Sequential(*[Block(c.dim, c.heads, eps=1e-5) for _ in range(c.fusion_depth)])
        self.neck = SimpleFPN(c.dim, c.fpn)
        self.head = MLPHead(c.fpn, c.head_channels, classifier="seg_conv")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def grid(self) -> Tuple[int, int]:
        return self.config.frame // self.config.patch, self.config.frame // self.config.patch

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> image tokens ``(B, 4096, dim)`` of the 1024 x 1024 frame."""
        x = (pixels - self.mean) / self.std
        x = F.interpolate(x, size=(self.config.frame, self.config.frame), mode="bilinear", align_corners=False)
        return self.backbone(x)

    def prompt_logits(self, tokens: torch.Tensor, prev: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Image tokens, previous probabilities ``(B, 1, 1024, 1024)`` and points in that frame -> logits
        ``(B, 1, 1024, 1024)``."""
        f = self.config.frame
        maps = torch.cat([prev, disk_maps(points, f, f, self.config.disk_radius)], 1)
        x = self.fusion_blocks(tokens + self.visual_prompts_encoder(maps))
        out = self.head(self.neck(tokens_to_map(x, self.grid)))
        return F.interpolate(out, size=(f, f), mode="bilinear", align_corners=True)



def check_segnext_config(config: SegNextConfig, published: Optional[dict], name: str, source: str) -> None:
    """A file of SegNext's trainer says what it is: refuse one of another architecture, naming both."""
    if not published:
        return
    params = config_params(published)
    backbone, fusion = params.get("backbone_params") or {}, params.get("fusion_params") or {}
    if not isinstance(backbone, dict) or not isinstance(fusion, dict):
        backbone, fusion = {}, {}
    size = tuple(backbone.get("img_size") or (0,))
    want = {"embed_dim": config.dim, "depth": config.depth, "global_atten_freq": config.global_every,
            "img_size": config.frame, "fusion": "self_attention", "fusion_depth": config.fusion_depth,
            "use_disks": True, "norm_radius": config.disk_radius}
    got = {"embed_dim": backbone.get("embed_dim"), "depth": backbone.get("depth"),
           "global_atten_freq": backbone.get("global_atten_freq", 1), "img_size": size[0],
           "fusion": fusion.get("type"), "fusion_depth": int(fusion.get("depth", 0) or 0),
           "use_disks": params.get("use_disks", False), "norm_radius": params.get("norm_radius", 5)}
    found_class = published.get("class", "?")
    if found_class != PLAINVIT_CLASS or got != want:
        shown = ", ".join(f"{k}={got[k]}" for k in want)
        kind = publisher_kind(found_class, params)
        raise CheckpointError(f"checkpoint {source} does not fit {name} ({config.describe()}, "
                              f"{config.frame} px frame, disks of radius {config.disk_radius:g}): its config says "
                              f"{kind}({shown})")


class SegNextSegmenter(ClickMapSegmenter):
    """The click-map segmenter's checks and resizing (bilinear, corners not aligned, as SegNext's), with
    SegNext's split: ``encode`` runs the ViT, ``decode`` the prompt fusion, neck and head."""

    align_corners = False
    training_modes = ("decoder", "full")

    @property
    def preprocessing(self) -> str:
        c = self.config
        return (f"{c.describe()}; image squashed to {c.frame}x{c.frame} (bilinear) and encoded once; click disks "
                f"r={c.disk_radius:g} px in that frame; previous probabilities fed back; no ZoomIn, no flip")

    @property
    def image_encoder(self) -> nn.Module:
        return self.network.backbone

    def frame_size(self, height: int, width: int) -> Tuple[int, int]:
        """Every image is squashed to the square frame (the canvas, for training)."""
        return self.config.frame, self.config.frame

    def logits_size(self, height: int, width: int) -> Tuple[int, int]:
        """Where the logits live: the image's own size, long side capped at ``max_side``."""
        return fit_long_side(height, width, self.config.max_side)

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        tokens = self.network.image_features(unit_pixels(image, self.device))
        return ImageEmbedding(self.cache_key, image.shape[:2], tokens, tokens.numel() * tokens.element_size())

    def points(self, prompts: Sequence, original: Tuple[int, int], frame: Tuple[int, int]) -> torch.Tensor:
        """Clicks -> the square frame, rounded to the nearest pixel per axis as SegNext's model does."""
        self.check_clicks(prompts)
        sy, sx = frame[0] / original[0], frame[1] / original[1]
        return points_tensor([(math.floor(p.y * sy + 0.5), math.floor(p.x * sx + 0.5), p.positive) for p in prompts],
                             self.device)

    @torch.inference_mode()
    def decode(self, embedding: ImageEmbedding, prompts: Sequence, prev_logits: Optional[torch.Tensor] = None,
               multimask: Optional[bool] = None) -> Decoded:
        frame = self.logits_size(*embedding.original_size)
        square = self.canvas
        if prev_logits is None:
            prev = torch.zeros((1, 1) + square, device=self.device)
        else:  # SegNext feeds the image-size probabilities back, resized to its frame
            prev = F.interpolate(self.prev_probabilities(prev_logits, frame), size=square, mode="bilinear",
                                 align_corners=False)
        logits = self.network.prompt_logits(embedding.data, prev, self.points(prompts, embedding.original_size, square))
        return self.decoded(F.interpolate(logits, size=frame, mode="bilinear", align_corners=False)[0, 0])

    # -- training face: the ViT is the encoder (frozen in decoder mode), the rest decodes ---------------------
    def frame_pixels(self, image: np.ndarray) -> torch.Tensor:
        return F.interpolate(unit_pixels(image, self.device), size=self.canvas, mode="bilinear", align_corners=False)

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network.image_features(pixels.to(self.device)).float()

    def features_of(self, embedding: ImageEmbedding) -> torch.Tensor:
        return embedding.data

    def forward_train(self, features, prompts, sizes, prev_logits) -> TrainOutput:
        prev, points = self.train_inputs(features, self.canvas, prompts, prev_logits)
        return self.train_output(self.network.prompt_logits(features, prev, points))

    def parameters_for(self, mode: str) -> List[nn.Parameter]:
        self.check_mode(mode)
        self.network.requires_grad_(True)
        self.network.backbone.requires_grad_(mode == "full")
        return [p for p in self.network.parameters() if p.requires_grad]


def build_segnext(name: str, weights, device: torch.device) -> SegNextSegmenter:
    config = SEGNEXT_CONFIGS[name]
    model = SegNextSegmenter(name, SegNextNetwork(config), version=weights.version if weights else None, device=device)
    if weights is not None:
        check_segnext_config(config, weights.meta.get("publisher_config"), name, weights.path)
        model.load_checkpoint_state(weights.state, weights.path)
        model.encoder_version = weights.encoder_version or ""
    return model
