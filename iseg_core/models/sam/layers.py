"""Small building blocks of SAM's prompt encoder and mask decoder.

Parameter names follow the official SAM checkpoints so that their state dicts load by name.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` -> contiguous ``(B, h*w, C)`` (no copy when ``x`` is a view of such a tensor)."""
    return x.flatten(2).transpose(1, 2).contiguous()


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an ``(B, C, H, W)`` tensor (eps 1e-6, as SAM)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class FeedForward(nn.Module):
    """Token MLP of the two-way transformer (``lin1`` -> ReLU -> ``lin2``)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden_dim)
        self.lin2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


class ProjectedAttention(nn.Module):
    """Multi-head attention whose q/k/v live in ``dim // downsample`` channels.

    Inputs are ``(B, N, dim)`` token sequences; queries and keys may have different lengths.

    The decoder's cross attentions pair a handful of prompt tokens (``n``) with thousands of image tokens.
    When ``n * heads`` is below the inner width, projecting the long side is the dominant cost and can be
    avoided exactly by re-associating the products (:meth:`few_queries`, :meth:`few_keys`): the projection
    matrices are folded into the short side, so each long-side GEMM has ``n * heads`` columns instead of
    ``inner``. ``forward`` picks the cheaper order; all orders compute the same function.
    """

    def __init__(self, dim: int, num_heads: int, downsample: int = 1):
        super().__init__()
        inner = dim // downsample
        if inner % num_heads:
            raise ValueError(f"{num_heads} heads do not divide {inner} channels")
        self.num_heads = num_heads
        self.inner = inner
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def _per_head(self, linear: nn.Linear) -> torch.Tensor:
        """A projection's weight split by output head: ``(heads, head_dim, dim)``."""
        return linear.weight.view(self.num_heads, -1, linear.weight.shape[1])

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        short = self.num_heads * min(q.shape[1], k.shape[1])
        if short < self.inner and max(q.shape[1], k.shape[1]) > self.inner:
            return self.few_queries(q, k, v) if q.shape[1] < k.shape[1] else self.few_keys(q, k, v)
        return self.standard(q, k, v)

    def standard(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))

    def few_queries(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Few queries, many keys. Scores ``q_h Wk_h k^T``: the key bias shifts every score of a query by
        the same amount and cancels in the softmax. Values: ``P (v Wv_h^T + bv_h) = (P v) Wv_h^T + bv_h``
        because each row of ``P`` sums to one."""
        b, n, _ = q.shape
        h = self.num_heads
        qh = self._heads(self.q_proj(q)) * (self.inner // h) ** -0.5  # (B, H, n, d)
        folded = torch.einsum("bhnd,hdc->bhnc", qh, self._per_head(self.k_proj)).reshape(b, h * n, -1)
        attn = torch.softmax(torch.matmul(folded, k.transpose(1, 2)), dim=-1)  # (B, H*n, M)
        pooled = torch.matmul(attn, v).view(b, h, n, -1)  # (B, H, n, dim)
        out = torch.einsum("bhnc,hdc->bnhd", pooled, self._per_head(self.v_proj)).reshape(b, n, self.inner)
        return self.out_proj(out + self.v_proj.bias)

    def few_keys(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Many queries, few keys. Scores ``(q Wq_h^T + bq_h) k_h^T = q (Wq_h^T k_h^T) + bq_h k_h^T``;
        outputs ``sum_h P_h v_h Wo_h^T + bo = P [v_h Wo_h^T]_h + bo``: two GEMMs with ``H * n`` columns."""
        b, m, _ = q.shape
        n, h = k.shape[1], self.num_heads
        kh = self._heads(self.k_proj(k)) * (self.inner // h) ** -0.5  # (B, H, n, d)
        vh = self._heads(self.v_proj(v))
        wq = self._per_head(self.q_proj)  # (H, d, dim)
        folded = torch.einsum("hdc,bhnd->bchn", wq, kh).reshape(b, -1, h * n)
        shift = torch.einsum("hd,bhnd->bhn", self.q_proj.bias.view(h, -1), kh).reshape(b, 1, h * n)
        scores = torch.baddbmm(shift, q, folded).view(b, m, h, n)
        attn = torch.softmax(scores, dim=-1).view(b, m, h * n)
        wo = self.out_proj.weight.view(-1, h, self.inner // h)  # (dim, H, d)
        values = torch.einsum("bhnd,chd->bhnc", vh, wo).reshape(b, h * n, -1)
        return torch.baddbmm(self.out_proj.bias.expand(b, 1, -1), attn, values)


class FourierPositionEncoding(nn.Module):
    """Random Fourier features of 2-D positions (SAM's positional encoding).

    A position ``p`` in ``[0, 1]^2`` (x, y order) maps to ``[sin(2 pi (2p - 1) G), cos(...)]`` with a fixed
    Gaussian matrix ``G`` of shape ``(2, num_feats)``; output has ``2 * num_feats`` channels.
    """

    def __init__(self, num_feats: int):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def encode(self, xy01: torch.Tensor) -> torch.Tensor:
        proj = 2 * math.pi * ((2 * xy01 - 1) @ self.positional_encoding_gaussian_matrix)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """Encoding of every cell centre of an ``h x w`` grid, shape ``(2 * num_feats, h, w)``."""
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        xy = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        return self.encode(xy).permute(2, 0, 1)
