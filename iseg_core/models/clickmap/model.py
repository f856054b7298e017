"""Click-map models (RITM lineage): interactions become maps beside the previous mask, and the network sees
them together with the image.

The input side (:class:`MapsNetwork`, RITM's "itermask" design, shared by SAIC-IS): the image is normalised
with ImageNet statistics; the maps (the previous probability map, positive and negative click disks of the
model's radius in its frame, and for SAIC-IS's multi-input models positive / negative contour and stroke maps)
go through a small conv stack (1x1 to 16 channels, LeakyReLU 0.2, 3x3 to 64, a learned scale) and join the
backbone early: after the HRNet's first stem convolution (RITM, SAIC-IS HRNet18), after the first MiT patch
embedding (SAIC-IS SegFormer, :mod:`.segformer`), or as patch tokens of their own (SimpleClick,
:mod:`.simpleclick`). Logits come at stride 4, upsampled (bilinear, corners aligned) to the frame.

Because the interactions enter at the stem, nothing but the image tensor can be cached per image: ``encode``
prepares the frame, every ``decode`` runs the full network (SegNext, :mod:`.segnext`, is the exception: its
ViT runs once). The frame is the image itself up to ``max_side`` pixels on its long side (RITM's
``LimitLongestSide``, 800 in its demo) or the whole image squashed to a square (SAIC-IS, SimpleClick: 448);
resizing is bilinear with corners aligned, as the official transforms. Previous logits are kept in the frame.

Parameter names follow the published checkpoints (``maps_transform.*``, ``feature_extractor.*``); files
written by the official trainers (``{"state_dict": ..., "config": ...}``) load as they are, and their
serialized config is checked against the model asked for.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CheckpointError, PromptError
from ...prompts import Click, Contour, Scribble
from ..base import RITM_LOGIT_THRESHOLD, Decoded, ImageEmbedding, TrainableSegmenter, TrainOutput
from ..checkpoint import check_state_dict
from .hrnet import HRNetOCR
from .maps import (IMAGENET_MEAN, IMAGENET_STD, batch_points, config_params, disk_maps, fit_long_side, points_tensor,
                   unit_pixels)

HRNET_CLASS = "isegm.model.is_hrnet_model.HRNetModel"


@dataclass(frozen=True, kw_only=True)
class MapsConfig:
    """What every network fed by RITM-style maps shares: disks, its frame, its kinds of input."""

    disk_radius: float = 5.0  # click disks, network pixels
    max_side: int = 800  # long side of the network's frame (larger images are resized)
    square: int = 0  # > 0: the frame is the whole image squashed to square x square (SAIC-IS)
    multi_input: bool = False  # SAIC-IS: contour and stroke maps beside the click disks
    accumulate: bool = False  # SAIC-IS multi-input: every kind's maps at once, not only the latest kind's
    stroke_width: int = 10  # SAIC-IS strokes, drawn as open polylines this thick
    publisher: str = "RITM"

    def frame_size(self, height: int, width: int) -> Tuple[int, int]:
        if self.square:
            return self.square, self.square
        return fit_long_side(height, width, self.max_side)

    def frame_text(self) -> str:
        if self.square:
            return f"whole image squashed to {self.square}x{self.square} (bilinear, corners aligned)"
        return f"image at native resolution up to long side {self.max_side} (resized, bilinear, above it)"

    @property
    def canvas(self) -> Tuple[int, int]:
        side = self.square or self.max_side
        return side, side

    @property
    def map_channels(self) -> int:
        """Previous mask, positive and negative disks, and (multi-input) contours and strokes, each +/-."""
        return 7 if self.multi_input else 3

    @property
    def kinds_text(self) -> str:
        return " (clicks, contours, strokes)" if self.multi_input else ""


@dataclass(frozen=True)
class ClickMapConfig(MapsConfig):
    width: int  # HRNet width (18 or 32)
    ocr_width: int
    small: bool  # HRNet18s
    checkpoint: str  # the official file name

    def describe(self) -> str:
        return f"{self.publisher} HRNet{self.width}{'s' if self.small else ''}+OCR{self.ocr_width}{self.kinds_text}"


# RITM's iterative-mask models trained on COCO+LVIS (models/iter_mask/hrnet*_cocolvis_itermask_3p.py)
CLICKMAP_CONFIGS: Dict[str, ClickMapConfig] = {
    "ritm_hrnet18s_cocolvis": ClickMapConfig(18, 48, True, "coco_lvis_h18s_itermask.pth"),
    "ritm_hrnet18_cocolvis": ClickMapConfig(18, 64, False, "coco_lvis_h18_itermask.pth"),
    "ritm_hrnet32_cocolvis": ClickMapConfig(32, 128, False, "coco_lvis_h32_itermask.pth"),
    # SAIC-IS's multi-input HRNet18 (models/hrnet/hrnet18_cocolvis_itermask_multi_input.py): disks of radius 3,
    # 448 px training crops and evaluation frames
    "saicis_hrnet18_multi_cocolvis": ClickMapConfig(18, 64, False, "hrnet18_multi.pth", disk_radius=3.0, square=448,
                                                    multi_input=True, publisher="SAIC-IS"),
}


class Scale(nn.Module):
    """Multiplies by |scale| (RITM's ScaleLayer with lr_mult 1)."""

    def __init__(self, init: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.abs()


class MapsNetwork(nn.Module):
    """The RITM-style input side: ImageNet normalisation and the interaction maps (previous probabilities,
    click disks, and for multi-input models contour and stroke maps) through RITM's "Conv1S" stack (1x1 to 16
    channels, LeakyReLU 0.2, 3x3 to 64, strided for the HRNets, a learned scale). Subclasses add
    ``feature_extractor`` and :meth:`features` (image, transformed maps) -> (logits, aux) at stride 4."""

    unused_keys: Tuple[str, ...] = ()  # prefixes of checkpoint keys the network does not use (dropped on load)

    def __init__(self, config: MapsConfig, strided: bool = True):
        super().__init__()
        self.config = config
        self.maps_transform = nn.Sequential(nn.Conv2d(config.map_channels, 16, 1), nn.LeakyReLU(0.2),
                                            nn.Conv2d(16, 64, 3, 2 if strided else 1, 1), Scale(0.05))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, image: torch.Tensor, maps: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        raise NotImplementedError

    def forward(self, image: torch.Tensor, prev: torch.Tensor, points: torch.Tensor,
                with_aux: bool = False, drawn: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """image ``(B, 3, H, W)`` in [0, 1], prev ``(B, 1, H, W)`` probabilities, points as :func:`disk_maps`,
        ``drawn`` (multi-input models) ``(B, 4, H, W)`` contour and stroke maps (zeros when None)
        -> (logits, aux logits or None), ``(B, 1, H, W)``; the aux head (a training loss) only when asked."""
        h, w = image.shape[-2:]
        maps = [prev, disk_maps(points, h, w, self.config.disk_radius)]
        if self.config.multi_input:
            maps.append(drawn if drawn is not None else image.new_zeros((image.shape[0], 4, h, w)))
        out, aux = self.features((image - self.mean) / self.std, self.maps_transform(torch.cat(maps, 1)))

        def up(t):
            return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=True)

        return up(out), (up(aux) if with_aux and aux is not None else None)

    def train(self, mode: bool = True) -> "MapsNetwork":
        """Fine-tuning runs on batches of a few images: BatchNorm keeps its published statistics (its affine
        parameters still train), as detection fine-tuning freezes BN; RITM's own trainer used batches of 28."""
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self


class ClickMapNetwork(MapsNetwork):
    """RITM's ISModel with ``use_rgb_conv=False``, disks and a previous-mask channel, on an HRNet+OCR (SAIC-IS's
    multi-input HRNet18 too)."""

    def __init__(self, config: ClickMapConfig):
        super().__init__(config)
        self.feature_extractor = HRNetOCR(config.width, config.ocr_width, config.small)

    def features(self, image, maps):
        return self.feature_extractor(image, maps)


def input_kinds(value) -> Tuple[str, ...]:
    """SAIC-IS's ``input_type`` (one IType or a list, pickled enum members read as inert stand-ins)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return tuple(str(getattr(v, "args", (v,))[0]) if getattr(v, "args", None) else str(v) for v in items)


def adapt_clickmap(config: ClickMapConfig, published: Optional[dict], name: str, source: str) -> ClickMapConfig:
    """A file written by RITM's or SAIC-IS's trainer says what it is: refuse one of another architecture, naming
    both; a SAIC-IS file also says whether its kinds of input are drawn together (``accumulate_multi_input``)."""
    if not published:
        return config
    params = config_params(published)
    found_class = published.get("class", "?")
    ritm_file = "input_type" not in params
    want = {"width": config.width, "ocr_width": config.ocr_width, "small": config.small, "use_disks": True,
            "norm_radius": config.disk_radius, "with_prev_mask": True, "use_rgb_conv": False,
            "inputs": ("point", "contour", "stroke") if config.multi_input else ("point",), "strided": True}
    defaults = {"small": False, "use_disks": False, "norm_radius": 260, "with_prev_mask": False,
                "use_rgb_conv": True, "width": 48, "ocr_width": 256}
    got = {k: params.get(k, defaults.get(k)) for k in want}
    got["inputs"] = ("point",) if ritm_file else input_kinds(params["input_type"])
    got["strided"] = ritm_file or bool(params.get("is_strided_maps_transform", False))
    if found_class != HRNET_CLASS or got != want:
        shown = ", ".join(f"{k}={got[k]}" for k in want)
        kind = ("RITM " if ritm_file else "SAIC-IS ") + found_class.rsplit(".", 1)[-1]
        raise CheckpointError(
            f"checkpoint {source} does not fit {name} ({config.describe()}, disks of radius {config.disk_radius:g}, "
            f"previous-mask channel): its config says {kind}({shown})")
    return replace(config, accumulate=bool(params.get("accumulate_multi_input", False)))


@dataclass(frozen=True)
class EmptyOutline:
    """A contour or stroke step with nothing drawn (SAIC-IS's simulators sometimes draw none; its step still runs:
    the previous mask and empty contour / stroke maps, the clicks not shown)."""

    kind: str = "contour"
    positive: bool = True
    points: Tuple = ()


def _same(rows, cols):
    """Training prompts are in frame pixels already."""
    return rows, cols


class ClickMapSegmenter(TrainableSegmenter):
    """Any click-map network ``(image, prev, points) -> (logits, aux)`` whose config says its frame.

    Training face: the clicks enter at the stem, so nothing can be computed once per image: the only mode is
    ``full``, the "features" are the frames themselves (the image resized into the frame, top-left in the
    square canvas, zero padding), and every forward runs the whole network. Clicks only, the NFL alone
    (alpha 0.5, gamma 2), as the authors' trainers."""

    align_corners = True  # how the frame's logits are resized to the image (RITM's predictor and ZoomIn)
    # RITM and its lineage (SAIC-IS, SimpleClick, SegNext, MST, MIS) decide at probability 0.49 (their
    # predictors' and evaluations' pred_thr)
    default_threshold = RITM_LOGIT_THRESHOLD
    training_modes = ("full",)

    @property
    def prompt_kinds(self) -> Tuple[str, ...]:
        return ("click", "scribble", "contour") if self.config.multi_input else ("click",)
    loss_weights = {"focal": 1.0, "dice": 0.0, "iou": 0.0}

    def __init__(self, name: str, network: nn.Module, version: Optional[str] = None,
                 device: Optional[torch.device] = None):
        self.name = name
        self.config = network.config
        self.device = torch.device(device or "cpu")
        self.network = network.to(self.device).eval()
        self.version = version or f"random-{uuid.uuid4().hex[:8]}"

    @property
    def preprocessing(self) -> str:
        return (f"{self.config.describe()}; {self.config.frame_text()}; click disks r={self.config.disk_radius:g} px; "
                "previous mask fed back")

    def frame_size(self, height: int, width: int) -> Tuple[int, int]:
        return self.config.frame_size(height, width)

    def _frame(self, image: np.ndarray) -> torch.Tensor:
        """``(1, 3, fh, fw)`` in [0, 1]: the image resized to its frame (bilinear, corners aligned)."""
        h, w = image.shape[:2]
        pixels = unit_pixels(image, self.device)
        fh, fw = self.frame_size(h, w)
        if (fh, fw) != (h, w):
            pixels = F.interpolate(pixels, size=(fh, fw), mode="bilinear", align_corners=True)
        return pixels

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        pixels = self._frame(image)
        return ImageEmbedding(self.cache_key, image.shape[:2], pixels, pixels.numel() * 4)

    # -- training face -----------------------------------------------------------------------------------
    @property
    def canvas(self) -> Tuple[int, int]:
        return self.config.canvas

    def frame_pixels(self, image: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return self._padded(self._frame(image))

    def _padded(self, pixels: torch.Tensor) -> torch.Tensor:
        ch, cw = self.canvas
        return F.pad(pixels, (0, cw - pixels.shape[-1], 0, ch - pixels.shape[-2]))

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.to(self.device).float()

    def features_of(self, embedding: ImageEmbedding) -> torch.Tensor:
        return self._padded(embedding.data)

    def forward_train(self, features, prompts, sizes, prev_logits) -> TrainOutput:
        frame = tuple(features.shape[-2:])
        prev, points = self.train_inputs(features, frame, prompts, prev_logits)
        drawn = None
        if self.config.multi_input:
            drawn = torch.from_numpy(np.stack([self.drawn_maps(ps, _same, frame) for ps in prompts])).to(features)
        return self.train_output(self.network(features, prev, points, drawn=drawn)[0])

    def train_inputs(self, features: torch.Tensor, frame: Tuple[int, int], prompts, prev_logits):
        """Previous probabilities ``(B, 1, *frame)`` (zeros where none) and the batch's click points, in frame
        pixels."""
        prev = torch.stack([torch.sigmoid(p.float()) if p is not None else features.new_zeros(frame)
                            for p in prev_logits])[:, None].to(features)
        rows = [self.drawn_clicks(ps, _same) for ps in prompts]
        return prev, batch_points(rows, self.device)

    @staticmethod
    def train_output(logits: torch.Tensor) -> TrainOutput:
        """One candidate per sample, no quality head."""
        return TrainOutput(logits=logits, scores=None,
                           eligible=torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device))

    def parameters_for(self, mode: str) -> List[nn.Parameter]:
        self.check_mode(mode)
        self.network.requires_grad_(True)
        return list(self.network.parameters())

    def checkpoint_state(self) -> Dict[str, torch.Tensor]:
        return self.network.state_dict()

    def load_checkpoint_state(self, state: Dict[str, torch.Tensor], source: str) -> None:
        """The checkpoint's keys the network uses (its ``unused_keys`` dropped), checked, then loaded."""
        state = {k: v for k, v in state.items() if not k.startswith(self.network.unused_keys)}
        check_state_dict({k: v.shape for k, v in self.network.state_dict().items()}, state, self.name, source)
        self.network.load_state_dict(state)

    # -- prompts -------------------------------------------------------------------------------------------
    def check_clicks(self, prompts: Sequence) -> None:
        kinds = (Click, Contour, Scribble, EmptyOutline) if self.config.multi_input else (Click,)
        for p in prompts:
            if not isinstance(p, kinds):
                taken = "clicks, contours and strokes" if self.config.multi_input else "clicks"
                raise PromptError(f"{self.name} takes {taken} only, not a {type(p).__name__.lower()}: "
                                  "its network was trained on those maps")

    def drawn_clicks(self, prompts: Sequence, to_frame: Callable) -> List[Tuple[float, float, bool]]:
        """The clicks the network sees, as (row, col, positive) in the frame (``to_frame(rows, cols)``). SAIC-IS's
        way for its multi-input models: a step with a contour or a stroke shows that one alone (clicks too when
        the model accumulates its kinds of input); a click step shows every click so far."""
        self.check_clicks(prompts)
        shown = not (self.config.multi_input and prompts and not isinstance(prompts[-1], Click)
                     and not self.config.accumulate)
        clicks = [p for p in prompts if isinstance(p, Click)] if shown else []
        if not clicks:
            return []
        rows, cols = to_frame(np.array([p.y for p in clicks], np.float64), np.array([p.x for p in clicks], np.float64))
        return [(float(r), float(c), p.positive) for r, c, p in zip(rows, cols, clicks)]

    def drawn_maps(self, prompts: Sequence, to_frame: Callable, frame: Tuple[int, int]) -> np.ndarray:
        """SAIC-IS's contour and stroke maps ``(4, H, W)`` float32 in the frame (positive, negative contour;
        positive, negative stroke) for the latest prompt when it is a contour (filled polygon) or a stroke (open
        polyline, ``stroke_width`` px), its vertices mapped by ``to_frame(rows, cols)`` and truncated to whole
        pixels as SAIC-IS draws them."""
        maps = np.zeros((4,) + tuple(frame), np.float32)
        last = prompts[-1] if prompts else None
        if isinstance(last, (Contour, Scribble)):
            xy = np.asarray(last.points, np.float64)
            rows, cols = to_frame(xy[:, 1], xy[:, 0])
            pts = np.stack([cols, rows], 1).astype(np.int32)
            layer = np.zeros(frame, np.uint8)
            if isinstance(last, Contour):  # around the object (positive) or a region that is not (negative)
                cv2.fillPoly(layer, [pts], 1)
                maps[0 if last.positive else 1] = layer
            else:  # a two-point stroke is a line here (SAIC-IS skips strokes under 3 points; it never makes them)
                cv2.polylines(layer, [pts], False, 1, self.config.stroke_width)
                maps[2 if last.positive else 3] = layer
        return maps

    @staticmethod
    def resized(original: Tuple[int, int], frame: Tuple[int, int]) -> Callable:
        """Image pixels -> frame pixels, ``frame * v / original`` per axis (as RITM's and SAIC-IS's resizing
        transforms map interactions)."""
        return lambda rows, cols: (frame[0] * rows / original[0], frame[1] * cols / original[1])

    def points(self, prompts: Sequence, original: Tuple[int, int], frame: Tuple[int, int]) -> torch.Tensor:
        """Clicks -> :func:`points_tensor` in the frame (scaled by frame / original size per axis)."""
        return points_tensor(self.drawn_clicks(prompts, self.resized(original, frame)), self.device)

    @torch.inference_mode()
    def decode(self, embedding: ImageEmbedding, prompts: Sequence, prev_logits: Optional[torch.Tensor] = None,
               multimask: Optional[bool] = None) -> Decoded:
        pixels: torch.Tensor = embedding.data
        frame = tuple(pixels.shape[-2:])
        prev = self.prev_probabilities(prev_logits, frame)
        drawn = None
        if self.config.multi_input:
            drawn = torch.from_numpy(self.drawn_maps(prompts, self.resized(embedding.original_size, frame),
                                                     frame))[None].to(self.device)
        logits, _ = self.network(pixels, prev, self.points(prompts, embedding.original_size, frame), drawn=drawn)
        return self.decoded(logits[0, 0])

    def prev_probabilities(self, prev_logits: Optional[torch.Tensor], frame: Tuple[int, int]) -> torch.Tensor:
        """``(1, 1, *frame)`` probabilities of the previous logits (zeros before the first interaction)."""
        if prev_logits is None:
            return torch.zeros((1, 1) + tuple(frame), device=self.device)
        if tuple(prev_logits.shape) != tuple(frame):
            raise PromptError(f"prev_logits are {tuple(prev_logits.shape)}, this image's {self.name} frame is {frame}")
        return torch.sigmoid(prev_logits.to(self.device, torch.float32))[None, None]

    @staticmethod
    def decoded(logits: torch.Tensor) -> Decoded:
        """No quality head in these networks: the score is the mean confidence inside the predicted object."""
        return Decoded.scored_by_confidence(logits.float().cpu())

    def check_logits(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2:
            raise PromptError(f"{self.name} takes previous logits as a 2-D (H, W) map of its frame, not {tuple(logits.shape)}")
        return logits

    def upsample_logits(self, embedding: ImageEmbedding, logits: torch.Tensor,
                        size: Optional[Tuple[int, int]] = None) -> np.ndarray:
        size = tuple(size or embedding.original_size)
        if tuple(logits.shape[-2:]) == size:
            return logits.float().numpy().copy()
        up = F.interpolate(logits.float()[None, None], size=size, mode="bilinear", align_corners=self.align_corners)
        return up[0, 0].numpy()


def build_clickmap(name: str, weights, device: torch.device, config=None) -> ClickMapSegmenter:
    """RITM and SAIC-IS (HRNet), SAIC-IS (SegFormer), SimpleClick (plain ViT) and MST models by registry name;
    ``config``: another size of the same architecture (tests build small ones)."""
    from .mst import MST_CONFIGS, MSTNetwork, MSTSegmenter, adapt_mst
    from .segformer import SEGFORMER_CONFIGS, SegFormerMapsNetwork, adapt_segformer
    from .simpleclick import SIMPLECLICK_CONFIGS, SimpleClickNetwork, adapt_simpleclick

    published = weights.meta.get("publisher_config") if weights is not None else None
    source = weights.path if weights else ""
    segmenter = ClickMapSegmenter
    if name in MST_CONFIGS:
        network = MSTNetwork(adapt_mst(config or MST_CONFIGS[name], published, name, source))
        segmenter = MSTSegmenter
    elif name in SEGFORMER_CONFIGS:
        network = SegFormerMapsNetwork(adapt_segformer(config or SEGFORMER_CONFIGS[name], published, name, source))
    elif name in SIMPLECLICK_CONFIGS:
        network = SimpleClickNetwork(adapt_simpleclick(config or SIMPLECLICK_CONFIGS[name], published, name, source))
    else:
        network = ClickMapNetwork(adapt_clickmap(config or CLICKMAP_CONFIGS[name], published, name, source))
    model = segmenter(name, network, version=weights.version if weights else None, device=device)
    if weights is not None:
        model.load_checkpoint_state(weights.state, weights.path)
    return model


__all__ = ["CLICKMAP_CONFIGS", "ClickMapConfig", "EmptyOutline", "ClickMapNetwork", "ClickMapSegmenter", "build_clickmap",
           "adapt_clickmap", "disk_maps", "points_tensor"]
