"""SAM's prompt encoder: points and box corners become sparse tokens, a low-res mask a dense map."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FourierPositionEncoding, LayerNorm2d, to_tokens

# Point labels as the decoder sees them.
PAD_LABEL, NEGATIVE, POSITIVE = -1, 0, 1


class SamPromptEncoder(nn.Module):
    """Encodes prompts given in the model's padded input frame (``input_size`` pixels, x/y order).

    Args:
        embed_dim: token channels (256).
        embedding_size: ``(h, w)`` of the image embedding grid (64, 64).
        input_size: ``(H, W)`` of the padded encoder input (1024, 1024).
        mask_in_chans: hidden channels of the mask downscaler (16).
        box_first: SAM 2's order of sparse tokens (see :meth:`embed_sparse`).
    """

    def __init__(
        self,
        embed_dim: int = 256,
        embedding_size: Tuple[int, int] = (64, 64),
        input_size: Tuple[int, int] = (1024, 1024),
        mask_in_chans: int = 16,
        box_first: bool = False,
    ):
        super().__init__()
        self.box_first = box_first
        self.embed_dim = embed_dim
        self.embedding_size = tuple(embedding_size)
        self.input_size = tuple(input_size)
        self.pe_layer = FourierPositionEncoding(embed_dim // 2)
        # Learned type embeddings: negative point, positive point, box top-left, box bottom-right.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self._dense_pe: Optional[Tuple[tuple, torch.Tensor, torch.Tensor]] = None  # (key, grid, tokens)

    @property
    def mask_input_size(self) -> Tuple[int, int]:
        return (4 * self.embedding_size[0], 4 * self.embedding_size[1])

    def dense_pe(self) -> torch.Tensor:
        """Positional encoding of the embedding grid, ``(1, C, h, w)``; cached until the matrix changes."""
        g = self.pe_layer.positional_encoding_gaussian_matrix
        key = (g._version, g.data_ptr(), g.device)  # load_state_dict and .to() both change one of these
        if self._dense_pe is None or self._dense_pe[0] != key:
            grid = self.pe_layer.grid(*self.embedding_size).unsqueeze(0)
            self._dense_pe = (key, grid, to_tokens(grid))
        return self._dense_pe[1]

    def dense_pe_tokens(self) -> torch.Tensor:
        """:meth:`dense_pe` as a contiguous token sequence ``(1, h*w, C)`` (what the decoder consumes)."""
        self.dense_pe()
        return self._dense_pe[2]

    def _encode_coords(self, xy: torch.Tensor) -> torch.Tensor:
        # +0.5: a coordinate names a pixel; its centre is what gets encoded.
        h, w = self.input_size
        scaled = (xy + 0.5) / torch.tensor([w, h], dtype=torch.float32, device=xy.device)
        return self.pe_layer.encode(scaled.float())

    def embed_sparse(
        self,
        points: Optional[torch.Tensor],
        labels: Optional[torch.Tensor],
        boxes: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """Tokens for points ``(B, N, 2)`` with labels ``(B, N)`` in {-1, 0, 1} and boxes ``(B, 4)``.

        SAM: the points, then the box's two corners; without a box one padding point is appended to the
        points (SAM was trained that way). SAM 2 (``box_first``): the box corners, the points, and always one
        padding point (its predictor passes a box as two labelled points). Returns ``(B, M, C)``.
        """
        tokens = []
        pad = boxes is None or self.box_first
        if boxes is not None:
            corners = self._encode_coords(boxes.reshape(-1, 2, 2))
            corner_types = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
            tokens.append(corners + corner_types)
        if points is None and boxes is not None and self.box_first:  # SAM 2 pads a lone box too
            points = boxes.new_zeros(boxes.shape[0], 0, 2)
            labels = boxes.new_zeros(boxes.shape[0], 0, dtype=torch.long)
        if points is not None:
            if pad:
                points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
                labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), PAD_LABEL)], dim=1)
            pe = self._encode_coords(points)
            pe = torch.where((labels == PAD_LABEL).unsqueeze(-1), torch.zeros_like(pe), pe)
            table = torch.cat(
                [self.not_a_point_embed.weight, self.point_embeddings[0].weight, self.point_embeddings[1].weight]
            )
            point_tokens = pe + table[(labels + 1).long()]
            tokens.insert(len(tokens) if self.box_first else 0, point_tokens)
        if not tokens:
            device = self.no_mask_embed.weight.device
            return torch.empty(1, 0, self.embed_dim, device=device)
        return torch.cat(tokens, dim=1)

    def embed_dense(self, masks: Optional[torch.Tensor], batch: int = 1) -> torch.Tensor:
        """Dense map ``(B, C, h, w)`` from low-res mask logits ``(B, 1, 4h, 4w)``, or the no-mask embedding."""
        if masks is not None:
            return self.mask_downscaling(masks)
        h, w = self.embedding_size
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)

    def embed_dense_tokens(self, masks: Optional[torch.Tensor], batch: int = 1) -> torch.Tensor:
        """:meth:`embed_dense` in token order: ``(B, h*w, C)``, or ``(B, 1, C)`` (to broadcast) without a mask.

        The last 1x1 convolution runs as a matmul on channels-last pixels, so no transpose of the
        256-channel map is needed."""
        if masks is None:
            return self.no_mask_embed.weight.reshape(1, 1, -1).expand(batch, -1, -1)
        x = self.mask_downscaling[:-1](masks)  # (B, 16, h, w)
        last = self.mask_downscaling[-1]
        return F.linear(x.flatten(2).transpose(1, 2), last.weight.flatten(1), last.bias)
