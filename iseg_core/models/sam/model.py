"""SAM as an iseg Segmenter: timm's ``VisionTransformerSAM`` image encoder (built here, no timm download),
our prompt encoder and mask decoder, SAM's preprocessing, and the fast per-click path.
"""
from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

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
from ..base import Decoded, ImageEmbedding, TrainableSegmenter, TrainOutput
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


class SamSegmenter(TrainableSegmenter):
    """SAM behind the Segmenter interface, with the training face (see :class:`TrainableSegmenter`).

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
    def config(self) -> SamConfig:
        return self.network.config

    @property
    def image_encoder(self) -> nn.Module:
        return self.network.image_encoder

    @property
    def encoder_device(self) -> torch.device:
        """Where the image encoder runs: the model's device, unless it was moved apart (ZeroGPU: the encoder on
        a GPU lent per call, prompt decoding on the CPU; see :mod:`iseg_core.zerogpu`)."""
        return next(self.network.image_encoder.parameters()).device

    # -- the frame: long side = image_size, zero padding bottom / right ------------------------------------
    @property
    def canvas(self) -> Tuple[int, int]:
        return (self.config.image_size,) * 2

    def frame_size(self, height: int, width: int) -> Tuple[int, int]:
        return preprocess_shape(height, width, self.config.image_size)

    def frame_pixels(self, image: np.ndarray) -> torch.Tensor:
        """Resize (long side = image_size, PIL bilinear as SAM does), normalise, pad bottom/right:
        ``(1, 3, S, S)`` float32 on the model device."""
        return normalize_padded(resize_long_side(image, self.config.image_size), self.config.image_size, self.device)

    @property
    def preprocessing(self) -> str:
        s = self.config.image_size
        return f"long side {s} (bilinear), zero padding to {s}x{s} bottom-right, SAM pixel mean/std"

    # -- encoding ------------------------------------------------------------------------------------------
    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """Token-major features ``(B, h*w, C)`` (what the decoder reads), float32 on the model device."""
        x = pixels.to(self.encoder_device, self.encoder_dtype)
        return to_tokens(self.network.image_encoder(x)).float().to(self.device)

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        tokens = self.encode_frames(self.frame_pixels(image))
        s = self.config.embedding_size
        # ``data`` is (1, C, h, w) as a view of the token-major features (free to read either way)
        return ImageEmbedding(
            model_key=self.cache_key,
            original_size=(int(image.shape[0]), int(image.shape[1])),
            data=tokens.transpose(1, 2).unflatten(2, (s, s)),
            nbytes=tokens.numel() * tokens.element_size(),
            extra={"input_size": self.frame_size(*image.shape[:2])},
        )

    def features_of(self, embedding: ImageEmbedding) -> torch.Tensor:
        """The embedding as a contiguous ``(1, h*w, C)`` sequence (free for embeddings made by :meth:`encode`)."""
        return to_tokens(embedding.data)

    # -- decoding ------------------------------------------------------------------------------------------
    def check_logits(self, logits: torch.Tensor) -> torch.Tensor:
        h, w = self._mask_size
        if logits.numel() != h * w or logits.shape[-2:] != (h, w):
            raise PromptError(
                f"prev_logits must be the {h}x{w} low-res logits of a previous prediction, got shape {tuple(logits.shape)}"
            )
        return logits.reshape(1, 1, h, w).to(self.device, torch.float32)

    def _prompt_tokens(self, prompts: Sequence[Sequence[Prompt]], original_sizes, input_sizes, prev_logits):
        """Sparse tokens ``(B, N, C)`` (padded with not-a-point tokens), dense tokens ``(B, h*w or 1, C)`` and,
        per sample, whether it is SAM's ambiguous case (a lone click, no mask prompt). ``prev_logits`` replaces
        a contour's rasterised mask prompt when both are present."""
        enc = self.network.prompt_encoder
        sparse, masks, ambiguous = [], [], []
        for p, original, inp, prev in zip(prompts, original_sizes, input_sizes, prev_logits):
            x = to_sam_inputs(p, original, inp, self._mask_size, self.config.image_size)
            as_t = partial(_batch_of_one, device=self.device)
            sparse.append(enc.embed_sparse(as_t(x.points), as_t(x.labels), as_t(x.box)))
            mask = prev if prev is not None else x.mask_logits
            masks.append(None if mask is None else as_t(mask, dtype=torch.float32).reshape(1, 1, *self._mask_size))
            ambiguous.append(x.single_click and mask is None)
        n = max(t.shape[1] for t in sparse)
        pad = enc.not_a_point_embed.weight.unsqueeze(0)  # (1, 1, C)
        sparse_t = torch.cat([torch.cat([t, pad.expand(1, n - t.shape[1], -1)], 1) for t in sparse])
        given = [i for i, m in enumerate(masks) if m is not None]
        if not given:
            return sparse_t, enc.embed_dense_tokens(None, batch=len(masks)), ambiguous
        embedded = enc.embed_dense_tokens(torch.cat([masks[i] for i in given]))  # (len(given), h*w, C)
        if len(given) == len(masks):
            return sparse_t, embedded, ambiguous
        rows = list(enc.embed_dense_tokens(None, batch=len(masks)).expand(-1, embedded.shape[1], -1).unbind(0))
        for j, i in enumerate(given):
            rows[i] = embedded[j]
        return sparse_t, torch.stack(rows), ambiguous

    @torch.inference_mode()
    def decode(self, embedding: ImageEmbedding, prompts: Sequence[Prompt], prev_logits: Optional[torch.Tensor] = None,
               multimask: Optional[bool] = None) -> Decoded:
        """Low-res logits ``(1, 4h, 4w)`` in the padded model frame, and SAM's predicted IoU.

        ``multimask=None`` asks SAM for its three candidates only in the ambiguous case (a single click
        and no previous mask) and keeps the best-scored one; otherwise SAM's single-mask output is used.
        ``prev_logits`` replaces a contour's rasterised mask prompt when both are present.
        """
        sparse, dense, ambiguous = self._prompt_tokens(
            [prompts], [embedding.original_size], [embedding.extra["input_size"]], [prev_logits])
        if multimask is None:
            multimask = ambiguous[0]
        enc, dec = self.network.prompt_encoder, self.network.mask_decoder
        mask_tokens, iou, image = dec.run_transformer(self.features_of(embedding), enc.dense_pe_tokens(), sparse, dense)
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

    # -- training ------------------------------------------------------------------------------------------
    def forward_train(self, features, prompts, sizes, prev_logits) -> TrainOutput:
        """All four mask tokens ``(B, 4, 4h, 4w)`` and their IoU predictions; eligible: token 0, or tokens 1-3
        in the ambiguous case (SAM's rule)."""
        sparse, dense, ambiguous = self._prompt_tokens(prompts, sizes, sizes, prev_logits)
        enc, dec = self.network.prompt_encoder, self.network.mask_decoder
        s = self.config.embedding_size
        # computed here, not taken from the decoder's cache: that one may be an inference-mode tensor
        pe = to_tokens(enc.pe_layer.grid(s, s).unsqueeze(0))
        mask_tokens, iou, image = dec.run_transformer(features, pe, sparse, dense)
        masks = dec.read_masks(dec.upscaled_pixels(image), mask_tokens, torch.arange(4), (s, s))
        amb = torch.tensor(ambiguous, device=masks.device)
        eligible = torch.stack([~amb, amb, amb, amb], dim=1)
        return TrainOutput(logits=masks, scores=iou, eligible=eligible)

    def parameters_for(self, mode: str) -> List[nn.Parameter]:
        """``decoder``: prompt encoder + mask decoder (the image encoder frozen); ``full``: everything (the
        encoder in float32)."""
        self.check_mode(mode)
        if mode == "full" and self.encoder_dtype != torch.float32:
            self.network.image_encoder.float()  # an encoder that trains does so in float32
            self.encoder_dtype = torch.float32
        self.network.requires_grad_(True)
        self.network.image_encoder.requires_grad_(mode == "full")
        return [p for p in self.network.parameters() if p.requires_grad]

    def checkpoint_state(self) -> Dict[str, torch.Tensor]:
        return self.network.official_state_dict()

    def load_checkpoint_state(self, state: Dict[str, torch.Tensor], source: str) -> None:
        self.network.load_official_state_dict(state, self.name, source)


def _batch_of_one(a, device, dtype=None) -> Optional[torch.Tensor]:
    """An array or tensor as a tensor on ``device`` with a leading batch axis of 1 (None stays None)."""
    return None if a is None else torch.as_tensor(a, device=device, dtype=dtype).unsqueeze(0)
