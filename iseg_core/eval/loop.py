"""The evaluation loop of the standard protocol, on any registered model through the :class:`Predictor`.

One object: a first interaction (the standard first click, or a simulated box / contour / scribble), then
clicks from :func:`next_click` at the largest error, the previous prediction fed back each time, until the
target IoU or ``max_clicks`` interactions. Options: RITM's ZoomIn and horizontal-flip averaging, or a model's
own inference loop (the click-map models' authors' ZoomIn, which resizes crops and carries the previous map).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from ..cache import EmbeddingCache
from ..errors import IsegError, PromptError
from ..geometry import ZoomIn, box_iou, inside, zoom_roi
from ..models.base import logit_to_probability
from ..predictor import Predictor
from ..prompts import Click, Prompt, prompt_to_dict, to_crop, validate_prompts
from .clicker import next_click
from .interactions import first_interaction
from .metrics import boundary_iou, iou



@dataclass
class ObjectRun:
    name: str
    ious: List[float] = field(default_factory=list)
    boundary_ious: List[float] = field(default_factory=list)
    prompts: List[dict] = field(default_factory=list)
    seconds: List[float] = field(default_factory=list)  # per interaction: decode + upsample (+ crop encode)
    encode_seconds: float = 0.0

    def to_json(self) -> dict:
        return {"name": self.name, "ious": self.ious, "boundary_ious": self.boundary_ious, "prompts": self.prompts,
                "seconds": self.seconds, "encode_seconds": self.encode_seconds}


def _inside(p: Prompt, w: int, h: int) -> bool:
    try:
        validate_prompts([p], (h, w))
    except PromptError:
        return False
    return True


class ObjectEvaluator:
    """Runs the protocol on one object with one predictor (and a second for the flipped view)."""

    def __init__(self, predictor: Predictor, flip: bool = False, zoom_in: Optional[ZoomIn] = None,
                 boundary_ratio: Optional[float] = None, session=None):
        """``session``: instead of the Predictor (and ``zoom_in`` / ``flip``), a model's own inference loop:
        ``set_image(image)`` then ``predict(prompts) -> probabilities (H, W)`` with the growing prompt list
        (:class:`iseg_core.models.clickmap.RitmSession`: RITM's and SimpleClick's ZoomIn;
        :class:`iseg_core.models.clickmap.SaicSession`: SAIC-IS's)."""
        if session is not None and (flip or zoom_in is not None):
            raise IsegError("a model's own inference session runs without the generic ZoomIn and flip")
        self.session = session
        self.predictor = predictor
        self.flipped = Predictor(predictor.model, predictor.cache) if flip else None
        self.zoom_in = zoom_in
        self.boundary_ratio = boundary_ratio
        # the model family's own threshold (RITM's lineage: probability 0.49, its pred_thr; SAM's: logit 0)
        self.logit_threshold = predictor.model.default_threshold
        self.prob_threshold = logit_to_probability(self.logit_threshold)

    def _set_view(self, image: np.ndarray, roi) -> float:
        x0, y0, x1, y1 = roi
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        t0 = time.perf_counter()
        self.predictor.set_image(crop)
        if self.flipped is not None:
            self.flipped.set_image(np.ascontiguousarray(crop[:, ::-1]))
        return time.perf_counter() - t0

    def _predict(self, image_shape, prompts: List[Prompt], roi, prev) -> Tuple[np.ndarray, tuple]:
        x0, y0, x1, y1 = roi
        w, h = x1 - x0, y1 - y0
        local = [to_crop(p, x0, y0) for p in prompts]
        local = [p for p in local if _inside(p, w, h)]
        a = self.predictor.predict(local, prev_logits=prev[0], soft=True)
        soft, logits = a.soft, (a.logits, None)
        if self.flipped is not None:
            mirrored = [to_crop(p, x0, y0, flip_w=w) for p in prompts]
            b = self.flipped.predict([p for p in mirrored if _inside(p, w, h)], prev_logits=prev[1], soft=True)
            soft = 0.5 * (soft + b.soft[:, ::-1])
            logits = (a.logits, b.logits)
        mask = np.zeros(image_shape, bool)
        mask[y0:y1, x0:x1] = soft > self.logit_threshold
        return mask, logits

    def run(self, name: str, image: np.ndarray, gt: np.ndarray, ignore: Optional[np.ndarray] = None,
            max_clicks: int = 20, target_iou: float = 0.95, first: str = "click") -> ObjectRun:
        h, w = gt.shape
        run = ObjectRun(name)
        full = (0, 0, w, h)
        state = {"roi": full, "prev": (None, None), "pred": np.zeros_like(gt, bool)}

        if self.session is not None:  # the model's own inference loop (RITM's ZoomIn for click-map models)
            t0 = time.perf_counter()
            self.session.set_image(image)
            run.encode_seconds = time.perf_counter() - t0

            def predict(prompts: List[Prompt], clicks: List[Click], step: int) -> np.ndarray:
                return self.session.predict(prompts) > self.prob_threshold
        else:
            run.encode_seconds = self._set_view(image, full)

            def predict(prompts: List[Prompt], clicks: List[Click], step: int) -> np.ndarray:
                roi = state["roi"]
                if self.zoom_in is not None and step >= max(1, self.zoom_in.skip_clicks):
                    new = zoom_roi(state["pred"], clicks, self.zoom_in)
                    last = prompts[-1]
                    moved = roi == full or (isinstance(last, Click) and last.positive and not inside((last.x, last.y), roi)) \
                        or box_iou(new, roi) < self.zoom_in.recompute_iou
                    if moved and new != roi:
                        state["roi"] = roi = new
                        self._set_view(image, roi)
                        state["prev"] = (None, None)
                pred, state["prev"] = self._predict(gt.shape, prompts, roi, state["prev"])
                return pred

        prompts: List[Prompt] = [first_interaction(first, gt, ignore)]
        for step in range(max_clicks):
            t0 = time.perf_counter()
            clicks = [p for p in prompts if isinstance(p, Click)]
            pred = state["pred"] = predict(prompts, clicks, step)
            run.seconds.append(time.perf_counter() - t0)
            run.prompts.append(prompt_to_dict(prompts[-1]))
            run.ious.append(iou(gt, pred, ignore))
            if self.boundary_ratio:
                run.boundary_ious.append(boundary_iou(gt, pred, ignore, self.boundary_ratio))
            if run.ious[-1] >= target_iou:
                break
            click = next_click(gt, pred, ignore, clicks)
            if click is None:
                break
            prompts.append(click)
        return run


def sat_latency(predictor: Predictor, image: np.ndarray, grid: int = 16) -> dict:
    """SegNext's SAT latency: encode one image, then ``grid x grid`` single positive clicks on a regular grid,
    each decoded on its own (no previous mask). Returns seconds: total, encode, and the per-click median."""
    predictor.cache.clear()
    t0 = time.perf_counter()
    predictor.set_image(image)
    encode = time.perf_counter() - t0
    h, w = image.shape[:2]
    per = []
    for gy in range(grid):
        for gx in range(grid):
            c = Click((gx + 0.5) * w / grid, (gy + 0.5) * h / grid)
            t = time.perf_counter()
            predictor.predict([c])
            per.append(time.perf_counter() - t)
    return {"total_s": encode + sum(per), "encode_s": encode, "click_median_s": float(np.median(per)),
            "click_p95_s": float(np.percentile(per, 95)), "clicks": len(per)}


def default_cache() -> EmbeddingCache:
    return EmbeddingCache(max_bytes=1 << 30)
