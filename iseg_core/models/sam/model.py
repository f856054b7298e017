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

from ...errors import IsegError, PromptError
from ...prompts import Prompt
from ...runtime import bf16_is_fast
from ..base import Decoded, ImageEmbedding, TrainableSegmenter, TrainOutput
from .checkpoint import KEY_MAPS, check_sam_state_dict
from .encoders import HieraFpnEncoder, TinyVitSam, vit_with_early_features
from .layers import to_tokens
from .mask_decoder import HqMaskDecoder, Sam2MaskDecoder, SamMaskDecoder, to_block_order
from .prompt_encoder import SamPromptEncoder
from .prompting import to_sam_inputs

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SamConfig:
    """Architecture of a SAM-family model: SAM (ViT-B/L/H), HQ-SAM (ViT + HQ decoder), MobileSAM (TinyViT),
    SAM 2 / 2.1 (Hiera + FPN + SAM 2's decoder). The prompt encoder is SAM's in all of them."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: Tuple[int, ...] = (2, 5, 8, 11)
    image_size: int = 1024
    patch_size: int = 16  # the embedding's stride
    window_size: int = 14
    prompt_dim: int = 256
    encoder: str = "vit"  # vit | tiny_vit | hiera
    decoder: str = "sam"  # sam | hq | sam2
    # TinyViT (MobileSAM): per-stage widths, depths, heads, attention windows
    tiny_vit: Tuple[Tuple[int, ...], ...] = ()
    # Hiera (SAM 2): blocks per stage, global-attention blocks, windows per stage, background pos-embed size
    hiera_stages: Tuple[int, ...] = ()
    hiera_global: Tuple[int, ...] = ()
    hiera_windows: Tuple[int, ...] = (8, 4, 14, 7)
    hiera_pos: Tuple[int, int] = (7, 7)

    @property
    def embedding_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def squash(self) -> bool:
        """SAM 2's frame: the image squashed to a square (SAM's: long side, padding bottom-right)."""
        return self.encoder == "hiera"


def _sam2(embed_dim: int, num_heads: int, stages, global_blocks, windows=(8, 4, 14, 7), pos=(7, 7)) -> SamConfig:
    return SamConfig(embed_dim=embed_dim, num_heads=num_heads, encoder="hiera", decoder="sam2", hiera_stages=stages,
                     hiera_global=global_blocks, hiera_windows=windows, hiera_pos=pos)


SAM_CONFIGS: Dict[str, SamConfig] = {
    "sam_vit_b": SamConfig(768, 12, 12, (2, 5, 8, 11)),
    "sam_vit_l": SamConfig(1024, 24, 16, (5, 11, 17, 23)),
    "sam_vit_h": SamConfig(1280, 32, 16, (7, 15, 23, 31)),
    # Not a published model: a small SAM (6.7 M parameters; 256 px input, 16 px patches, a 16x16 embedding,
    # 64x64 mask logits; SAM's prompt encoder and mask decoder) that trains from scratch on a CPU.
    "sam_mini": SamConfig(192, 4, 3, (1, 3), image_size=256, patch_size=16, window_size=8),
    "sam_hq_vit_b": SamConfig(768, 12, 12, (2, 5, 8, 11), decoder="hq"),
    "sam_hq_vit_l": SamConfig(1024, 24, 16, (5, 11, 17, 23), decoder="hq"),
    "sam_hq_vit_h": SamConfig(1280, 32, 16, (7, 15, 23, 31), decoder="hq"),
    "mobile_sam": SamConfig(320, encoder="tiny_vit",
                            tiny_vit=((64, 128, 160, 320), (2, 2, 6, 2), (2, 4, 5, 10), (7, 7, 14, 7))),
    "sam2.1_hiera_tiny": _sam2(96, 1, (1, 2, 7, 2), (5, 7, 9)),
    "sam2.1_hiera_small": _sam2(96, 1, (1, 2, 11, 2), (7, 10, 13)),
    "sam2.1_hiera_base_plus": _sam2(112, 2, (2, 3, 16, 3), (12, 16, 20), pos=(14, 14)),
    "sam2.1_hiera_large": _sam2(144, 2, (2, 6, 36, 4), (23, 33, 43), windows=(8, 4, 16, 8)),
}


def build_image_encoder(config: SamConfig) -> nn.Module:
    if config.encoder == "tiny_vit":
        return TinyVitSam(*config.tiny_vit, out_dim=config.prompt_dim)
    if config.encoder == "hiera":
        return HieraFpnEncoder(config.embed_dim, config.num_heads, config.hiera_stages, config.hiera_global,
                               config.hiera_windows, config.hiera_pos, config.prompt_dim)
    return VisionTransformerSAM(
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


def build_mask_decoder(config: SamConfig) -> SamMaskDecoder:
    if config.decoder == "hq":
        return HqMaskDecoder(config.prompt_dim, vit_dim=config.embed_dim)
    if config.decoder == "sam2":
        return Sam2MaskDecoder(config.prompt_dim)
    return SamMaskDecoder(config.prompt_dim)


class SamNetwork(nn.Module):
    """The trainable parts. ``official_state_dict`` gives keys exactly as the publisher's files name them."""

    def __init__(self, config: SamConfig):
        super().__init__()
        self.config = config
        s = config.embedding_size
        self.image_encoder = build_image_encoder(config)
        self.prompt_encoder = SamPromptEncoder(config.prompt_dim, (s, s), (config.image_size,) * 2, 16,
                                               box_first=config.decoder == "sam2")
        self.mask_decoder = build_mask_decoder(config)
        if config.decoder == "sam2":
            # SAM 2 adds this to the embedding of an image seen without memory (every image, for the image path)
            self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, config.prompt_dim))
        self._keys = KEY_MAPS[config.encoder]

    def per_image_parameters(self) -> List[nn.Parameter]:
        """What runs once per image besides the image encoder (frozen with it in decoder-mode training)."""
        params = [p for m in self.mask_decoder.per_image_modules() for p in m.parameters()]
        return params + ([self.no_mem_embed] if self.config.decoder == "sam2" else [])

    def encode(self, x: torch.Tensor, device: torch.device) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """The image embedding ``(B, C, h, w)`` (float32, on ``device``) and the decoder's per-image skips
        (SAM 2: its high-resolution features in block order; HQ-SAM: its HQ features)."""
        cfg, dec = self.config, self.mask_decoder
        if cfg.encoder == "hiera":
            s0, s1, embed = (t.float().to(device) for t in self.image_encoder(x, dec.conv_s0, dec.conv_s1))
            return embed + self.no_mem_embed.view(1, -1, 1, 1), [to_block_order(s1, 2), to_block_order(s0, 4)]
        if cfg.decoder == "hq":
            embed, early = vit_with_early_features(self.image_encoder, x, cfg.global_attn_indexes[0])
            embed, early = embed.float().to(device), early.float().to(device)
            return embed, [dec.hq_features(embed, early)]
        return self.image_encoder(x).float().to(device), []

    def official_state_dict(self) -> Dict[str, torch.Tensor]:
        return {self._keys.to_official(k): v for k, v in self.state_dict().items()}

    def load_official_state_dict(self, state: Dict[str, torch.Tensor], model_name: str, source: str) -> None:
        expected = {k: v.shape for k, v in self.official_state_dict().items()}
        check_sam_state_dict(expected, state, model_name, source, self.config.encoder)
        self.load_state_dict({self._keys.to_module(k): v for k, v in state.items() if k in expected}, strict=True)


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


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_squashed(image: np.ndarray, size: int, device=None) -> torch.Tensor:
    """SAM 2's input: ``uint8`` RGB to [0, 1], resized to ``size x size`` (bilinear, antialiased as torchvision's
    ``Resize`` on tensors), ImageNet mean/std. ``(1, 3, size, size)`` float32."""
    pixels = image if image.flags.writeable and image.flags.c_contiguous else np.array(image)
    x = torch.from_numpy(pixels).to(device).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


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
    def hq_token_only(self) -> Optional[bool]:
        """HQ-SAM's switch: the HQ token's mask alone (True) or added to SAM's (False); None for models without
        an HQ token."""
        return getattr(self.network.mask_decoder, "hq_token_only", None)

    @hq_token_only.setter
    def hq_token_only(self, value: bool) -> None:
        if self.hq_token_only is None:
            raise IsegError(f"hq_token_only is HQ-SAM's switch; {self.name} has no HQ token")
        self.network.mask_decoder.hq_token_only = bool(value)

    @property
    def image_encoder(self) -> nn.Module:
        return self.network.image_encoder

    @property
    def encoder_device(self) -> torch.device:
        """Where the image encoder runs: the model's device, unless it was moved apart (ZeroGPU: the encoder on
        a GPU lent per call, prompt decoding on the CPU; see :mod:`iseg_core.zerogpu`)."""
        return next(self.network.image_encoder.parameters()).device

    # -- the frame: long side = image_size, zero padding bottom / right (SAM 2: squashed to the square) -------
    @property
    def canvas(self) -> Tuple[int, int]:
        return (self.config.image_size,) * 2

    def frame_size(self, height: int, width: int) -> Tuple[int, int]:
        if self.config.squash:
            return self.canvas
        return preprocess_shape(height, width, self.config.image_size)

    def frame_pixels(self, image: np.ndarray) -> torch.Tensor:
        """The network input ``(1, 3, S, S)`` float32 on the model device: SAM's (long side S, PIL bilinear,
        SAM's pixel mean/std, zero padding bottom/right) or SAM 2's (squashed to S x S, ImageNet mean/std)."""
        s = self.config.image_size
        if self.config.squash:
            return normalize_squashed(image, s, self.device)
        return normalize_padded(resize_long_side(image, s), s, self.device)

    @property
    def preprocessing(self) -> str:
        s = self.config.image_size
        if self.config.squash:
            return f"resized to {s}x{s} (bilinear, antialiased; aspect not kept), ImageNet mean/std"
        return f"long side {s} (bilinear), zero padding to {s}x{s} bottom-right, SAM pixel mean/std"

    # -- encoding ------------------------------------------------------------------------------------------
    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """Flat features ``(B, N)``: the token-major embedding ``(h*w, C)`` then the decoder's per-image skips
        (what :meth:`_split` takes apart), float32 on the model device."""
        embed, skips = self.network.encode(pixels.to(self.encoder_device, self.encoder_dtype), self.device)
        return torch.cat([to_tokens(embed).flatten(1)] + [t.flatten(1) for t in skips], dim=1)

    def _split(self, features: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Flat features -> token-major embedding ``(B, h*w, C)`` and the skips (views, no copies)."""
        b = features.shape[0]
        s, c = self.config.embedding_size, self.config.prompt_dim
        parts = [(s * s, c)] + self.network.mask_decoder.skip_shapes(s)
        sizes = [int(np.prod(p)) for p in parts]
        pieces = torch.split(features, sizes, dim=1)
        return pieces[0].view(b, s * s, c), [t.view(b, *p) for t, p in zip(pieces[1:], parts[1:])]

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        pixels = self.frame_pixels(image).to(self.encoder_device, self.encoder_dtype)
        embed, skips = self.network.encode(pixels, self.device)
        tokens = to_tokens(embed)
        s = self.config.embedding_size
        # ``data`` is (1, C, h, w) as a view of the token-major features (free to read either way)
        return ImageEmbedding(
            model_key=self.cache_key,
            original_size=(int(image.shape[0]), int(image.shape[1])),
            data=tokens.transpose(1, 2).unflatten(2, (s, s)),
            nbytes=sum(t.numel() * t.element_size() for t in [tokens] + skips),
            extra={"input_size": self.frame_size(*image.shape[:2]), "skips": skips},
        )

    def features_of(self, embedding: ImageEmbedding) -> torch.Tensor:
        """The embedding as :meth:`encode_frames` gives it, ``(1, N)`` (a view for plain SAM models)."""
        skips = embedding.extra.get("skips", [])
        tokens = to_tokens(embedding.data).flatten(1)
        return torch.cat([tokens] + [t.flatten(1) for t in skips], dim=1) if skips else tokens

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
        clamp = self.network.mask_decoder.mask_input_clamp
        sparse, masks, ambiguous = [], [], []
        for p, original, inp, prev in zip(prompts, original_sizes, input_sizes, prev_logits):
            x = to_sam_inputs(p, original, inp, self._mask_size, self.config.image_size)
            as_t = partial(_batch_of_one, device=self.device)
            sparse.append(enc.embed_sparse(as_t(x.points), as_t(x.labels), as_t(x.box)))
            mask = prev if prev is not None else x.mask_logits
            if mask is not None and clamp is not None:
                mask = torch.as_tensor(mask).clamp(-clamp, clamp)
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
        """Low-res logits ``(1, 4h, 4w)`` in the model frame, and the predicted IoU.

        ``multimask=None`` asks for the three candidates only in the ambiguous case (a single click and no
        previous mask) and keeps the best-scored one; otherwise the single-mask output is used (SAM 2: unless
        it is unstable, then the best candidate, as SAM 2's image predictor does). HQ-SAM adds its HQ token's
        mask to the chosen one (or gives it alone with ``hq_token_only``). ``prev_logits`` replaces a
        contour's rasterised mask prompt when both are present.
        """
        sparse, dense, ambiguous = self._prompt_tokens(
            [prompts], [embedding.original_size], [embedding.extra["input_size"]], [prev_logits])
        if multimask is None:
            multimask = ambiguous[0]
        enc, dec = self.network.prompt_encoder, self.network.mask_decoder
        skips = embedding.extra.get("skips", [])
        mask_tokens, iou, image = dec.run_transformer(to_tokens(embedding.data), enc.dense_pe_tokens(), sparse, dense)
        pixels = dec.upscale(image, skips)
        size = (self.config.embedding_size,) * 2
        masks, best = dec.choose(pixels, mask_tokens, iou, size, multimask)
        logits = dec.finish(masks, pixels, mask_tokens, skips, size)[0]
        return Decoded(logits=logits, score=float(iou[0, best]))

    @torch.inference_mode()
    def decode_candidates(self, embedding: ImageEmbedding, points: Sequence[Tuple[float, float]]
                          ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Segment-everything's step: one positive click at each of ``points`` (image pixels), decoded in one
        batch, and every multimask candidate kept (tokens 1-3, as SAM's automatic mask generator reads them):
        low-res logits ``(N, 3, 4h, 4w)`` (each one what :meth:`decode` would return had it chosen that token)
        and their predicted IoU ``(N, 3)``."""
        from ...prompts import Click

        n = len(points)
        prompts = [[Click(float(x), float(y))] for x, y in points]
        sparse, dense, _ = self._prompt_tokens(prompts, [embedding.original_size] * n,
                                               [embedding.extra["input_size"]] * n, [None] * n)
        enc, dec = self.network.prompt_encoder, self.network.mask_decoder
        skips = [t.expand(n, *t.shape[1:]) for t in embedding.extra.get("skips", [])]
        tokens = to_tokens(embedding.data)
        mask_tokens, iou, image = dec.run_transformer(tokens.expand(n, *tokens.shape[1:]), enc.dense_pe_tokens(),
                                                      sparse, dense)
        pixels = dec.upscale(image, skips)
        size = (self.config.embedding_size,) * 2
        index = torch.arange(1, 4, device=pixels.device)
        masks = dec.finish(dec.read_masks(pixels, mask_tokens, index, size), pixels, mask_tokens, skips, size)
        return masks, iou[:, 1:4]

    def logits_from_mask(self, embedding: ImageEmbedding, mask: np.ndarray, magnitude: float = 8.0) -> torch.Tensor:
        """A mask of the image (``(H, W)`` bool) as low-res logits in the model's frame, the inverse of
        :meth:`upsample_logits` (SAM: resized into the padded input frame, then to ``4h x 4w``; SAM 2: straight):
        +``magnitude`` inside, -``magnitude`` outside, soft at the edges. A proposal refined with clicks feeds
        it back as the previous mask."""
        m = np.asarray(mask, np.float32)
        h4, w4 = self._mask_size
        if self.config.squash:
            low = cv2.resize(m, (w4, h4), interpolation=cv2.INTER_AREA)
        else:
            nh, nw = embedding.extra["input_size"]
            s = self.config.image_size
            padded = np.zeros((s, s), np.float32)
            padded[:nh, :nw] = cv2.resize(m, (nw, nh), interpolation=cv2.INTER_AREA)
            low = cv2.resize(padded, (w4, h4), interpolation=cv2.INTER_AREA)
        return torch.from_numpy((low * 2 - 1) * magnitude).reshape(1, h4, w4).to(self.device)

    def upsample_logits(self, embedding, logits, size=None) -> np.ndarray:
        """SAM: bilinear 4h x 4w -> S x S, crop the padding, bilinear to ``size`` (SAM's two steps, done by cv2
        on one mask); SAM 2: bilinear straight to ``size``. Only the output-sized float buffer is allocated."""
        h, w = size or embedding.original_size
        low = logits.detach().reshape(self._mask_size).float().cpu().numpy()
        if self.config.squash:
            return cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)
        nh, nw = embedding.extra["input_size"]
        s = self.config.image_size
        padded = cv2.resize(low, (s, s), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(padded[:nh, :nw], (w, h), interpolation=cv2.INTER_LINEAR)

    def page_graph(self):
        """Prompt encoder + mask decoder as one ONNX graph the page runs (:mod:`.onnx_decoder`)."""
        from .onnx_decoder import SamPageGraph

        return SamPageGraph(self)

    # -- training ------------------------------------------------------------------------------------------
    def forward_train(self, features, prompts, sizes, prev_logits) -> TrainOutput:
        """All four mask tokens ``(B, 4, 4h, 4w)`` (HQ-SAM: each plus the HQ token's mask, as inference
        combines them) and their IoU predictions; eligible: token 0, or tokens 1-3 in the ambiguous case."""
        image_tokens, skips = self._split(features)
        sparse, dense, ambiguous = self._prompt_tokens(prompts, sizes, sizes, prev_logits)
        enc, dec = self.network.prompt_encoder, self.network.mask_decoder
        s = self.config.embedding_size
        # computed here, not taken from the decoder's cache: that one may be an inference-mode tensor
        pe = to_tokens(enc.pe_layer.grid(s, s).unsqueeze(0))
        mask_tokens, iou, image = dec.run_transformer(image_tokens, pe, sparse, dense)
        pixels = dec.upscale(image, skips)
        masks = dec.finish(dec.read_masks(pixels, mask_tokens, torch.arange(4), (s, s)), pixels, mask_tokens, skips, (s, s))
        amb = torch.tensor(ambiguous, device=masks.device)
        eligible = torch.stack([~amb, amb, amb, amb], dim=1)
        return TrainOutput(logits=masks, scores=iou, eligible=eligible)

    def parameters_for(self, mode: str) -> List[nn.Parameter]:
        """``decoder``: prompt encoder + mask decoder, without what runs once per image (the image encoder,
        and SAM 2's high-resolution convs / HQ-SAM's HQ-feature convs: cached embeddings hold their output);
        ``full``: everything (the encoder in float32)."""
        self.check_mode(mode)
        if mode == "full" and self.encoder_dtype != torch.float32:
            self.network.image_encoder.float()  # an encoder that trains does so in float32
            self.encoder_dtype = torch.float32
        self.network.requires_grad_(True)
        if mode == "decoder":
            self.network.image_encoder.requires_grad_(False)
            for p in self.network.per_image_parameters():
                p.requires_grad_(False)
        return [p for p in self.network.parameters() if p.requires_grad]

    def checkpoint_state(self) -> Dict[str, torch.Tensor]:
        return self.network.official_state_dict()

    def load_checkpoint_state(self, state: Dict[str, torch.Tensor], source: str) -> None:
        self.network.load_official_state_dict(state, self.name, source)


def _batch_of_one(a, device, dtype=None) -> Optional[torch.Tensor]:
    """An array or tensor as a tensor on ``device`` with a leading batch axis of 1 (None stays None)."""
    return None if a is None else torch.as_tensor(a, device=device, dtype=dtype).unsqueeze(0)
