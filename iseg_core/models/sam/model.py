"""SAM as an iseg Segmenter: timm's ``VisionTransformerSAM`` image encoder (built here, no timm download),
our prompt encoder and mask decoder, SAM's preprocessing, and the fast per-click path.
"""
from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.models.vision_transformer_sam import VisionTransformerSAM
from torch import nn

from ...errors import PromptError
from ...prompts import Prompt
from ...runtime import bf16_is_fast
from ..base import Decoded, ImageEmbedding, Segmenter
from .checkpoint import check_sam_state_dict, module_to_official, official_to_module
from .layers import to_tokens
from .mask_decoder import SamMaskDecoder
from .prompt_encoder import SamPromptEncoder
from .prompting import to_sam_inputs

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SamConfig:
    """Architecture of a SAM variant. Only the image encoder differs between ViT-B, -L and -H."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: Tuple[int, ...] = (2, 5, 8, 11)
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_dim: int = 256

    @property
    def embedding_size(self) -> int:
        return self.image_size // self.patch_size


SAM_CONFIGS: Dict[str, SamConfig] = {
    "sam_vit_b": SamConfig(768, 12, 12, (2, 5, 8, 11)),
    "sam_vit_l": SamConfig(1024, 24, 16, (5, 11, 17, 23)),
    "sam_vit_h": SamConfig(1280, 32, 16, (7, 15, 23, 31)),
    # Not a published model: a small SAM (6.7 M parameters; 256 px input, 16 px patches, a 16x16 embedding,
    # 64x64 mask logits; SAM's prompt encoder and mask decoder) that trains from scratch on a CPU.
    "sam_mini": SamConfig(192, 4, 3, (1, 3), image_size=256, patch_size=16, window_size=8),
}


class SamNetwork(nn.Module):
    """The three trainable parts. ``official_state_dict`` gives keys exactly as SAM's own files name them."""

    def __init__(self, config: SamConfig):
        super().__init__()
        self.config = config
        s = config.embedding_size
        self.image_encoder = VisionTransformerSAM(
            img_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            global_attn_indexes=config.global_attn_indexes,
            window_size=config.window_size,
            use_rel_pos=True,
            use_abs_pos=True,
            neck_chans=config.prompt_dim,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_classes=0,
            global_pool="",
        )
        self.prompt_encoder = SamPromptEncoder(config.prompt_dim, (s, s), (config.image_size,) * 2, 16)
        self.mask_decoder = SamMaskDecoder(config.prompt_dim)

    def official_state_dict(self) -> Dict[str, torch.Tensor]:
        return {module_to_official(k): v for k, v in self.state_dict().items()}

    def load_official_state_dict(self, state: Dict[str, torch.Tensor], model_name: str, source: str) -> None:
        expected = {k: v.shape for k, v in self.official_state_dict().items()}
        check_sam_state_dict(expected, state, model_name, source)
        self.load_state_dict({official_to_module(k): v for k, v in state.items() if k in expected}, strict=True)


def preprocess_shape(h: int, w: int, long_side: int) -> Tuple[int, int]:
    """(H, W) after resizing so the long side is ``long_side`` (SAM's rounding)."""
    scale = long_side / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def resize_long_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """``uint8`` RGB resized so its long side is ``long_side`` (PIL bilinear, as SAM does)."""
    nh, nw = preprocess_shape(image.shape[0], image.shape[1], long_side)
    return np.array(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))


