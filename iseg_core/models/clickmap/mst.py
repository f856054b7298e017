"""MST (Adaptive Multi-Scale Tokens, TCSVT'25): SimpleClick's plain ViT with two extra token scales that the
clicks steer.

Besides its 16 px tokens (the "base" stream, where the click maps enter as in SimpleClick), the image is cut
into 8 px and 32 px tokens with the same patch kernel resampled by FlexiViT's pseudo-inverse resize (bicubic,
antialiased) and position embeddings resized per scale (bicubic, antialiased). Every fourth block (3, 7, 11 of
a 12-block ViT) is a *score block*; before its usual attention:

1. each extra stream attends to the base tokens (queries from the stream, keys and values from the base tokens
   reduced 4 x 4 by a strided conv; the output projection is one of two expert MLPs, one per scale) and runs
   an MLP; the updated streams carry on to the next score block;
2. a kernel is made from the base tokens at the positive clicks (their self-attended mean, L2-normalised): each
   stream token scores ``(cos(token, kernel) + 1) / 2``; no positive click, every score is 0;
3. the top ``N / 16`` tokens of each stream (``N / 8`` on the mst-448 branch) are kept, of which only the
   first ``min(k, max(k - 10, #score > 0.65))`` stay non-zero (zeroed rows remain as attention keys); each
   with its position embedding;
4. the small tokens attend to the large ones, and the base tokens attend to that fusion (gated by learned
   per-channel scales; the mst-448 branch adds an MLP instead of the second gate).

So every click runs the whole network, as SimpleClick, at 1.7-3x its cost. All blocks attend globally (MST
drops SimpleClick's windows). The neck and head are SimpleClick's (SimpleFPN, the all-MLP head without its
unused upsampling blocks).

The two published architectures differ beyond their weights (:data:`MST_BRANCHES`): the ``main`` branch's
slim model (MST-3s ViT-B 448 + CL, what MST's README evaluates) and branch ``mst-448``'s (+MST / +MST+CL of
its experiment table). The official loader is non-strict and half-loads a file of the other branch silently;
iseg recognises a file's branch by its keys and shapes and refuses the other one, naming both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CheckpointError
from ..base import TrainOutput
from .maps import IMAGENET_MEAN, IMAGENET_STD, disk_maps
from .model import ClickMapSegmenter
from .simpleclick import SimpleClickConfig, published_vit, publisher_kind
from .vit import Block, MLPHead, Mlp, PatchEmbed, PlainViT, SimpleFPN, tokens_to_map

MST_CLASS = "isegm.model.is_adaptivevit_model.AdaptiveVitModel"
SMALL, LARGE = 8, 32  # the extra token sizes (px)


@dataclass(frozen=True)
class MSTBranch:
    """What differs between MST's published architectures (read from each branch's code)."""

    name: str
    scale_heads: int  # heads of the streams' attention to the base tokens
    scale_mlp: int  # hidden width of the streams' MLP, x dim
    expert_hidden: int  # hidden width of each expert projection, x dim
    fuse_heads: int  # heads of the base tokens' attention to the selected tokens
    keep_div: int  # k = tokens of the stream // keep_div
    gated: bool  # main: the fusion enters x gamma2; mst-448: ungated, then an MLP (norm5, score_mlp)
    every_four: bool  # mst-448: a score block every 4 blocks at any depth; main: every 4 at depth 12, else 8

    def keys_signature(self, dim: int) -> Dict[str, Tuple[int, ...]]:
        """Shapes of the keys that tell the branches apart (per score block, relative names)."""
        sig = {"score.cross_mlp.fc1.weight": (dim * self.scale_mlp, dim),
               "score.cross_attn.proj.expert_s.0.weight": (dim * self.expert_hidden, dim)}
        if self.gated:
            sig["gamma2"] = (1, 1, dim)
        else:
            sig["score_mlp.fc1.weight"] = (dim * 4, dim)
        return sig


MST_BRANCHES = {
    "main": MSTBranch("main", scale_heads=4, scale_mlp=1, expert_hidden=1, fuse_heads=4, keep_div=16, gated=True,
                      every_four=False),
    "mst-448": MSTBranch("mst-448", scale_heads=6, scale_mlp=4, expert_hidden=4, fuse_heads=8, keep_div=8,
                         gated=False, every_four=True),
}


@dataclass(frozen=True)
class MSTConfig(SimpleClickConfig):
    branch: str = "main"
    all_global: bool = True  # MST's blocks all attend over the whole grid

    @property
    def branch_spec(self) -> MSTBranch:
        return MST_BRANCHES[self.branch]

    @property
    def score_blocks(self) -> Tuple[int, ...]:
        """0-based indices of the score blocks."""
        every = 4 if (self.branch_spec.every_four or self.depth == 12) else 8
        return tuple(d for d in range(self.depth) if (d + 1) % every == 0)

    def describe(self) -> str:
        return (f"MST ({self.branch} branch) on a plain ViT (dim {self.dim}, {self.depth} blocks, patch {self.patch}; "
                f"{SMALL} / {LARGE} px token streams, score blocks {', '.join(str(b) for b in self.score_blocks)})")


# The published MST ViT-B 448 models trained on COCO+LVIS
MST_CONFIGS: Dict[str, MSTConfig] = {
    # branch main: "MST-3s slim ViT-B 448 with CL" (models/adaptivevit_base448_cclvs.py), its README's model
    "mst_vit_b448_slim_cocolvis": MSTConfig(768, 12, 12, 16, (128, 256, 512, 1024), "mst-3s-slim-448-base.pth",
                                            branch="main"),
    # branch mst-448: "+MST+CL" of its experiment table
    "mst_vit_b448_cocolvis": MSTConfig(768, 12, 12, 16, (128, 256, 512, 1024), "mst-3s+cl-448-cclvs.pth",
                                       branch="mst-448"),
}


# -- the extra token scales ------------------------------------------------------------------------------------
_PINV: Dict[Tuple[int, int], torch.Tensor] = {}


def resize_pinv(old: int, new: int) -> torch.Tensor:
    """FlexiViT's pseudo-inverse resize ``(new*new, old*old)``: the patch kernel that, on an image patch
    resized from ``old`` to ``new`` px (bicubic, antialiased), gives what the ``old`` kernel gave on the
    original patch (in the least-squares sense). Computed once per size pair, in float32 on the CPU."""
    key = (old, new)
    if key not in _PINV:
        basis = torch.eye(old * old, dtype=torch.float32).view(old * old, 1, old, old)
        resized = F.interpolate(basis, size=(new, new), mode="bicubic", antialias=True).reshape(old * old, -1)
        _PINV[key] = torch.linalg.pinv(resized)
    return _PINV[key]


def resampled_kernel(weight: torch.Tensor, size: int) -> torch.Tensor:
    """A ``(D, C, p, p)`` patch kernel resampled to ``size`` px by :func:`resize_pinv`."""
    d, c, p, _ = weight.shape
    if p == size:
        return weight
    pinv = resize_pinv(p, size).to(weight)
    return (weight.reshape(d * c, p * p) @ pinv.T).reshape(d, c, size, size)


def resized_table(table: torch.Tensor, grid: Tuple[int, int], size: Tuple[int, int]) -> torch.Tensor:
    """A position table ``(1, gh*gw, C)`` of a ``grid`` resized to ``size`` (bicubic, antialiased)."""
    if tuple(grid) == tuple(size):
        return table
    square = table.reshape(1, grid[0], grid[1], -1).permute(0, 3, 1, 2)
    return F.interpolate(square, size=size, mode="bicubic", antialias=True).permute(0, 2, 3, 1).flatten(1, 2)


# -- score blocks ----------------------------------------------------------------------------------------------
class CrossAttention(nn.Module):
    """Queries from ``x``, keys and values from ``y``, no q/kv bias (MST's CrossAttention, sr ratio 1)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, dim * 2, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.proj(_attend(self.q(x), self.kv(y), self.heads))


def _attend(q: torch.Tensor, kv: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v per head; ``kv`` is k and v side by side ``(B, M, 2C)``."""
    b, n, c = q.shape
    q = q.view(b, n, heads, c // heads).transpose(1, 2)
    k, v = kv.view(b, kv.shape[1], 2, heads, c // heads).permute(2, 0, 3, 1, 4)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)


def _expert(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class Experts(nn.Module):
    """MST's MoEMlp: one projection MLP per token scale (``expert_s`` for 8 px, ``expert_l`` for 32 px)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.expert_s, self.expert_l = _expert(dim, hidden), _expert(dim, hidden)


class ExpertCrossAttention(nn.Module):
    """A stream's queries against the base tokens reduced 4 x 4 (strided conv, LayerNorm), its scale's expert
    as output projection. Keys and values depend on the base tokens only: :meth:`keys_values` runs once per
    score block for both streams (the official module caches them between its two calls)."""

    def __init__(self, dim: int, heads: int, expert_hidden: int, reduce: int = 4):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, dim * 2, bias=False)
        self.sr = nn.Conv2d(dim, dim, reduce, reduce)
        self.norm = nn.LayerNorm(dim)
        self.proj = Experts(dim, expert_hidden)

    def keys_values(self, base: torch.Tensor) -> torch.Tensor:
        b, n, c = base.shape
        side = int(math.isqrt(n))
        reduced = self.sr(base.transpose(1, 2).reshape(b, c, side, side)).reshape(b, c, -1).transpose(1, 2)
        return self.kv(self.norm(reduced))

    def forward(self, x: torch.Tensor, kv: torch.Tensor, expert: nn.Module) -> torch.Tensor:
        return expert(_attend(self.q(x), kv, self.heads))


class ScaleStreams(nn.Module):
    """The per-block update of both token streams (MST's ScoreBlock; its LayerNorms keep torch's eps 1e-5)."""

    def __init__(self, dim: int, branch: MSTBranch):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross_attn = ExpertCrossAttention(dim, branch.scale_heads, dim * branch.expert_hidden)
        self.cross_mlp = Mlp(dim, dim * branch.scale_mlp)

    def forward(self, base: torch.Tensor, small: torch.Tensor, large: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        kv = self.cross_attn.keys_values(self.norm2(base))
        out = []
        for x, expert in ((small, self.cross_attn.proj.expert_s), (large, self.cross_attn.proj.expert_l)):
            x = x + self.cross_attn(self.norm1(x), kv, expert)
            out.append(x + self.cross_mlp(self.norm3(x)))
        return out[0], out[1]


def click_kernel(base: torch.Tensor, ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per sample: the L2-normalised mean of the base tokens at the positive clicks ``ids`` ``(B, P)`` (-1 or
    below: none), each first attended over the others (softmax(T T^T / sqrt(C)) T) -> (kernels ``(B, C)``,
    whether the sample has any positive click ``(B,)``)."""
    kernels, has = [], []
    scale = math.sqrt(base.shape[-1])
    for i in range(base.shape[0]):
        picked = ids[i][ids[i] >= 0]
        if picked.numel() == 0:
            kernels.append(base.new_zeros(base.shape[-1]))
            has.append(False)
            continue
        t = base[i, picked.long()]
        weights = torch.softmax(t @ t.T / scale, dim=-1)
        kernels.append(F.normalize((weights @ t).mean(0, keepdim=True), dim=1)[0])
        has.append(True)
    return torch.stack(kernels), torch.tensor(has, device=base.device)


def select_tokens(stream: torch.Tensor, position: torch.Tensor, kernel: torch.Tensor, has: torch.Tensor,
                  keep_div: int) -> Dict[str, torch.Tensor]:
    """Score a stream against the kernel and keep its top ``N // keep_div`` tokens (the first ``valid_k`` of
    them non-zero), each plus its position embedding. The kept tokens carry the straight-through weight of
    MST's selection matrix (value 1, gradient to their scores)."""
    b, n, _ = stream.shape
    scores = (F.cosine_similarity(F.normalize(stream, dim=-1), kernel[:, None], dim=-1) + 1) / 2
    scores = torch.where(has[:, None], scores, torch.zeros_like(scores))
    k = n // keep_div
    top, index = torch.topk(scores, k=k)
    valid = [min(k, max(k - 10, int((scores[i] > 0.65).sum()))) for i in range(b)]
    rank = torch.arange(k, device=stream.device)[None]
    weight = top * (rank < torch.tensor(valid, device=stream.device)[:, None])
    gate = weight + ((weight > 0).to(weight) - weight).detach()
    picked = torch.gather(stream, 1, index[..., None].expand(-1, -1, stream.shape[-1]))
    pos = position.expand(b, -1, -1).gather(1, index[..., None].expand(-1, -1, stream.shape[-1]))
    tokens = gate[..., None] * picked + gate[..., None] * pos
    return {"tokens": tokens, "index": index, "scores": scores}


class MSTBlock(Block):
    """A ViT block; a score block also carries the streams' update and the fusion of the selected tokens."""

    def __init__(self, dim: int, heads: int, branch: Optional[MSTBranch] = None):
        super().__init__(dim, heads)
        self.branch = branch
        if branch is None:
            return
        self.score = ScaleStreams(dim, branch)
        self.norm3, self.norm4 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.score_cross_attn = CrossAttention(dim, branch.fuse_heads)
        self.norm6, self.norm7 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.score_l_s = CrossAttention(dim, 2)
        self.gamma = nn.Parameter(torch.ones(1, 1, dim))
        if branch.gated:
            self.gamma2 = nn.Parameter(torch.ones(1, 1, dim))
        else:
            self.norm5 = nn.LayerNorm(dim, eps=1e-6)
            self.score_mlp = Mlp(dim, dim * 4)

    def mix(self, base: torch.Tensor, streams: List[torch.Tensor], positions: Sequence[torch.Tensor],
            ids: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """The score step before the block's attention: updates ``streams`` in place, returns the base tokens
        with the selected tokens fused in, and what was selected (for MST's token losses)."""
        streams[0], streams[1] = self.score(base, streams[0], streams[1])
        kernel, has = click_kernel(base, ids)
        small = select_tokens(streams[0], positions[0], kernel, has, self.branch.keep_div)
        large = select_tokens(streams[1], positions[1], kernel, has, self.branch.keep_div)
        fused = small["tokens"] + self.score_l_s(self.norm6(small["tokens"]), self.norm7(large["tokens"])) * self.gamma
        attended = self.score_cross_attn(self.norm3(base), self.norm4(fused))
        if self.branch.gated:
            base = base + attended * self.gamma2
        else:
            base = base + attended
            base = base + self.score_mlp(self.norm5(base))
        chosen = {"kernel": kernel, "has_click": has}
        for scale, sel in (("s", small), ("l", large)):
            chosen.update({f"tokens_{scale}": sel["tokens"], f"index_{scale}": sel["index"],
                           f"scores_{scale}": sel["scores"]})
        return base, chosen


class MSTViT(PlainViT):
    """The plain ViT with MST's two extra token streams and score blocks; every block attends globally."""

    def __init__(self, config: MSTConfig):
        # the plain ViT's embeddings and position table; its blocks are MST's (built here, not twice)
        super().__init__(config.dim, 0, config.heads, config.patch, (config.frame, config.frame), ())
        branch = config.branch_spec
        scored = set(config.score_blocks)
        self.blocks = nn.Sequential(*[MSTBlock(config.dim, config.heads, branch if d in scored else None)
                                      for d in range(config.depth)])

    def stream(self, image: torch.Tensor, size: int, table: torch.Tensor, grid: Tuple[int, int]):
        """The image cut into ``size`` px tokens (resampled kernel) plus their position table -> (tokens, table)."""
        weight = resampled_kernel(self.patch_embed.proj.weight, size)
        tokens = F.conv2d(image, weight, self.patch_embed.proj.bias, stride=size).flatten(2).transpose(1, 2)
        position = resized_table(table, grid, (image.shape[-2] // size, image.shape[-1] // size))
        return tokens + position, position

    def forward(self, image: torch.Tensor, added: Optional[torch.Tensor] = None,
                points: Optional[torch.Tensor] = None, chosen: Optional[list] = None) -> torch.Tensor:
        """Normalised square image ``(B, 3, S, S)``, click-map tokens ``added``, the click ``points`` (RITM's
        ``(B, 2N, 3)``, positives first) -> ``(B, N, dim)``; ``chosen``: a list that receives each score
        block's selection."""
        h, w = image.shape[-2:]
        if h != w:
            raise ValueError(f"MST takes square frames only, not {h}x{w}")
        grid = (h // self.patch, w // self.patch)
        table = self.position(grid)
        small, pos_s = self.stream(image, SMALL, table, grid)
        large, pos_l = self.stream(image, LARGE, table, grid)
        x = self.patch_embed(image)
        if added is not None:
            x = x + added
        x = x + table
        ids = base_indices(points, grid, self.patch, image.device, x.shape[0])
        streams = [small, large]
        for block in self.blocks:
            if block.branch is not None:
                x, sel = block.mix(x, streams, (pos_s, pos_l), ids)
                if chosen is not None:
                    chosen.append(sel)
            x = block(x)
        return x


def base_indices(points: Optional[torch.Tensor], grid: Tuple[int, int], patch: int, device, batch: int) -> torch.Tensor:
    """Raster index of the base token under each positive click ``(B, P)`` (the first half of RITM's point
    rows: floor(row / patch) * grid width + floor(col / patch); -1 padding gives a negative index)."""
    if points is None or points.shape[1] == 0:
        return torch.full((batch, 1), -1, dtype=torch.long, device=device)
    pos = points[:, : points.shape[1] // 2, :2].float()
    cells = torch.div(pos, patch, rounding_mode="floor")
    return (cells[..., 0] * grid[1] + cells[..., 1]).long().to(device)


class MSTNetwork(nn.Module):
    """MST's AdaptiveVitModel: SimpleClick's input side, neck and head on :class:`MSTViT`."""

    unused_keys = ()  # MST's files carry no classification leftovers

    def __init__(self, config: MSTConfig):
        super().__init__()
        self.config = config
        c = config
        self.patch_embed_coords = PatchEmbed(3, c.dim, c.patch)
        self.backbone = MSTViT(c)
        self.neck = SimpleFPN(c.dim, c.fpn)
        self.head = MLPHead(c.fpn, c.head_channels * c.upsample, c.upsample)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor, prev: torch.Tensor, points: torch.Tensor, with_aux: bool = False,
                drawn: Optional[torch.Tensor] = None, chosen: Optional[list] = None
                ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """As :class:`.simpleclick.SimpleClickNetwork` (square frames); ``chosen`` receives the selections."""
        h, w = image.shape[-2:]
        maps = torch.cat([prev, disk_maps(points, h, w, self.config.disk_radius)], 1)
        tokens = self.backbone((image - self.mean) / self.std, self.patch_embed_coords(maps), points, chosen)
        grid = (h // self.config.patch, w // self.config.patch)
        out = self.head(self.neck(tokens_to_map(tokens, grid)))
        return F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True), None


# -- training: MST's contrastive token losses ------------------------------------------------------------------
def _soft_margin_triplet(anchor: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """MST's TripletLoss without margin: softplus(-(d(a, neg) - d(a, pos))), where d is, as its code computes
    it, the L2 norm over the tokens of each channel's difference, averaged over the channels."""
    ap = torch.linalg.vector_norm(anchor - pos, dim=0).mean()
    an = torch.linalg.vector_norm(anchor - neg, dim=0).mean()
    return F.softplus(-(an - ap))


def patch_loss(chosen: Sequence[Dict[str, torch.Tensor]], cells: Dict[str, torch.Tensor]) -> torch.Tensor:
    """MST's PatchLoss: per score block and sample, the kernel is the anchor, the kept tokens whose cell lies in
    the object the positives, the other kept tokens the negatives (soft-margin triplet); a sample without both
    is skipped (on the 8 px stream that skips its 32 px stream too, as the official loop does); the mean over
    the triplets formed. ``cells[scale]`` ``(B, cells)``: object cells on that stream's grid."""
    losses = []
    for sel in chosen:
        for i in range(sel["kernel"].shape[0]):
            for scale in ("s", "l"):
                tokens, index = sel[f"tokens_{scale}"], sel[f"index_{scale}"]
                kept = tokens.detach().abs().sum(dim=(0, 2)) != 0  # rows kept anywhere in the batch
                inside = cells[scale][i].gather(0, index[i])[kept]
                if not inside.any() or inside.all():
                    break
                rows = tokens[i][kept]
                losses.append(_soft_margin_triplet(sel["kernel"][i][None], rows[inside], rows[~inside]))
    if not losses:
        return chosen[0]["kernel"].new_zeros(()) if chosen else torch.zeros(())
    return torch.stack(losses).mean()


def score_loss(chosen: Sequence[Dict[str, torch.Tensor]], cells: Dict[str, torch.Tensor],
               valid: Dict[str, torch.Tensor], alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """MST's ScoreLoss: a focal loss (alpha 0.25, gamma 2) between each stream's token scores and the object
    cells of its grid, over the samples with a positive click, 0.5 per stream, averaged over the score blocks
    (iseg leaves out cells of the canvas' padding)."""
    total = []
    for sel in chosen:
        has = sel["has_click"]
        if not has.any():
            continue
        part = 0.0
        for scale in ("s", "l"):
            p = sel[f"scores_{scale}"][has].clamp(1e-7, 1 - 1e-7)
            t, v = cells[scale][has], valid[scale][has]
            loss = -alpha * (1 - p) ** gamma * torch.log(p) * t - (1 - alpha) * p ** gamma * torch.log(1 - p) * (1 - t)
            part = part + 0.5 * (loss * v).sum() / v.sum().clamp(min=1)
        total.append(part)
    if not total:
        return torch.zeros((), device=chosen[0]["kernel"].device) if chosen else torch.zeros(())
    return torch.stack(total).mean()


def token_losses(chosen: Sequence[Dict[str, torch.Tensor]], gt: torch.Tensor, valid: torch.Tensor,
                 frame: Tuple[int, int]) -> torch.Tensor:
    """PatchLoss + ScoreLoss (weight 1 each, MST's recipe) from the ground truth ``(B, L, L)`` on the canvas
    (binarised at 0.5, nearest-resized to the 8 px and 32 px grids, as MST downsamples its masks)."""
    cells, ok = {}, {}
    for scale, size in (("s", SMALL), ("l", LARGE)):
        grid = (frame[0] // size, frame[1] // size)
        cells[scale] = F.interpolate((gt > 0.5).float()[:, None], size=grid, mode="nearest").flatten(1)
        ok[scale] = F.interpolate(valid.float()[:, None], size=grid, mode="nearest").flatten(1)
    return patch_loss(chosen, {k: v.bool() for k, v in cells.items()}) + score_loss(chosen, cells, ok)


class MSTSegmenter(ClickMapSegmenter):
    """SimpleClick's segmenter face (squashed square frame, full-network clicks) for MST; fine-tuning adds
    MST's token losses to the NFL, and loading checks the file's branch."""

    def forward_train(self, features, prompts, sizes, prev_logits) -> TrainOutput:
        frame = tuple(features.shape[-2:])
        prev, points = self.train_inputs(features, frame, prompts, prev_logits)
        chosen: list = []
        out = self.train_output(self.network(features, prev, points, chosen=chosen)[0])
        out.extra_loss = lambda gt, valid: token_losses(chosen, gt, valid, frame)
        return out

    def load_checkpoint_state(self, state: Dict[str, torch.Tensor], source: str) -> None:
        check_branch(state, self.config, self.name, source)
        super().load_checkpoint_state(state, source)


# -- checkpoints ---------------------------------------------------------------------------------------------
def adapt_mst(config: MSTConfig, published: Optional[dict], name: str, source: str) -> MSTConfig:
    """Check MST's serialized config (AdaptiveVitModel: the backbone, the frame, disks, previous mask) and take
    its head's upsample option. Both branches serialize the same config: the keys tell them apart
    (:func:`check_branch`)."""
    if not published:
        return config
    found_class, params, head, want, got = published_vit(config, published)
    want["upsample"], got["upsample"] = "x1", head.get("upsample", "x1")
    if found_class != MST_CLASS or got != want:
        shown = ", ".join(f"{k}={got[k]}" for k in want)
        raise CheckpointError(f"checkpoint {source} does not fit {name} ({config.describe()}, {config.frame} px frame, "
                              f"disks of radius {config.disk_radius:g}, previous-mask channel): its config says "
                              f"{publisher_kind(found_class, params)}({shown})")
    channels = int(head.get("channels", config.head_channels))
    return replace(config, head_channels=channels)


def branch_of(state: Dict[str, torch.Tensor], config: MSTConfig) -> Optional[str]:
    """Which MST branch a state dict was saved from (by its first score block's keys and shapes), or None."""
    if not config.score_blocks:
        return None
    prefix = f"backbone.blocks.{config.score_blocks[0]}."
    for branch in MST_BRANCHES.values():
        sig = branch.keys_signature(config.dim)
        if all(tuple(getattr(state.get(prefix + k), "shape", ())) == shape for k, shape in sig.items()):
            return branch.name
    return None


def check_branch(state: Dict[str, torch.Tensor], config: MSTConfig, name: str, source: str) -> None:
    """Refuse a file of the other MST branch, or a plain SimpleClick file, naming what it is."""
    found = branch_of(state, config)
    if found == config.branch:
        return
    if found is not None:
        other = next((n for n, c in MST_CONFIGS.items() if c.branch == found), found)
        raise CheckpointError(f"checkpoint {source} is an MST {found}-branch model, not the {config.branch} branch "
                              f"that {name} is (the branches are different architectures): load it as {other}")
    if config.score_blocks and not any(k.startswith(f"backbone.blocks.{config.score_blocks[0]}.score.") for k in state):
        raise CheckpointError(f"checkpoint {source} has no MST score blocks (a SimpleClick plain ViT?): it does not fit "
                              f"{name} ({config.describe()})")


__all__ = ["MST_BRANCHES", "MST_CONFIGS", "MSTConfig", "MSTNetwork", "MSTSegmenter", "adapt_mst", "branch_of", "check_branch",
           "resize_pinv", "resampled_kernel", "token_losses"]
