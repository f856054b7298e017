"""SimpleClick (ICCV'23): a plain MAE ViT whose click maps enter beside the image patches.

The three maps (previous probabilities, positive disks, negative disks; radius 5 px) go through a patch
embedding of their own and are added to the image's patch tokens before the first block, so every click runs
the whole ViT: nothing but the image can be cached. The frame is a square (448 px for the published models):
the studio squashes the whole image into it; evaluation follows SimpleClick's (ZoomIn from the first click,
crops squashed to 448 x 448, 672 on DAVIS, position embedding resized bicubically for other sizes, flip
averaging; see :class:`.zoom.RitmSession`). Blocks attend within 224 px windows except every 6th (ViT-B) or
every depth/4-th, which are global. The SimpleFPN neck and the all-MLP head give logits at 1/4, upsampled to
the frame (bilinear, corners aligned).

Files of SimpleClick's trainer (``{"state_dict", "config"}``) load as they are; the backbone's classification
leftovers they carry (``cls_token``, ``fc_norm``, ``head``: never used for segmentation) are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CheckpointError
from .maps import IMAGENET_MEAN, IMAGENET_STD, config_params, disk_maps
from .vit import MLPHead, PatchEmbed, PlainViT, SimpleFPN, tokens_to_map

PLAINVIT_CLASS = "isegm.model.is_plainvit_model.PlainVitModel"
# in the checkpoints, never used to segment: the MAE backbone's classification parts
UNUSED_KEYS = ("backbone.cls_token", "backbone.fc_norm.", "backbone.head.")


@dataclass(frozen=True)
class SimpleClickConfig:
    dim: int
    depth: int
    heads: int
    patch: int
    fpn: Tuple[int, int, int, int]
    checkpoint: str  # the official file name
    head_channels: int = 256
    upsample: int = 1  # SimpleClick's head option x1 / x2 / x4 (read from the file's config)
    all_global: bool = False  # "random_split" models: every block attends over all tokens
    frame: int = 448  # the square training crop
    disk_radius: float = 5.0
    multi_input = False  # clicks only (a class attribute, not a field)

    @property
    def global_blocks(self) -> Tuple[int, ...]:
        if self.all_global:
            return tuple(range(1, self.depth + 1))
        group = 6 if self.depth == 12 else self.depth // 4
        return tuple(i for i in range(1, self.depth + 1) if i % group == 0)

    def describe(self) -> str:
        return f"SimpleClick plain ViT (dim {self.dim}, {self.depth} blocks, patch {self.patch})"

    def frame_size(self, height: int, width: int) -> Tuple[int, int]:
        return self.frame, self.frame

    def frame_text(self) -> str:
        return f"whole image squashed to {self.frame}x{self.frame} (bilinear, corners aligned)"

    @property
    def canvas(self) -> Tuple[int, int]:
        return self.frame, self.frame


# SimpleClick's COCO+LVIS models (models/iter_mask/plainvit_*448_cocolvis_itermask.py)
SIMPLECLICK_CONFIGS: Dict[str, SimpleClickConfig] = {
    "simpleclick_vit_xtiny448_cocolvis": SimpleClickConfig(160, 8, 4, 16, (96, 192, 288, 384),
                                                           "cocolvis_vit_xtiny.pth", head_channels=128),
    "simpleclick_vit_b448_cocolvis": SimpleClickConfig(768, 12, 12, 16, (128, 256, 512, 1024), "cocolvis_vit_base.pth"),
    "simpleclick_vit_l448_cocolvis": SimpleClickConfig(1024, 24, 16, 16, (192, 384, 768, 1536), "cocolvis_vit_large.pth"),
    "simpleclick_vit_h448_cocolvis": SimpleClickConfig(1280, 32, 16, 14, (240, 480, 960, 1920), "cocolvis_vit_huge.pth"),
    # MIS (ICCV'23): SimpleClick's ViT-B 448 trained on SBD's images without their labels (weights unpublished)
    "mis_simpleclick_vit_b448_sbd": SimpleClickConfig(768, 12, 12, 16, (128, 256, 512, 1024),
                                                      "mis_simpleclick_base448_sbd.pth"),
}


class SimpleClickNetwork(nn.Module):
    """SimpleClick's PlainVitModel (disks, previous-mask channel): ``(image, prev, points)`` -> logits."""

    unused_keys = UNUSED_KEYS

    def __init__(self, config: SimpleClickConfig):
        super().__init__()
        self.config = config
        c = config
        self.patch_embed_coords = PatchEmbed(3, c.dim, c.patch)
        self.backbone = PlainViT(c.dim, c.depth, c.heads, c.patch, (c.frame, c.frame), c.global_blocks)
        self.neck = SimpleFPN(c.dim, c.fpn)
        self.head = MLPHead(c.fpn, c.head_channels * c.upsample, c.upsample, up_blocks=True)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor, prev: torch.Tensor, points: torch.Tensor, with_aux: bool = False,
                drawn: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """image ``(B, 3, H, W)`` in [0, 1] (H, W multiples of the patch), prev ``(B, 1, H, W)`` probabilities,
        points as :func:`.maps.disk_maps` -> (logits ``(B, 1, H, W)``, None: no auxiliary head). No other
        maps (``drawn`` is for the multi-input models)."""
        h, w = image.shape[-2:]
        maps = torch.cat([prev, disk_maps(points, h, w, self.config.disk_radius)], 1)
        tokens = self.backbone((image - self.mean) / self.std, self.patch_embed_coords(maps))
        grid = (h // self.config.patch, w // self.config.patch)
        out = self.head(self.neck(tokens_to_map(tokens, grid)))
        return F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True), None