def normalize_padded(resized: np.ndarray, size: int, device=None) -> torch.Tensor:
    """``(1, 3, size, size)`` float32: SAM's pixel normalisation, zero padding bottom/right."""
    x = torch.from_numpy(np.ascontiguousarray(resized)).to(device).permute(2, 0, 1).unsqueeze(0).float()
    mean = torch.tensor(PIXEL_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return F.pad(x, (0, size - resized.shape[1], 0, size - resized.shape[0]))


class SamSegmenter(Segmenter):
    """SAM behind the Segmenter interface.

    The image encoder may run in bfloat16 (``encoder_dtype``); prompt encoding and mask decoding always
    run in float32, since they are cheap and the logits are fed back click after click.
    """

    def __init__(
        self,
        name: str,
        network: SamNetwork,
        version: Optional[str] = None,
        device: Optional[torch.device] = None,
        encoder_dtype: torch.dtype = torch.float32,
        encoder_version: Optional[str] = None,
    ):
        self.name = name
        self.network = network.eval()
        self.device = torch.device(device or "cpu")
        self.encoder_dtype = encoder_dtype
        self.network.to(self.device)
        if encoder_dtype != torch.float32:
            if encoder_dtype == torch.bfloat16 and not bf16_is_fast(self.device):
                warnings.warn(
                    f"{self.device.type} has no native bfloat16 matmul: the bf16 image encoder will be several times "
                    "slower than float32 here (use dtype=None)", RuntimeWarning, stacklevel=3)
            self.network.image_encoder.to(encoder_dtype)
        base = version or f"random-{uuid.uuid4().hex[:8]}"
        suffix = "" if encoder_dtype == torch.float32 else f"-{str(encoder_dtype).split('.')[-1]}"
        self.version = base + suffix
        # Embeddings depend on the encoder only: a decoder-only fine-tune names its base's encoder here, so
        # the images already encoded by the base model stay cached when the fine-tuned model swaps in.
        self.encoder_version = (encoder_version + suffix) if encoder_version else self.version
        cfg = network.config
        self._mask_size = (4 * cfg.embedding_size,) * 2

    @property
    def cache_key(self) -> str:
        return f"{self.name}@{self.encoder_version}"

    @property
    def config(self) -> SamConfig:
        return self.network.config

    def preprocess(self, image: np.ndarray) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Resize (long side = image_size, PIL bilinear as SAM does), normalise, pad bottom/right.
        Returns ``(1, 3, S, S)`` float32 on the model device and the resized (H, W)."""
        resized = resize_long_side(image, self.config.image_size)
        return normalize_padded(resized, self.config.image_size, self.device), resized.shape[:2]

    @property
    def encoder_device(self) -> torch.device:
        """Where the image encoder runs: the model's device, unless it was moved apart (ZeroGPU: the encoder on
        a GPU lent per call, prompt decoding on the CPU; see :mod:`iseg_core.zerogpu`)."""
        return next(self.network.image_encoder.parameters()).device

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        x, input_size = self.preprocess(image)
        features = self.network.image_encoder(x.to(self.encoder_device, self.encoder_dtype)).float().to(self.device)
        # Stored token-major (what the decoder reads); ``data`` stays (1, C, h, w) as a view of it.
        features = to_tokens(features).transpose(1, 2).unflatten(2, features.shape[-2:])
        return ImageEmbedding(
            model_key=self.cache_key,
            original_size=(int(image.shape[0]), int(image.shape[1])),
            data=features,
            nbytes=features.numel() * features.element_size(),
            extra={"input_size": input_size},
        )

    @property
    def preprocessing(self) -> str:
        s = self.config.image_size
        return f"long side {s} (bilinear), zero padding to {s}x{s} bottom-right, SAM pixel mean/std"

    @staticmethod
    def _tokens(embedding: ImageEmbedding) -> torch.Tensor:
        """The embedding as a contiguous ``(1, h*w, C)`` sequence (free for embeddings made by :meth:`encode`)."""
        return to_tokens(embedding.data)

    def check_logits(self, logits: torch.Tensor) -> torch.Tensor:
        h, w = self._mask_size
        if logits.numel() != h * w or logits.shape[-2:] != (h, w):
            raise PromptError(
                f"prev_logits must be the {h}x{w} low-res logits of a previous prediction, got shape {tuple(logits.shape)}"
            )
        return logits.reshape(1, 1, h, w).to(self.device, torch.float32)

    @torch.inference_mode()
    def decode(
        self,
        embedding: ImageEmbedding,
        prompts: Sequence[Prompt],
        prev_logits: Optional[torch.Tensor] = None,
        multimask: Optional[bool] = None,
    ) -> Decoded:
        """Low-res logits ``(1, 4h, 4w)`` in the padded model frame, and SAM's predicted IoU.

        ``multimask=None`` asks SAM for its three candidates only in the ambiguous case (a single click
        and no previous mask) and keeps the best-scored one; otherwise SAM's single-mask output is used.
        ``prev_logits`` replaces a contour's rasterised mask prompt when both are present.
        """
        inputs = to_sam_inputs(
            prompts, embedding.original_size, embedding.extra["input_size"], self._mask_size, self.config.image_size
        )
        enc, dec = self.network.prompt_encoder, self.network.mask_decoder
        to = partial(torch.as_tensor, device=self.device)
        points = to(inputs.points).unsqueeze(0) if inputs.points is not None else None
        labels = to(inputs.labels).unsqueeze(0) if inputs.labels is not None else None
        box = to(inputs.box).unsqueeze(0) if inputs.box is not None else None
        mask = prev_logits
        if mask is None and inputs.mask_logits is not None:
            mask = to(inputs.mask_logits).view(1, 1, *self._mask_size)
        if multimask is None:
            multimask = inputs.single_click and mask is None

        sparse = enc.embed_sparse(points, labels, box)
        dense = enc.embed_dense_tokens(mask)
        mask_tokens, iou, image = dec.run_transformer(self._tokens(embedding), enc.dense_pe_tokens(), sparse, dense)
        best = 1 + int(torch.argmax(iou[0, 1:])) if multimask else 0
        s = self.config.embedding_size
        logits = dec.read_masks(dec.upscaled_pixels(image), mask_tokens, torch.tensor([best]), (s, s))[0]
        return Decoded(logits=logits, score=float(iou[0, best]))

    def upsample_logits(self, embedding, logits, size=None) -> np.ndarray:
        """Bilinear 4h x 4w -> S x S, crop the padding, bilinear to ``size`` (SAM's two steps, done by cv2
        on one mask). Only the output-sized float buffer is allocated."""
        h, w = size or embedding.original_size
        nh, nw = embedding.extra["input_size"]
        s = self.config.image_size
        low = logits.detach().reshape(self._mask_size).float().cpu().numpy()
        padded = cv2.resize(low, (s, s), interpolation=cv2.INTER_LINEAR)
        full = cv2.resize(padded[:nh, :nw], (w, h), interpolation=cv2.INTER_LINEAR)
        return full
