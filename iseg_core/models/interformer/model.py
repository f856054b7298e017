"""InterFormer (ICCV'23, "Real-time Interactive Image Segmentation"): the image encoded once, a light module per
click.

Once per image (``encode``): the image at its native size (long side capped at ``max_side``, 1024 px by default:
global attention over every token is quadratic; above the cap it is resized, bilinear), normalised with
ImageNet's statistics on 0-255 pixels, zero-padded after normalisation to multiples of 32 (bottom, right), then
the MAE ViT and SimpleFPN (:mod:`.backbone`). The four maps (strides 4, 8, 16, 32) are the embedding.

Per click (``decode``): the click is painted into the object's reference label map (:mod:`.labels`), the I-MSA
neck (:mod:`.neck`) fuses the map with the four cached maps, UPerHead (:mod:`.head`) gives the foreground
logit at stride 4 of the padded frame; the prediction (logit > 0 after a bilinear upsampling to the padded
frame: InterFormer's argmax) updates the label map with its hysteresis. That map is the object's state: it is
kept for the logits ``decode`` returns (the session and the evaluation pass them back as ``prev_logits``) and
continued by the next click. Logits that did not come from this process (a file, an array) start a fresh map
from their prediction. InterFormer-Tiny's ZoomIn (the refine blocks inside the object's box) is off by default,
as its authors' evaluation runs; :attr:`InterFormerSegmenter.zoom` turns it on. InterFormer-Light has no
refine blocks, so a ZoomIn could change nothing there.

Checkpoints: mmcv's ``{"meta": {"config": <Python source>, ...}, "state_dict", "optimizer"}``. The config
text is read without running it (:mod:`.config_text`) and checked against the model asked for; the optimizer
state is read (torch reads the whole file) and dropped at once; the relative position index buffers are checked
and dropped.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.weak import WeakTensorKeyDictionary

from ...errors import CheckpointError, PromptError
from ...prompts import Click
from ..base import Decoded, ImageEmbedding, TrainableSegmenter, TrainOutput
from ..checkpoint import check_state_dict
from .backbone import MAEBackbone, relative_position_index
from .config_text import read_config_text
from .head import FCNHead, UPerHead
from .labels import (FrameClick, InterFormerZoomIn, LabelState, embed_at_stride4, new_map, paint_click,
                     update_by_prediction, zoom_roi)
from .neck import IMSA

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
PAD = 32  # the padded frame is a multiple of the coarsest stride
STRIDES = (4, 8, 16, 32)


@dataclass(frozen=True)
class InterFormerConfig:
    variant: str  # InterFormer's own name for it
    dim: int  # the ViT
    depth: int
    heads: int
    neck_depths: Tuple[int, ...]  # I-MSA blocks per stage; those from refine_start on are refine blocks
    refine_start: Tuple[int, ...]
    publisher_name: str  # the authors' config and work_dirs name
    train_size: int = 512
    patch: int = 16
    rescales: Tuple[float, ...] = (4, 2, 1, 0.5)
    fpn_dims: Tuple[int, ...] = (32, 64, 128, 256)
    neck_heads: Tuple[int, ...] = (1, 2, 4, 8)
    mlp_ratios: Tuple[float, ...] = (8, 8, 4, 4)
    head_channels: int = 64
    pool_scales: Tuple[int, ...] = (1, 2, 3, 6)
    max_side: int = 1024  # iseg's cap on the encoded long side (InterFormer encodes any size)

    @property
    def refines(self) -> bool:
        return any(d > r for d, r in zip(self.neck_depths, self.refine_start))

    def describe(self) -> str:
        return (f"InterFormer-{self.variant} (MAE ViT dim {self.dim}, {self.depth} blocks, {self.heads} heads; "
                f"I-MSA depths {self.neck_depths}, refine from {self.refine_start})")

    def architecture(self) -> Dict[str, object]:
        """The fields a stored config must agree on."""
        return {"embed_dims": self.dim, "num_layers": self.depth, "num_heads": self.heads,
                "img_size": self.train_size, "patch_size": self.patch, "rescales": self.rescales,
                "out_dims": self.fpn_dims, "depths": self.neck_depths, "refine_start": self.refine_start,
                "neck_heads": self.neck_heads, "mlp_ratio": self.mlp_ratios, "channels": self.head_channels,
                "num_classes": 2}


# InterFormer's released configurations (configs/_base_/interformer_{light,tiny}.py): "Light" is the ViT-B one,
# "Tiny" the ViT-L one, despite the names.
INTERFORMER_CONFIGS: Dict[str, InterFormerConfig] = {
    "interformer_light_vitb_cocolvis": InterFormerConfig("Light", 768, 12, 12, (1, 1, 2, 1), (1, 1, 2, 1),
                                                          "interformer_light_coco_lvis_320k"),
    "interformer_tiny_vitl_cocolvis": InterFormerConfig("Tiny", 1024, 24, 16, (2, 2, 6, 3), (1, 1, 2, 1),
                                                         "interformer_tiny_coco_lvis_320k"),
}

# The label state of each logits tensor decode returned (weakly: it goes when the logits go).
_STATES = WeakTensorKeyDictionary()


class InterFormerNetwork(nn.Module):
    """``backbone`` (MAE ViT + SimpleFPN, once per image), ``neck`` (I-MSA) and ``decode_head`` (UPerHead) per
    click, ``auxiliary_head`` (FCN) for training only. Names as in InterFormer's checkpoints."""

    def __init__(self, config: InterFormerConfig):
        super().__init__()
        c = self.config = config
        self.backbone = MAEBackbone(c.dim, c.depth, c.heads, c.train_size, c.patch, c.rescales, c.fpn_dims)
        self.neck = IMSA(c.fpn_dims, c.neck_heads, c.neck_depths, c.refine_start, c.mlp_ratios, c.train_size)
        self.decode_head = UPerHead(c.fpn_dims, c.head_channels, c.pool_scales)
        self.auxiliary_head = FCNHead(c.fpn_dims[2], c.head_channels)

    def click_logits(self, maps: Sequence[torch.Tensor], labels: Sequence[np.ndarray],
                     roi: Optional[Tuple[int, int, int, int]] = None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """The cached maps and one label map per sample -> (foreground logit ``(B, 1, H/4, W/4)``, neck outputs)."""
        table = self.neck.patch_embed
        embedding = torch.cat([embed_at_stride4(label, table) for label in labels])
        outs = self.neck(maps, embedding, roi)
        return self.decode_head(outs), outs


@dataclass
class InterFormerFeatures:
    """What ``encode`` keeps of an image: the four FPN maps and the frame they were computed in."""

    maps: List[torch.Tensor]  # (1, C, Hp/s, Wp/s) for s = 4, 8, 16, 32
    frame: Tuple[int, int]  # (h, w) of the image inside the padded frame
    padded: Tuple[int, int]  # (Hp, Wp)


def padded_size(h: int, w: int) -> Tuple[int, int]:
    return -(-h // PAD) * PAD, -(-w // PAD) * PAD


def normalized(image: np.ndarray, frame: Tuple[int, int], padded: Tuple[int, int], device) -> torch.Tensor:
    """``(1, 3, Hp, Wp)``: the image resized to ``frame`` (cv2 bilinear, only if needed), normalised as mmcv
    does (``(x - mean) * (1 / std)`` in float32), zero-padded bottom and right to ``padded``."""
    if image.shape[:2] != tuple(frame):
        image = cv2.resize(image, (frame[1], frame[0]), interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(image.copy()).to(device).permute(2, 0, 1)[None].float()  # a copy: cached images are read-only
    mean = torch.tensor(PIXEL_MEAN, device=device).view(1, 3, 1, 1)
    inv_std = (1 / torch.tensor(PIXEL_STD, dtype=torch.float64)).float().to(device).view(1, 3, 1, 1)
    x = (x - mean) * inv_std
    return F.pad(x, (0, padded[1] - frame[1], 0, padded[0] - frame[0]))


def fit_side(h: int, w: int, side: int) -> Tuple[int, int]:
    long = max(h, w)
    if long <= side:
        return h, w
    return max(1, round(h * side / long)), max(1, round(w * side / long))


def config_of_checkpoint(text: str) -> Dict[str, object]:
    """The architecture fields (as :meth:`InterFormerConfig.architecture` names them) of a stored config text,
    with InterFormer's defaults where a field is absent."""
    model = read_config_text(text).get("model")
    if not isinstance(model, dict):
        raise ValueError("the stored config has no model dict")

    def part(key):
        v = model.get(key)
        return v if isinstance(v, dict) else {}

    bb, neck, head = part("backbone"), part("neck"), part("decode_head")
    fpn = bb.get("fpn_cfg") if isinstance(bb.get("fpn_cfg"), dict) else {}
    img = bb.get("img_size", 224)
    img = img[0] if isinstance(img, (tuple, list)) else img

    def tup(v):
        return tuple(v) if isinstance(v, (tuple, list)) else v

    mlp = neck.get("mlp_ratio", 4.0)
    return {"type": model.get("type"), "backbone": bb.get("type"), "neck": neck.get("type"),
            "head": head.get("type"), "embed_dims": bb.get("embed_dims", 768), "num_layers": bb.get("num_layers", 12),
            "num_heads": bb.get("num_heads", 12), "img_size": img, "patch_size": bb.get("patch_size", 16),
            "rescales": tup(fpn.get("rescales", (4, 2, 1, 0.5))), "out_dims": tup(fpn.get("out_dims", (64, 128, 256, 512))),
            "depths": tup(neck.get("depths")), "refine_start": tup(neck.get("refine_start")),
            "neck_heads": tup(neck.get("num_heads")),
            "mlp_ratio": tup(mlp) if isinstance(mlp, (tuple, list)) else (mlp,) * 4,
            "channels": head.get("channels"), "num_classes": head.get("num_classes")}


def check_interformer_meta(config: InterFormerConfig, meta: dict, name: str, source: str) -> None:
    """Refuse a file whose stored config describes another architecture, naming both."""
    if meta.get("publisher_config"):  # a RITM-lineage trainer's file (SimpleClick, SegNext, MST...)
        cls = str(meta["publisher_config"].get("class", "?")).rsplit(".", 1)[-1]
        raise CheckpointError(f"checkpoint {source} does not fit {name} ({config.describe()}): it was written by a "
                              f"RITM-lineage trainer for its {cls}")
    text = meta.get("config")
    if not isinstance(text, str):
        return  # an iseg fine-tune or a bare state dict: the state dict's keys and shapes decide
    try:
        got = config_of_checkpoint(text)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {source}: {exc}") from None
    if got["backbone"] != "MAEWithSimpleFPN" or got["neck"] != "IMSA" or got["head"] != "UPerHead":
        raise CheckpointError(f"checkpoint {source} does not fit {name} ({config.describe()}): its config builds "
                              f"{got['type']} with {got['backbone']} + {got['neck']} + {got['head']}")
    want = config.architecture()
    if {k: got[k] for k in want} != want:
        shown = ", ".join(f"{k}={got[k]}" for k in want if got[k] != want[k])
        known = [n for n, c in INTERFORMER_CONFIGS.items() if {k: got[k] for k in want} == c.architecture()]
        hint = f"; that is {known[0]}: load it with that model name" if known else ""
        raise CheckpointError(f"checkpoint {source} does not fit {name} ({config.describe()}): its config says "
                              f"{shown}{hint}")


def describe_state(state: Dict[str, torch.Tensor]) -> Optional[str]:
    """What an InterFormer state dict looks like, by its shapes (for messages): its registry name if known."""
    pos = state.get("backbone.pos_embed")
    if pos is None or pos.ndim != 3:
        return None
    layers = len({k.split(".")[2] for k in state if k.startswith("backbone.layers.")})
    refine = any(k.startswith("neck.refine_stages.") for k in state)
    what = f"InterFormer with a ViT of dim {pos.shape[-1]}, {layers} blocks"
    for n, c in INTERFORMER_CONFIGS.items():
        if c.dim == pos.shape[-1] and c.depth == layers:
            return f"{n} ({what})"
    return what + (", with refine blocks" if refine else "")


class InterFormerSegmenter(TrainableSegmenter):
    """InterFormer behind the Segmenter interface (see the module docstring).

    Training face: the canvas is 512 x 512 (InterFormer's crops), images resized to fit it (long side), padded
    after normalisation; ``decoder`` mode freezes the ViT and SimpleFPN (their four maps are the cached
    features) and trains the I-MSA neck and both heads; ``full`` trains everything. Clicks only, the NFL on the
    foreground logit, the FCN auxiliary head at 0.4, as InterFormer's recipe. The label map of a training
    sample is rebuilt from its clicks and its previous logits (one step of the hysteresis: the trainer's
    correction rounds carry logits, not maps)."""

    prompt_kinds = ("click",)
    loss_weights = {"focal": 1.0, "dice": 0.0, "iou": 0.0}
    training_modes = ("decoder", "full")

    def __init__(self, name: str, network: InterFormerNetwork, version: Optional[str] = None,
                 device: Optional[torch.device] = None, zoom: Optional[InterFormerZoomIn] = None):
        self.name = name
        self.config = network.config
        self.device = torch.device(device or "cpu")
        self.network = network.to(self.device).eval()
        self.version = version or f"random-{uuid.uuid4().hex[:8]}"
        self.zoom = zoom

    @property
    def preprocessing(self) -> str:
        c = self.config
        zoom = self.zoom.describe() if self.zoom is not None and c.refines else "no ZoomIn"
        return (f"{c.describe()}; image at native resolution up to long side {c.max_side} (resized, bilinear, "
                f"above it), padded to multiples of {PAD}, encoded once; click disks r=5 px in the reference "
                f"label map, previous prediction merged into it (hysteresis); foreground where the logit > 0 "
                f"(argmax); {zoom}; no flip")

    @property
    def image_encoder(self) -> nn.Module:
        return self.network.backbone

    @property
    def cache_key(self) -> str:
        """The encoded frame depends on the long-side cap too."""
        return f"{super().cache_key}:{self.config.max_side}"

    # -- inference ------------------------------------------------------------------------------------------
    def frame_of(self, height: int, width: int) -> Tuple[int, int]:
        return fit_side(height, width, self.config.max_side)

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        frame = self.frame_of(*image.shape[:2])
        padded = padded_size(*frame)
        maps = self.network.backbone(normalized(image, frame, padded, self.device))
        nbytes = sum(m.numel() * m.element_size() for m in maps)
        return ImageEmbedding(self.cache_key, image.shape[:2], InterFormerFeatures(maps, frame, padded), nbytes)

    def frame_clicks(self, prompts: Sequence, original: Tuple[int, int], frame: Tuple[int, int]) -> List[FrameClick]:
        """Clicks -> (row, col, positive) pixels of the frame (image pixels scaled by frame / original)."""
        out = []
        for p in prompts:
            if not isinstance(p, Click):
                raise PromptError(f"{self.name} takes clicks only, not a {type(p).__name__.lower()}: InterFormer "
                                  "was trained on clicks")
            y, x = p.y, p.x
            if tuple(frame) != tuple(original):
                y, x = y * frame[0] / original[0], x * frame[1] / original[1]
            out.append((min(int(y), frame[0] - 1), min(int(x), frame[1] - 1), p.positive))
        return out

    @staticmethod
    def foreground(logits: torch.Tensor, padded: Tuple[int, int]) -> np.ndarray:
        """The prediction over the padded frame: the stride-4 logit upsampled (bilinear, corners not aligned)
        and > 0."""
        up = F.interpolate(logits.float()[None, None], size=tuple(padded), mode="bilinear", align_corners=False)
        return (up[0, 0] > 0).cpu().numpy()

    def label_before(self, feats: InterFormerFeatures, clicks: Sequence[FrameClick],
                     prev_logits: Optional[torch.Tensor]) -> np.ndarray:
        """The label map this decode starts from: the previous state continued by the new clicks, or a fresh map
        (from the previous logits' prediction when they are foreign) with every click painted in order."""
        state = _STATES.get(prev_logits) if prev_logits is not None else None
        todo = state.continued_by(clicks) if state is not None and state.label.shape == tuple(feats.padded) else None
        if todo is None:
            label = new_map(feats.padded)
            if prev_logits is not None:
                label = update_by_prediction(label, self.foreground(prev_logits, feats.padded))
            todo = clicks
        else:
            label = state.label.copy()
        for c in todo:
            paint_click(label, c)
        return label

    @torch.inference_mode()
    def decode(self, embedding: ImageEmbedding, prompts: Sequence, prev_logits: Optional[torch.Tensor] = None,
               multimask: Optional[bool] = None) -> Decoded:
        feats: InterFormerFeatures = embedding.data
        if prev_logits is not None:
            self.check_logits(prev_logits, feats)
        clicks = self.frame_clicks(prompts, embedding.original_size, feats.frame)
        label = self.label_before(feats, clicks, prev_logits)
        roi = None
        if self.zoom is not None and self.config.refines and len(clicks) > self.zoom.skip_clicks:
            previous = (self.foreground(prev_logits, feats.padded) if prev_logits is not None
                        else np.zeros(feats.padded, bool))
            roi = zoom_roi(previous, label, self.zoom)
        logits, _ = self.network.click_logits(feats.maps, [label], roi)
        logits = logits[0, 0].float().cpu()
        _STATES[logits] = LabelState(update_by_prediction(label, self.foreground(logits, feats.padded)), tuple(clicks))
        return Decoded.scored_by_confidence(logits)

    def label_map(self, logits: torch.Tensor) -> Optional[np.ndarray]:
        """The reference label map kept for ``logits`` (after its prediction), if this process made them."""
        state = _STATES.get(logits)
        return None if state is None else state.label

    def check_logits(self, logits: torch.Tensor, feats: Optional[InterFormerFeatures] = None) -> torch.Tensor:
        if logits.ndim != 2:
            raise PromptError(f"{self.name} takes previous logits as a 2-D map at stride 4 of its padded frame, "
                              f"not {tuple(logits.shape)}")
        if feats is not None and tuple(logits.shape) != (feats.padded[0] // 4, feats.padded[1] // 4):
            raise PromptError(f"prev_logits are {tuple(logits.shape)}; this image's {self.name} logits are "
                              f"{(feats.padded[0] // 4, feats.padded[1] // 4)}")
        return logits

    def upsample_logits(self, embedding: ImageEmbedding, logits: torch.Tensor,
                        size: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """As InterFormer: to the padded frame (bilinear, corners not aligned), cropped to the image's frame; then
        resized (bilinear) to ``size`` when that differs (a capped frame, a display size)."""
        feats: InterFormerFeatures = embedding.data
        size = tuple(size or embedding.original_size)
        up = F.interpolate(logits.float()[None, None], size=tuple(feats.padded), mode="bilinear", align_corners=False)
        up = up[:, :, :feats.frame[0], :feats.frame[1]]
        if tuple(feats.frame) != size:
            up = F.interpolate(up, size=size, mode="bilinear", align_corners=False)
        return up[0, 0].numpy()

    # -- training face --------------------------------------------------------------------------------------
    @property
    def canvas(self) -> Tuple[int, int]:
        return self.config.train_size, self.config.train_size

    def frame_size(self, height: int, width: int) -> Tuple[int, int]:
        return fit_side(height, width, self.config.train_size)

    def frame_pixels(self, image: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return normalized(image, self.frame_size(*image.shape[:2]), self.canvas, self.device)

    def _pack(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([m.flatten(1) for m in maps], 1)

    def _unpack(self, features: torch.Tensor, padded: Tuple[int, int]) -> List[torch.Tensor]:
        maps, start = [], 0
        for c, s in zip(self.config.fpn_dims, STRIDES):
            shape = (c, padded[0] // s, padded[1] // s)
            n = shape[0] * shape[1] * shape[2]
            maps.append(features[:, start:start + n].reshape(features.shape[0], *shape))
            start += n
        return maps

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, F)``: the four FPN maps of each frame, flattened and concatenated (stride 4 first)."""
        return self._pack([m.float() for m in self.network.backbone(pixels.to(self.device))])

    def features_of(self, embedding: ImageEmbedding) -> Optional[torch.Tensor]:
        feats: InterFormerFeatures = embedding.data
        if tuple(feats.padded) != self.canvas or tuple(feats.frame) != self.frame_size(*embedding.original_size):
            return None
        return self._pack(feats.maps)

    def forward_train(self, features, prompts, sizes, prev_logits) -> TrainOutput:
        canvas = self.canvas
        labels = []
        for ps, prev in zip(prompts, prev_logits):
            label = new_map(canvas)
            if prev is not None:
                label = update_by_prediction(label, self.foreground(prev.detach(), canvas))
            for p in ps:
                paint_click(label, (min(int(p.y), canvas[0] - 1), min(int(p.x), canvas[1] - 1), p.positive))
            labels.append(label)
        logits, outs = self.network.click_logits(self._unpack(features, canvas), labels)
        return TrainOutput(logits=logits, scores=None,
                           eligible=torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device),
                           aux_logits=self.network.auxiliary_head(outs[2]), aux_weight=0.4)

    def parameters_for(self, mode: str) -> List[nn.Parameter]:
        self.check_mode(mode)
        self.network.requires_grad_(True)
        self.network.backbone.requires_grad_(mode == "full")
        return [p for p in self.network.parameters() if p.requires_grad]

    def checkpoint_state(self) -> Dict[str, torch.Tensor]:
        """InterFormer's key names; without the relative position index buffers (recomputed on load)."""
        return self.network.state_dict()

    def load_checkpoint_state(self, state: Dict[str, torch.Tensor], source: str) -> None:
        state = dict(state)
        window = self.network.backbone.window
        expected_index = None
        for key in [k for k in state if k.endswith(".attn.relative_position_index")]:
            index = state.pop(key)
            if expected_index is None:
                expected_index = relative_position_index(window)
            if tuple(index.shape) != tuple(expected_index.shape) or not torch.equal(index.long(), expected_index):
                raise CheckpointError(f"checkpoint {source} does not fit {self.name}: {key} "
                                      f"{tuple(index.shape)} is not the relative index of a {window[0]}x{window[1]} "
                                      f"token window (expected {tuple(expected_index.shape)})")
        check_state_dict({k: v.shape for k, v in self.network.state_dict().items()}, state, self.name, source,
                         found=describe_state(state))
        self.network.load_state_dict(state)


def build_interformer(name: str, weights, device: torch.device, config: Optional[InterFormerConfig] = None
                      ) -> InterFormerSegmenter:
    config = config or INTERFORMER_CONFIGS[name]
    model = InterFormerSegmenter(name, InterFormerNetwork(config), version=weights.version if weights else None,
                                 device=device)
    if weights is not None:
        check_interformer_meta(config, weights.meta, name, weights.path)
        model.load_checkpoint_state(weights.state, weights.path)
        model.encoder_version = weights.encoder_version or ""
    return model


def with_max_side(model: InterFormerSegmenter, side: int) -> InterFormerSegmenter:
    """The same network encoding up to ``side`` px on the long side (e.g. the authors' native resolution)."""
    model.config = replace(model.config, max_side=int(side))
    return model
