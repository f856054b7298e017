"""SAM's mask decoder: a two-way transformer between prompt tokens and the image embedding,
then a hypernetwork that turns each output token into a mask over a 4x upscaled embedding.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MLP, FeedForward, LayerNorm2d, ProjectedAttention, to_tokens


class TwoWayBlock(nn.Module):
    """Tokens attend to themselves and to the image; then the image attends back to the tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample: int, skip_first_pe: bool):
        super().__init__()
        self.self_attn = ProjectedAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = ProjectedAttention(dim, num_heads, downsample)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = ProjectedAttention(dim, num_heads, downsample)
        self.skip_first_pe = skip_first_pe

    def forward(self, tokens, image, token_pe, image_pe):
        if self.skip_first_pe:  # the first block's tokens are their own positional encoding
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norm1(tokens)
        keys = image + image_pe
        tokens = self.norm2(tokens + self.cross_attn_token_to_image(tokens + token_pe, keys, image))
        tokens = self.norm3(tokens + self.mlp(tokens))
        image = self.norm4(image + self.cross_attn_image_to_token(keys, tokens + token_pe, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int = 2, dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048, downsample: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(dim, num_heads, mlp_dim, downsample, skip_first_pe=(i == 0)) for i in range(depth)
        )
        self.final_attn_token_to_image = ProjectedAttention(dim, num_heads, downsample)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor):
        """``image``/``image_pe``: ``(B, HW, C)`` token sequences; ``tokens``: ``(B, N, C)``.
        Returns the updated ``(tokens, image)``."""
        token_pe = tokens
        for layer in self.layers:
            tokens, image = layer(tokens, image, token_pe, image_pe)
        attn = self.final_attn_token_to_image(tokens + token_pe, image + image_pe, image)
        return self.norm_final_attn(tokens + attn), image


