"""A weight-free interactive segmenter: GrabCut (colour GMMs + contrast-sensitive graph cut) driven by the
shared prompt vocabulary, at reduced resolution, with the previous mask as its prior, and its edges moved onto
the image's own edges at a finer resolution.

Why it works with clicks: every prompt becomes a hard label in the graph (a disk under a click, a thick line
under a scribble, everything outside a box or contour), the previous mask becomes the "probable" labels, and
the cut is computed on a crop around the object (outside it is background), which is both a spatial prior
and what keeps a click under ~100 ms. The result is turned into smooth low-res logits (a signed distance to
the cut's boundary) so that it upsamples to a clean edge and can be fed back as ``prev_logits``.
"""
from __future__ import annotations

import hashlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ...errors import PromptError
from ...masks import largest_component
from ...prompts import Box, Click, Contour, Prompt, Scribble
from ..base import Decoded, ImageEmbedding, Segmenter

GMM_COMPONENTS = 5  # OpenCV's GrabCut: Gaussians per colour model


_POOL: Optional[ThreadPoolExecutor] = None
_POOL_LOCK = threading.Lock()


def _candidate_pool() -> ThreadPoolExecutor:
    """Threads for a first click's candidate cuts (one per core, at most two: there are two candidates)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1)), thread_name_prefix="grabcut")
        return _POOL


@dataclass(frozen=True)
class ClassicalConfig:
    long_side: int = 320  # working resolution (the image is downscaled so its long side is this)
    iterations: int = 3  # GrabCut iterations of a first interaction
    correction_iterations: int = 2  # GrabCut iterations of a click that corrects a previous mask (0: as above)
    click_radius: float = 0.03  # largest hard-label disk under a click, x working diagonal; with a previous
    # mask the disk also stays inside the error region the click corrects (its distance to the old edge)
    click_fit: float = 0.8  # fraction of the distance to the old edge a correcting click's disk may cover
    first_click_frame: float = 0.04  # with clicks only and no previous mask: a frame this wide (x side) is
    # background and everything inside it "probably object" (GrabCut's rectangle start; the object is
    # then the part the cut keeps around the clicks)
    first_click_scales: Tuple[float, ...] = (0.2,)  # ... and also GrabCut's rectangle start on boxes around the
    # clicks (half-side = scale x working diagonal); the candidate whose colours differ most from a ring
    # around it is kept (the frame start floods small objects with background, a box truncates large ones)
    roi_margin: float = 0.25  # crop around the object: its box grown by this fraction per side
    local_changes: bool = True  # a correcting click changes its own region: parts of the change that do not
    # touch the click are undone (the re-fitted colour models otherwise flip far regions back and forth)
    logit_scale: float = 1.0  # logits = scale x signed distance (working pixels) to the cut's edge
    logit_clip: float = 8.0
    refine_long_side: int = 640  # > 0: the cut's edge is moved onto the image's own edges at this resolution
    # (never above the image's) by a guided filter of the upsampled logits, guided by the grey image
    refine_radius: int = 1  # guided-filter window radius, in refine pixels
    refine_eps: float = 0.01  # guided-filter regularisation (grey levels in [0, 1], squared)


class ClassicalSegmenter(Segmenter):
    """``encode`` downsizes the image; ``decode`` runs a few GrabCut iterations seeded by the prompts."""

    def __init__(self, name: str = "classical", config: ClassicalConfig = ClassicalConfig()):
        self.name = name
        self.config = config
        c = config
        self.version = "grabcut-" + hashlib.blake2b(repr(c).encode(), digest_size=5).hexdigest()
        self.device = torch.device("cpu")

    @property
    def preprocessing(self) -> str:
        c = self.config
        refine = (f", edges refined by a guided filter at long side {c.refine_long_side}" if c.refine_long_side else "")
        starts = ("frame or box " + "/".join(f"{s:g}" for s in c.first_click_scales) if c.first_click_scales else "frame")
        return (f"long side {c.long_side} px (area downscale, never upscaled), GrabCut {c.iterations} iterations "
                f"({c.correction_iterations or c.iterations} for corrections), first click: {starts} start{refine}")

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        h, w = image.shape[:2]
        scale = min(1.0, self.config.long_side / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        work = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image.copy()
        work = np.ascontiguousarray(work[:, :, ::-1])  # OpenCV's GrabCut wants BGR
        extra = {"scale": (work.shape[0] / h, work.shape[1] / w)}
        nbytes = work.nbytes
        if self.config.first_click_scales:  # Lab colour, 8 levels per channel: one of 512 bins per pixel
            q = cv2.cvtColor(work, cv2.COLOR_BGR2LAB).astype(np.int16) // 32
            extra["colours"] = q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]
            nbytes += extra["colours"].nbytes
        if self.config.refine_long_side > 0:
            s = min(1.0, self.config.refine_long_side / max(h, w))
            grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            if s < 1:
                grey = cv2.resize(grey, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            extra["guide"] = _GuideStats(grey.astype(np.float32) / 255.0, self.config.refine_radius)
            nbytes += extra["guide"].nbytes
        return ImageEmbedding(model_key=self.cache_key, original_size=(h, w), data=work, nbytes=nbytes, extra=extra)

    def check_logits(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.dim() not in (2, 3) or (logits.dim() == 3 and logits.shape[0] != 1):
            raise PromptError("prev_logits must be the (1, h, w) logits of a previous classical prediction")
        return logits.reshape(logits.shape[-2:]).float()

    # -- decode -------------------------------------------------------------------------------------------
    def decode(self, embedding: ImageEmbedding, prompts: Sequence[Prompt], prev_logits: Optional[torch.Tensor] = None,
               multimask: Optional[bool] = None) -> Decoded:
        work: np.ndarray = embedding.data
        h, w = work.shape[:2]
        sy, sx = embedding.extra["scale"]
        c = self.config
        diag = math.hypot(h, w)
        if prev_logits is not None and tuple(prev_logits.shape) != (h, w):
            raise PromptError(f"prev_logits are {tuple(prev_logits.shape)}, this image's classical frame is {(h, w)}")

        def pt(x, y):
            return int(min(w - 1, max(0, math.floor(x * sx)))), int(min(h - 1, max(0, math.floor(y * sy))))

        labels = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        prev = prev_logits.numpy() > 0 if prev_logits is not None else None
        if prev is not None:
            labels[prev] = cv2.GC_PR_FGD
        outside = np.zeros((h, w), bool)  # hard background from boxes and contours
        seeds_fg: List[Tuple[int, int]] = []
        r_click = max(1, round(c.click_radius * diag))
        to_fg = to_bg = None
        if prev is not None:
            to_fg = cv2.distanceTransform((~prev).astype(np.uint8), cv2.DIST_L2, 3)  # distance to old object
            to_bg = cv2.distanceTransform(prev.astype(np.uint8), cv2.DIST_L2, 3)  # distance to old background
        hard = np.zeros((h, w), np.uint8)  # 1 = hard fg, 2 = hard bg (drawn last so they win)
        for p in prompts:
            if isinstance(p, Box):
                inside = np.zeros((h, w), bool)
                x0, y0 = pt(p.x0, p.y0)
                x1, y1 = pt(max(p.x0, p.x1 - 1e-3), max(p.y0, p.y1 - 1e-3))
                inside[y0:y1 + 1, x0:x1 + 1] = True
                outside |= ~inside
                if prev is None:
                    labels[inside] = cv2.GC_PR_FGD
            elif isinstance(p, Contour):
                if not p.positive:
                    raise PromptError("the classical engine takes contours around the object only")
                poly = np.array([pt(x, y) for x, y in p.points], np.int32)
                inside = np.zeros((h, w), np.uint8)
                cv2.fillPoly(inside, [poly], 1)
                outside |= inside == 0
                if prev is None:
                    labels[inside > 0] = cv2.GC_PR_FGD
            elif isinstance(p, Scribble):
                line = np.array([pt(x, y) for x, y in p.points], np.int32)
                cv2.polylines(hard, [line], False, 1 if p.positive else 2, thickness=max(1, r_click))
                if p.positive:
                    seeds_fg.extend(map(tuple, line))
            elif isinstance(p, Click):
                x, y = pt(p.x, p.y)
                if p.positive:
                    seeds_fg.append((x, y))
                r = r_click
                if to_fg is not None:
                    room = float((to_fg if p.positive else to_bg)[y, x])
                    # a click that corrects an error stays inside that error region; one the old mask
                    # already agrees with only pins its neighbourhood
                    r = int(max(1, min(r_click, round(c.click_fit * room)))) if room > 0 else max(1, r_click // 3)
                cv2.circle(hard, (x, y), r, 1 if p.positive else 2, -1)
        if prev is None and not outside.any() and seeds_fg:
            starts = [self._frame_start(h, w)] + [self._box_start(h, w, seeds_fg, s * diag) for s in c.first_click_scales]
            # the candidates are independent cuts (OpenCV releases the GIL; its RNG is per thread and seeded
            # in each cut): side by side they cost one cut's time on two cores
            cuts = list(_candidate_pool().map(lambda start: self._cut(work, _with_hard(start, hard), seeds_fg), starts))
            fg = cuts[0] if len(cuts) == 1 else self._best_start(cuts, embedding.extra["colours"])
        else:
            labels[outside] = cv2.GC_BGD
            rounds = c.correction_iterations if prev is not None and c.correction_iterations else c.iterations
            fg = self._cut(work, _with_hard(labels, hard), seeds_fg, rounds)
        if prev is not None and prompts and isinstance(prompts[-1], Click) and c.local_changes:
            fg = self._keep_local(fg, prev, pt(prompts[-1].x, prompts[-1].y))
        logits = self._signed_distance(fg)
        score = float(fg.mean())
        return Decoded(logits=torch.from_numpy(logits).unsqueeze(0), score=score)

    def _frame_start(self, h: int, w: int) -> np.ndarray:
        """GrabCut's rectangle start on the whole image less a frame of ``first_click_frame``."""
        fy, fx = max(1, round(self.config.first_click_frame * h)), max(1, round(self.config.first_click_frame * w))
        labels = np.full((h, w), cv2.GC_BGD, np.uint8)
        labels[fy:h - fy, fx:w - fx] = cv2.GC_PR_FGD
        return labels

    @staticmethod
    def _box_start(h: int, w: int, seeds, half: float) -> np.ndarray:
        """GrabCut's rectangle start on the seeds' box grown by ``half`` px per side."""
        xs, ys = [p[0] for p in seeds], [p[1] for p in seeds]
        x0, x1 = max(0, int(min(xs) - half)), min(w, int(max(xs) + half) + 1)
        y0, y1 = max(0, int(min(ys) - half)), min(h, int(max(ys) + half) + 1)
        labels = np.full((h, w), cv2.GC_BGD, np.uint8)
        labels[y0:y1, x0:x1] = cv2.GC_PR_FGD
        return labels

    @staticmethod
    def _best_start(cuts: List[np.ndarray], colours: np.ndarray) -> np.ndarray:
        """The first click's candidate whose colours stand out most from its surroundings."""
        return cuts[int(np.argmax([_colour_separation(colours, m) for m in cuts]))]

    def _roi(self, labels: np.ndarray) -> Tuple[int, int, int, int]:
        """Crop around what may be object (probable or certain foreground), grown by ``roi_margin``."""
        h, w = labels.shape
        maybe = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
        ys, xs = np.nonzero(maybe)
        if xs.size == 0:
            return 0, 0, w, h
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        mx = max(4, (x1 - x0) * self.config.roi_margin)
        my = max(4, (y1 - y0) * self.config.roi_margin)
        return (int(max(0, x0 - mx)), int(max(0, y0 - my)), int(min(w, x1 + mx)), int(min(h, y1 + my)))

    def _cut(self, work: np.ndarray, labels: np.ndarray, seeds_fg, rounds: int = 0) -> np.ndarray:
        h, w = labels.shape
        x0, y0, x1, y1 = self._roi(labels)
        sub = labels[y0:y1, x0:x1].copy()
        # the crop's frame is background unless it is the image border (objects may touch the border)
        frame = np.zeros(sub.shape, bool)
        frame[0, :] |= y0 > 0
        frame[-1, :] |= y1 < h
        frame[:, 0] |= x0 > 0
        frame[:, -1] |= x1 < w
        sub[frame & (sub != cv2.GC_FGD)] = cv2.GC_BGD
        is_fg = (sub == cv2.GC_FGD) | (sub == cv2.GC_PR_FGD)
        fg = np.zeros((h, w), bool)
        if not is_fg.any():
            return fg
        if is_fg.all() or not ((sub == cv2.GC_BGD) | (sub == cv2.GC_PR_BGD)).any():
            fg[y0:y1, x0:x1] = is_fg
            return fg
        img = np.ascontiguousarray(work[y0:y1, x0:x1])
        self._grabcut(img, sub, rounds or self.config.iterations)
        cut = (sub == cv2.GC_FGD) | (sub == cv2.GC_PR_FGD)
        # keep only the parts connected to a positive seed (or, with none, the largest part)
        n, comp = cv2.connectedComponents(cut.astype(np.uint8), connectivity=8)
        if n > 2:
            keep = {int(comp[y - y0, x - x0]) for x, y in seeds_fg if x0 <= x < x1 and y0 <= y < y1} - {0}
            cut = np.isin(comp, list(keep)) if keep else largest_component(cut)
        fg[y0:y1, x0:x1] = cut
        return fg

    def _grabcut(self, img: np.ndarray, labels: np.ndarray, iterations: int) -> None:
        """``iterations`` rounds of GrabCut on ``labels`` (in place). Seeded: the colour models start
        from k-means, whose random state would otherwise carry over from call to call (a mask would depend on
        what was segmented before it). Each side needs a colour model: k-means wants at least as many pixels as
        GMM components, and a later round one pixel of each side; while hard labels of both sides guarantee
        that, the rounds run in one call, else one at a time, stopping when a side is empty (the cut is final)."""
        fg = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
        if min(int(fg.sum()), int((~fg).sum())) < GMM_COMPONENTS:
            return  # too few pixels of one kind for a colour model: the labels stay as they are
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)
        hard = (labels == cv2.GC_FGD).any() and (labels == cv2.GC_BGD).any()
        rounds = [iterations] if hard else [1] * iterations
        for k, n in enumerate(rounds):
            cv2.grabCut(img, labels, None, bgd, fgd, n, cv2.GC_INIT_WITH_MASK if k == 0 else cv2.GC_EVAL)
            fg = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
            if not fg.any() or fg.all():
                return

    def _keep_local(self, fg: np.ndarray, prev: np.ndarray, at: Tuple[int, int]) -> np.ndarray:
        """``fg`` where it differs from ``prev`` in a region connected to the click at ``at``, else ``prev``."""
        x, y = at
        n, comp = cv2.connectedComponents((fg != prev).astype(np.uint8), connectivity=8)
        if n <= 1:
            return fg
        disk = np.zeros(fg.shape, np.uint8)
        cv2.circle(disk, (x, y), 2, 1, -1)
        near = np.unique(comp[disk > 0])
        back = (comp > 0) & ~np.isin(comp, near[near > 0])
        return np.where(back, prev, fg)

    def _signed_distance(self, fg: np.ndarray) -> np.ndarray:
        m = fg.astype(np.uint8)
        inside = cv2.distanceTransform(m, cv2.DIST_L2, 3)
        outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 3)
        # pixel centres: the edge lies half-way between an inside and an outside pixel
        sd = np.where(fg, inside - 0.5, 0.5 - outside)
        return np.clip(sd * self.config.logit_scale, -self.config.logit_clip, self.config.logit_clip).astype(np.float32)

    def upsample_logits(self, embedding: ImageEmbedding, logits: torch.Tensor, size=None) -> np.ndarray:
        h, w = size or embedding.original_size
        low = logits.detach().reshape(logits.shape[-2:]).float().cpu().numpy()
        guide = embedding.extra.get("guide")
        if guide is not None:
            gh, gw = guide.image.shape
            low = guide.filter(cv2.resize(low, (gw, gh), interpolation=cv2.INTER_LINEAR), self.config.refine_eps)
        return cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)