def publisher_kind(found_class: str, params: dict) -> str:
    """What a serialized config describes: SimpleClick and SegNext share the class path of their model."""
    if found_class == PLAINVIT_CLASS:
        return "SegNext PlainVitModel" if "fusion_params" in params else "SimpleClick PlainVitModel"
    return found_class.rsplit(".", 1)[-1]


def published_vit(config: SimpleClickConfig, published: dict) -> Tuple[str, dict, dict, dict, dict]:
    """What a RITM-lineage plain-ViT file's serialized config states (SimpleClick's and MST's trainers write the
    same fields) -> (class path, params, head params, wanted, found): the backbone, the frame, disks, the
    previous-mask channel, as ``config`` has them and as the file says."""
    params = config_params(published)
    backbone, head = params.get("backbone_params") or {}, params.get("head_params") or {}
    if not isinstance(backbone, dict) or not isinstance(head, dict):
        backbone, head = {}, {}
    patch = tuple(backbone.get("patch_size") or (0, 0))
    size = tuple(backbone.get("img_size") or (0, 0))
    want = {"embed_dim": config.dim, "depth": config.depth, "num_heads": config.heads, "patch": config.patch,
            "img_size": config.frame, "use_disks": True, "norm_radius": config.disk_radius, "with_prev_mask": True}
    got = {"embed_dim": backbone.get("embed_dim"), "depth": backbone.get("depth"), "num_heads": backbone.get("num_heads"),
           "patch": patch[0] if patch else None, "img_size": size[0] if size else None,
           "use_disks": params.get("use_disks", False), "norm_radius": params.get("norm_radius", 5),
           "with_prev_mask": params.get("with_prev_mask", False)}
    return published.get("class", "?"), params, head, want, got


def adapt_simpleclick(config: SimpleClickConfig, published: Optional[dict], name: str, source: str) -> SimpleClickConfig:
    """Check a SimpleClick trainer's serialized config against ``config`` (the backbone, the frame, disks,
    previous-mask channel) and take the head options it was trained with (upsample, all-global attention)."""
    if not published:
        return config
    found_class, params, head, want, got = published_vit(config, published)
    want["fusion"], got["fusion"] = False, "fusion_params" in params
    if found_class != PLAINVIT_CLASS or got != want:
        shown = ", ".join(f"{k}={got[k]}" for k in want if k != "fusion")
        kind = publisher_kind(found_class, params)
        raise CheckpointError(f"checkpoint {source} does not fit {name} ({config.describe()}, {config.frame} px frame, "
                              f"disks of radius {config.disk_radius:g}, previous-mask channel): its config says "
                              f"{kind}({shown})")
    upsample = {"x1": 1, "x2": 2, "x4": 4}.get(head.get("upsample", "x1"), 1)
    channels = int(head.get("channels", config.head_channels // upsample))  # before the x2 / x4 blocks
    return replace(config, upsample=upsample, head_channels=channels, all_global=bool(params.get("random_split", False)))
