"""SAIC-IS's benchmark (its README; ``scripts/evaluate_model.py``): clicks, contours and strokes on one protocol.

Every object runs once per *order*: the first three interactions take each of the 27 sequences of (contour,
stroke, click), every later one is a click, 10 interactions in all (none stops early). Each interaction is
simulated from the ground truth and the current mask (:mod:`.saic_simulators`: SAIC-IS's own simulators, random,
drawn here from a generator seeded per object and order), the clicks accumulate while a contour or stroke is
shown at its own step only, and the model's own inference loop (:class:`~iseg_core.models.clickmap.SaicSession`:
ZoomIn, flip) predicts; the mask is its probabilities above 0.49. Per object and order: IoU and boundary IoU
(band 0.005 of the image diagonal) after each interaction. Reported, as SAIC-IS does: the IoU averaged over the
10 interactions and the objects, per order, then its mean and spread over the orders; and NoI@85/90/95 (how many
interactions reach that IoU, 10 when none does), here per group of orders by their first interaction.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..errors import PromptError
from ..prompts import Click, Contour, Scribble
from .metrics import boundary_iou, iou, noc
from .saic_simulators import next_click, next_contour, next_stroke

KINDS = ("contour", "stroke", "click")  # SAIC-IS's order of input types (IType contour, stroke, point)
ORDERS: List[Tuple[str, str, str]] = [tuple(KINDS[i] for i in idx) for idx in itertools.product(range(3), repeat=3)]
THRESHOLD = 0.49


@dataclass
class OrderRun:
    order: Tuple[str, ...]
    ious: List[float] = field(default_factory=list)
    boundary_ious: List[float] = field(default_factory=list)
    drawn: List[str] = field(default_factory=list)  # what each step was ("empty contour" where none was drawn)


def _outline(points, positive: bool, kind: str):
    from ..models.clickmap.model import EmptyOutline

    xy = [(float(c), float(r)) for r, c in points or []]
    if kind == "contour" and len(xy) >= 3:
        try:
            return Contour(xy, positive)
        except PromptError:  # a degenerate outline (no area): drawn as nothing, as SAIC-IS's masks would
            pass
    if kind == "stroke" and xy:
        return Scribble(xy, positive)
    return EmptyOutline(kind, positive)


def run_order(session, gt: np.ndarray, order: Sequence[str], rng: np.random.RandomState, interactions: int = 10,
              ignore=None) -> OrderRun:
    """One object through one order with a session whose image is set."""
    valid = np.ones_like(gt) if ignore is None else ~ignore
    pred = np.zeros_like(gt)
    not_clicked = np.ones_like(gt)
    clicks: List[Click] = []
    run = OrderRun(tuple(order))
    for i in range(interactions):
        kind = order[i] if i < len(order) else "click"
        step: list = []
        if kind == "click":
            found = next_click(pred, gt, not_clicked, valid, rng)
            if found is not None:
                r, c, positive = found
                not_clicked[r, c] = False
                clicks.append(Click(float(c), float(r), positive))
            run.drawn.append("click" if found is not None else "no click")
        else:
            points, positive = (next_contour if kind == "contour" else next_stroke)(pred, gt, valid, rng)
            shown = _outline(points, positive, kind)
            step = [shown]
            run.drawn.append(kind if not hasattr(shown, "kind") else f"empty {kind}")
        probs = session.predict(clicks + step)
        pred = probs > THRESHOLD
        run.ious.append(iou(gt, pred, ignore))
        run.boundary_ious.append(boundary_iou(gt, pred, ignore))
    return run


def evaluate_object(session, image: np.ndarray, gt: np.ndarray, seed: int, interactions: int = 10,
                    ignore=None, orders: Sequence[Sequence[str]] = ORDERS) -> List[OrderRun]:
    """Every order on one object (the image set once per order: each order starts from nothing)."""
    runs = []
    for k, order in enumerate(orders):
        session.set_image(image)
        runs.append(run_order(session, gt, order, np.random.RandomState([seed, k]), interactions, ignore))
    return runs


def summarize_runs(per_object: Sequence[Sequence[OrderRun]], interactions: int = 10) -> Dict[str, dict]:
    """Rows for the table: each group of orders by its first interaction ("click first", ...) and "all 27":
    IoU and boundary IoU averaged over interactions and objects (mean +- std over the group's orders, in %), and
    NoI@85/90/95 over the group's runs."""
    groups = {"click first": "click", "contour first": "contour", "stroke first": "stroke", "all orders": None}
    rows = {}
    for name, first in groups.items():
        idx = [k for k, o in enumerate(per_object[0]) if first is None or o.order[0] == first]
        if not idx:
            continue
        per_order_iou = [100 * np.mean([obj[k].ious for obj in per_object]) for k in idx]
        per_order_biou = [100 * np.mean([obj[k].boundary_ious for obj in per_object]) for k in idx]
        runs = [obj[k] for obj in per_object for k in idx]
        rows[name] = {"orders": len(idx), "IoU": float(np.mean(per_order_iou)), "IoU std": float(np.std(per_order_iou)),
                      "bIoU": float(np.mean(per_order_biou)), "bIoU std": float(np.std(per_order_biou)),
                      **{f"NoI@{int(t * 100)}": float(np.mean([noc(r.ious, t, interactions) for r in runs]))
                         for t in (0.85, 0.90, 0.95)}}
    return rows


def print_rows(rows: Dict[str, dict], objects: int) -> None:
    keys = ["IoU", "bIoU", "NoI@85", "NoI@90", "NoI@95"]
    print(f"| orders | n | objects | " + " | ".join(keys) + " |")
    print("|---|---:|---:|" + "---:|" * len(keys))
    for name, r in rows.items():
        cells = [f"{r['IoU']:.2f} ± {r['IoU std']:.2f}", f"{r['bIoU']:.2f} ± {r['bIoU std']:.2f}",
                 f"{r['NoI@85']:.2f}", f"{r['NoI@90']:.2f}", f"{r['NoI@95']:.2f}"]
        print(f"| {name} | {r['orders']} | {objects} | " + " | ".join(cells) + " |")


__all__ = ["ORDERS", "OrderRun", "evaluate_object", "print_rows", "run_order", "summarize_runs"]