def _with_hard(labels: np.ndarray, hard: np.ndarray) -> np.ndarray:
    """``labels`` with the prompts' hard labels drawn over them (1 = object, 2 = background)."""
    out = labels.copy()
    out[hard == 1] = cv2.GC_FGD
    out[hard == 2] = cv2.GC_BGD
    return out


def _colour_separation(colours: np.ndarray, mask: np.ndarray) -> float:
    """1 - Bhattacharyya coefficient of the colour histograms of ``mask`` and of a ring around it (width 15 %
    of the mask's size): an object differs from its surroundings, a part of an object or a blob spilling over
    the background does not."""
    area = int(mask.sum())
    r = max(2, int(0.15 * math.sqrt(area)))
    ring = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    ring = ring.astype(bool) & ~mask
    if not area or not ring.any():
        return 0.0
    inside = np.bincount(colours[mask], minlength=512) / area
    around = np.bincount(colours[ring], minlength=512) / ring.sum()
    return float(1.0 - np.sqrt(inside * around).sum())


class _GuideStats:
    """A grey guide image and its local means and variances (window ``2r + 1``), computed once per image, for
    He et al.'s guided filter: the output is locally ``a * I + b``, so a transition of the filtered map that
    lies near an edge of the image moves onto that edge."""

    def __init__(self, grey: np.ndarray, radius: int):
        self.image, self.k = grey, (2 * radius + 1, 2 * radius + 1)
        self.mean = cv2.boxFilter(grey, -1, self.k)
        self.var = cv2.boxFilter(grey * grey, -1, self.k) - self.mean * self.mean
        self.nbytes = 3 * grey.nbytes

    def filter(self, p: np.ndarray, eps: float) -> np.ndarray:
        mean_p = cv2.boxFilter(p, -1, self.k)
        a = (cv2.boxFilter(self.image * p, -1, self.k) - self.mean * mean_p) / (self.var + eps)
        b = mean_p - a * self.mean
        return cv2.boxFilter(a, -1, self.k) * self.image + cv2.boxFilter(b, -1, self.k)