def _transposed_conv_as_linear(conv: nn.ConvTranspose2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weight ``(Cin, 4 * Cout)`` and bias ``(4 * Cout,)`` of a kernel-2 stride-2 transposed conv.

    With kernel == stride every input pixel writes its own 2x2 output block, so the conv is one matmul
    on channels-last pixels; output columns are ordered (dy, dx, channel).
    """
    w = conv.weight  # (Cin, Cout, 2, 2)
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1), conv.bias.repeat(4)


class SamMaskDecoder(nn.Module):
    """Predicts mask logits at 4x the embedding resolution, and a quality (IoU) score per mask.

    Output token 0 is the single-mask output; tokens 1..3 are SAM's three ambiguity-aware masks.
    """

    def __init__(self, dim: int = 256, num_multimask_outputs: int = 3, iou_head_depth: int = 3, iou_head_hidden: int = 256):
        super().__init__()
        self.dim = dim
        self.num_mask_tokens = num_multimask_outputs + 1
        self.transformer = TwoWayTransformer(depth=2, dim=dim, num_heads=8, mlp_dim=2048, downsample=2)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(dim, iou_head_hidden, self.num_mask_tokens, iou_head_depth)

    #: Output tokens before the IoU token (SAM 2: its object-score token).
    leading_tokens = 0

    #: Previous low-res logits enter clamped to this magnitude (SAM 2: its predictor returns them so), or as given.
    mask_input_clamp: Optional[float] = None

    def per_image_modules(self):
        """Parts that run once per image (at encode time; frozen with the encoder in decoder-mode training)."""
        return []

    def skip_shapes(self, size: int) -> List[Tuple[int, ...]]:
        """Per-sample shapes of the per-image tensors this decoder reads besides the ``size x size`` embedding
        (its "skips": SAM 2's high-resolution features, HQ-SAM's HQ features). Plain SAM: none."""
        return []

    def upscale(self, image_tokens: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        """The upscaled embedding masks are read from (:meth:`upscaled_pixels`); SAM ignores ``skips``."""
        return self.upscaled_pixels(image_tokens)

    def choose(self, pixels: torch.Tensor, mask_tokens: torch.Tensor, iou: torch.Tensor, size: Tuple[int, int],
               multimask: bool) -> Tuple[torch.Tensor, int]:
        """One sample's answer: the best-scored of tokens 1-3 (``multimask``) or token 0, as masks
        ``(1, 1, 4h, 4w)`` and the token's index."""
        best = 1 + int(torch.argmax(iou[0, 1:])) if multimask else 0
        return self.read_masks(pixels, mask_tokens, torch.tensor([best]), size), best

    def finish(self, masks: torch.Tensor, pixels: torch.Tensor, mask_tokens: torch.Tensor,
               skips: Sequence[torch.Tensor], size: Tuple[int, int]) -> torch.Tensor:
        """What inference and training read of mask-token masks ``(B, K, 4h, 4w)`` (HQ-SAM adds its HQ mask)."""
        return masks

    def output_tokens(self) -> torch.Tensor:
        """The learned output tokens, in the order the publisher's decoder puts them before the prompt tokens."""
        return torch.cat([self.iou_token.weight, self.mask_tokens.weight])

    def run_transformer(self, image_tokens, pe_tokens, sparse, dense_tokens):
        """Shared trunk, token-major. ``image_tokens`` ``(B or 1, h*w, C)``, ``pe_tokens`` ``(1, h*w, C)``,
        ``sparse`` ``(B, N, C)``, ``dense_tokens`` ``(B, h*w, C)`` or ``(B, 1, C)`` (broadcast).

        Returns the output tokens after the IoU token ``(B, K, C)`` (the mask tokens, then any extra ones such as
        HQ-SAM's), IoU predictions ``(B, 4)`` and the image tokens ``(B, h*w, C)`` that masks are read from."""
        b = sparse.shape[0]
        out_tokens = self.output_tokens().unsqueeze(0).expand(b, -1, -1)
        tokens = torch.cat([out_tokens, sparse], dim=1)
        image = image_tokens + dense_tokens
        if image.shape[0] != b:
            image = image.expand(b, -1, -1)
        tokens, image = self.transformer(image, pe_tokens, tokens)
        s = self.leading_tokens
        iou = self.iou_prediction_head(tokens[:, s])
        return tokens[:, s + 1 : out_tokens.shape[1]], iou, image

    def upscaled_pixels(self, image_tokens: torch.Tensor, skips: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """The 4x upscaled embedding ``(B, 16 * h * w, C // 8)`` in block order (see :meth:`read_masks`).

        ``skips`` (SAM 2): high-resolution image features added after each transposed conv, already in block
        order: ``(B, 4hw, C // 4)`` and ``(B, 16hw, C // 8)``."""
        b, n, _ = image_tokens.shape
        w1, b1 = _transposed_conv_as_linear(self.output_upscaling[0])
        norm = self.output_upscaling[1]
        x = torch.addmm(b1, image_tokens.reshape(b * n, -1), w1).view(b, n * 4, -1)
        if skips:
            x = x + skips[0]
        x = F.gelu(F.layer_norm(x, (norm.weight.numel(),), norm.weight, norm.bias, norm.eps))
        w2, b2 = _transposed_conv_as_linear(self.output_upscaling[3])
        x = torch.addmm(b2, x.reshape(b * n * 4, -1), w2).view(b, n * 16, -1)
        if skips:
            x = x + skips[1]
        return F.gelu(x)

    def read_masks(self, pixels: torch.Tensor, mask_tokens: torch.Tensor, index: torch.Tensor, size: Tuple[int, int]):
        """Masks ``(B, K, 4h, 4w)`` for the output tokens ``index`` (K of them).

        ``pixels`` rows are ordered (y, x, dy1, dx1, dy2, dx2): two nested 2x2 blocks per embedding
        cell, so the only reordering needed is on the K-channel result, not on the 32-channel features."""
        h, w = size
        hyper = torch.stack(
            [self.output_hypernetworks_mlps[int(i)](mask_tokens[:, int(i)]) for i in index], dim=1
        )  # (B, K, C // 8)
        b, k = hyper.shape[:2]
        m = torch.bmm(pixels, hyper.transpose(1, 2))  # (B, 16hw, K)
        m = m.view(b, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return m.reshape(b, k, 4 * h, 4 * w)

    def forward(self, image_embedding, image_pe, sparse, dense, multimask_output: bool):
        """SAM's decoder contract: masks ``(B, 3 or 1, 4h, 4w)`` and IoU predictions ``(B, 3 or 1)``."""
        mask_tokens, iou, image = self.run_transformer(
            to_tokens(image_embedding), to_tokens(image_pe), sparse, to_tokens(dense))
        index = torch.arange(1, self.num_mask_tokens) if multimask_output else torch.tensor([0])
        masks = self.read_masks(self.upscaled_pixels(image), mask_tokens, index, image_embedding.shape[-2:])
        return masks, iou[:, index]


def to_block_order(x: torch.Tensor, factor: int) -> torch.Tensor:
    """A ``(B, C, f*h, f*w)`` map (f = 2 or 4) as ``(B, f*f*h*w, C)`` rows in the block order of
    :meth:`SamMaskDecoder.upscaled_pixels`: (y, x, dy1, dx1[, dy2, dx2])."""
    b, c, hh, ww = x.shape
    h, w = hh // factor, ww // factor
    if factor == 2:
        x = x.view(b, c, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1)
    elif factor == 4:
        x = x.view(b, c, h, 2, 2, w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1)
    else:
        raise ValueError(f"block order exists for factors 2 and 4, not {factor}")
    return x.reshape(b, -1, c)


def from_block_order(pixels: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Inverse of ``to_block_order(x, 4)``: ``(B, 16hw, C)`` -> ``(B, C, 4h, 4w)``."""
    b, _, c = pixels.shape
    h, w = size
    x = pixels.view(b, h, w, 2, 2, 2, 2, c).permute(0, 7, 1, 3, 5, 2, 4, 6)
    return x.reshape(b, c, 4 * h, 4 * w)


class HqMaskDecoder(SamMaskDecoder):
    """HQ-SAM's decoder: SAM's, plus an HQ output token whose mask is read from SAM's upscaled embedding
    refined by two 3x3 convs and fused with per-image HQ features (the image embedding and the output of the
    ViT's first global-attention block, each upscaled 4x). Parameter names as in HQ-SAM's files."""

    def __init__(self, dim: int = 256, vit_dim: int = 768):
        super().__init__(dim)
        #: Give the HQ token's mask alone (HQ-SAM's own ``hq_token_only``); default: added to SAM's chosen mask.
        self.hq_token_only = False
        self.hf_token = nn.Embedding(1, dim)
        self.hf_mlp = MLP(dim, dim, dim // 8, 3)
        self.compress_vit_feat = nn.Sequential(
            nn.ConvTranspose2d(vit_dim, dim, kernel_size=2, stride=2),
            LayerNorm2d(dim),
            nn.GELU(),
            nn.ConvTranspose2d(dim, dim // 8, kernel_size=2, stride=2),
        )
        self.embedding_encoder = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
        )
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(dim // 8, dim // 4, 3, 1, 1),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.Conv2d(dim // 4, dim // 8, 3, 1, 1),
        )

    def output_tokens(self) -> torch.Tensor:
        return torch.cat([self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight])

    def per_image_modules(self):
        return [self.compress_vit_feat, self.embedding_encoder]

    def skip_shapes(self, size: int) -> List[Tuple[int, ...]]:
        return [(self.dim // 8, 4 * size, 4 * size)]  # the HQ features, spatial

    def finish(self, masks, pixels, mask_tokens, skips, size):
        hq = self.read_hq(pixels, mask_tokens[:, self.num_mask_tokens], skips[0], size)
        return hq.expand_as(masks) if self.hq_token_only else masks + hq

    def hq_features(self, embedding: torch.Tensor, early: torch.Tensor) -> torch.Tensor:
        """Per-image HQ features ``(B, C // 8, 4h, 4w)`` from the embedding ``(B, C, h, w)`` and the early ViT
        output ``(B, h, w, vit_dim)``."""
        return self.embedding_encoder(embedding) + self.compress_vit_feat(early.permute(0, 3, 1, 2))

    def read_hq(self, pixels: torch.Tensor, hq_token: torch.Tensor, hq_features: torch.Tensor,
                size: Tuple[int, int]) -> torch.Tensor:
        """The HQ token's mask ``(B, 1, 4h, 4w)``; ``pixels`` as from :meth:`upscaled_pixels`.

        HQ-SAM reads it as ``hyper . (conv2(GELU(LN(conv1(U)))) + F)``: 32 channels from the last conv, then a
        dot product with the token's 32-vector. The dot product is linear, so it is folded into the last conv
        (one output channel with weights ``sum_c hyper_c W2[c]``) and into the HQ features: exact, and the
        dominant conv of a click costs 1/32 of its FLOPs. The first conv runs channels-last on the upscaled
        embedding, which the block order gives without a transpose of the 32-channel map."""
        b, _, c = pixels.shape
        h, w = size
        nhwc = pixels.view(b, h, w, 2, 2, 2, 2, c).permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, 4 * h, 4 * w, c)
        conv1, norm, _, conv2 = self.embedding_maskfeature
        z = F.conv2d(nhwc.permute(0, 3, 1, 2), conv1.weight, conv1.bias, padding=1)
        z = F.gelu(F.layer_norm(z.permute(0, 2, 3, 1), (norm.weight.numel(),), norm.weight, norm.bias, norm.eps))
        z = z.permute(0, 3, 1, 2)
        hyper = self.hf_mlp(hq_token)  # (B, C // 8)
        masks = []
        for i in range(b):
            weight = torch.einsum("c,cdkl->dkl", hyper[i], conv2.weight).unsqueeze(0)  # (1, C // 4, 3, 3)
            m = F.conv2d(z[i : i + 1], weight, (hyper[i] @ conv2.bias).view(1), padding=1)
            masks.append(m + torch.einsum("c,chw->hw", hyper[i], hq_features[i])[None, None])
        return torch.cat(masks)


class Sam2MaskDecoder(SamMaskDecoder):
    """SAM 2's decoder: SAM's, with an object-score token ahead of the IoU token (its head predicts whether the
    object is present), a sigmoid on the IoU head, and high-resolution image features (1/4 and 1/8, through
    ``conv_s0`` / ``conv_s1`` once per image) added inside the upscaling. Parameter names as in SAM 2's files
    after the ``sam_mask_decoder.`` prefix (the token MLPs of the transformer are renamed, see checkpoint.py)."""

    leading_tokens = 1
    mask_input_clamp = 32.0

    def __init__(self, dim: int = 256, stability_delta: float = 0.05, stability_thresh: float = 0.98):
        super().__init__(dim)
        self.obj_score_token = nn.Embedding(1, dim)
        self.pred_obj_score_head = MLP(dim, dim, 1, 3)
        self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.stability_delta = stability_delta
        self.stability_thresh = stability_thresh

    def output_tokens(self) -> torch.Tensor:
        return torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight])

    def per_image_modules(self):
        return [self.conv_s0, self.conv_s1]

    def skip_shapes(self, size: int) -> List[Tuple[int, ...]]:
        c = self.dim
        return [(4 * size * size, c // 4), (16 * size * size, c // 8)]  # 1/8 and 1/4 levels, block order

    def upscale(self, image_tokens, skips):
        return self.upscaled_pixels(image_tokens, skips)

    def choose(self, pixels, mask_tokens, iou, size, multimask):
        """Multimask as SAM; otherwise token 0 unless its mask is unstable, then the best of tokens 1-3 (SAM 2's
        image predictor: ``dynamic_multimask_via_stability``)."""
        if multimask:
            return super().choose(pixels, mask_tokens, iou, size, multimask)
        best = 1 + int(torch.argmax(iou[0, 1:]))
        masks = self.read_masks(pixels, mask_tokens, torch.tensor([0, best]), size)
        if bool(self.stable(masks[:, 0])):
            return masks[:, :1], 0
        return masks[:, 1:], best

    def run_transformer(self, image_tokens, pe_tokens, sparse, dense_tokens):
        mask_tokens, iou, image = super().run_transformer(image_tokens, pe_tokens, sparse, dense_tokens)
        return mask_tokens, torch.sigmoid(iou), image

    def stable(self, logits: torch.Tensor) -> torch.Tensor:
        """SAM 2's stability test of single-mask logits ``(B, h, w)``: the IoU of the masks thresholded at
        +delta and -delta reaches the threshold (an empty union counts as stable)."""
        flat = logits.flatten(1)
        inner = (flat > self.stability_delta).sum(-1).float()
        outer = (flat > -self.stability_delta).sum(-1).float()
        score = torch.where(outer > 0, inner / outer.clamp(min=1), torch.ones_like(outer))
        return score >= self.stability_thresh
