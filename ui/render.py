"""Overlay rendering at display size: finished objects in their colours, the current object highlighted,
contour lines, and the prompts drawn on top. Everything is computed on the display copy (long side at most
``DISPLAY_LONG_SIDE``), never on the full-resolution image, so a 12 MP photo costs what a 1 MP one does."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from iseg_core.prompts import Box, Click, Contour, Prompt, Scribble

DISPLAY_LONG_SIDE = 1024
CURRENT = (30, 144, 255)
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40)]


def display_copy(image: np.ndarray) -> Tuple[np.ndarray, float]:
    """(display image, scale = display / original)."""
    h, w = image.shape[:2]
    scale = min(1.0, DISPLAY_LONG_SIDE / max(h, w))
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def to_display(mask: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    return cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0


@dataclass
class ViewOptions:
    opacity: float = 0.5
    contours: bool = True
    show_objects: bool = True


def render(display: np.ndarray, scale: float, objects: Sequence[np.ndarray], current: Optional[np.ndarray],
           prompts: Sequence[Prompt], pending: Sequence[Tuple[float, float]] = (), pending_kind: str = "",
           options: ViewOptions = ViewOptions(), selected: Optional[int] = None,
           zoom: Optional[Tuple[float, float, float, float]] = None) -> np.ndarray:
    """The overlay as uint8 RGB at display size. ``objects`` and ``current`` are full-size masks."""
    out = display.copy()
    shape = display.shape[:2]
    a = float(np.clip(options.opacity, 0.0, 1.0))
    layers: List[Tuple[np.ndarray, tuple, int]] = []
    if options.show_objects:
        for k, m in enumerate(objects):
            if selected is not None and k == selected and current is not None:
                continue  # being re-edited: drawn as the current object
            layers.append((to_display(m, shape), PALETTE[k % len(PALETTE)], 1))
    if current is not None:
        layers.append((to_display(current, shape), CURRENT, 2))
    for m, colour, width in layers:
        if m.any():  # blend the whole frame in uint8, then copy it where the mask is (both in OpenCV's C++)
            tinted = cv2.addWeighted(out, 1.0 - a, np.full_like(out, colour), a, 0.0)
            cv2.copyTo(tinted, m.view(np.uint8), out)
    if options.contours:
        for m, colour, width in layers:
            cnts, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, cnts, -1, (255, 255, 255) if width == 2 else colour, width)
    r = max(3, round(max(shape) / 160))
    if zoom is not None:  # the crop the model works on
        x0, y0, x1, y1 = (int(round(v * scale)) for v in zoom)
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), (0, 230, 230), 1)
    for p in prompts:
        _draw_prompt(out, p, scale, r)
    if pending:
        pts = np.array([(x * scale, y * scale) for x, y in pending], np.int32)
        colour = (255, 200, 0) if pending_kind != "scribble" else (0, 200, 0)
        for q in pts:
            cv2.circle(out, tuple(int(v) for v in q), r, colour, -1)
        if len(pts) > 1:
            cv2.polylines(out, [pts], pending_kind == "contour" and len(pts) > 2, colour, 2)
    return out


def _draw_prompt(out: np.ndarray, p: Prompt, scale: float, r: int) -> None:
    if isinstance(p, Click):
        c = (int(p.x * scale), int(p.y * scale))
        cv2.circle(out, c, r + 1, (255, 255, 255), -1)
        cv2.circle(out, c, r, (0, 200, 0) if p.positive else (220, 0, 0), -1)
    elif isinstance(p, Box):
        cv2.rectangle(out, (int(p.x0 * scale), int(p.y0 * scale)), (int(p.x1 * scale), int(p.y1 * scale)),
                      (255, 200, 0), 2)
    elif isinstance(p, (Scribble, Contour)):
        pts = np.array([(x * scale, y * scale) for x, y in p.points], np.int32)
        colour = (255, 200, 0) if isinstance(p, Contour) else ((0, 200, 0) if p.positive else (220, 0, 0))
        cv2.polylines(out, [pts], isinstance(p, Contour), colour, 2 if isinstance(p, Contour) else max(2, r))
