"""Overlay rendering at display size: finished objects in their colours, the current object highlighted,
contour lines, and the prompts drawn on top. Everything is computed on the display copy (long side at most
``DISPLAY_LONG_SIDE``), never on the full-resolution image, so a 12 MP photo costs what a 1 MP one does."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from iseg_core.geometry import DisplayFrame
from iseg_core.prompts import Box, Click, Contour, Prompt, Scribble, Stroke
from storage.store import LABEL_COLOURS, hex_rgb

PROPOSAL = (255, 215, 0)  # proposed objects' outlines and numbers
DISPLAY_LONG_SIDE = 1024  # the display copy of an image (a page on a large screen asks for more)
MAX_DISPLAY_LONG_SIDE = 2048
CURRENT = (30, 144, 255)
PALETTE = [hex_rgb(c) for c in LABEL_COLOURS]  # objects whose name is not (yet) a label: the labels' colours


def display_copy(image: np.ndarray, frame: DisplayFrame) -> np.ndarray:
    """The copy of ``image`` the user sees, at ``frame.display_size``."""
    if frame.identity:
        return image
    dh, dw = frame.display_size
    return cv2.resize(image, (dw, dh), interpolation=cv2.INTER_AREA)


def to_display(mask: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    return cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0


@dataclass
class ViewOptions:
    opacity: float = 0.5
    contours: bool = True
    show_objects: bool = True


def proposal_outline(mask: np.ndarray, shape: Tuple[int, int]) -> tuple:
    """A proposed object's outline at display size and where its number goes: made once per proposal (the
    studio keeps it), so a click's frame only draws it."""
    m = to_display(mask, shape).astype(np.uint8)
    cnts, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    ys, xs = np.nonzero(m)
    return cnts, ((int(xs.mean()), int(ys.mean())) if len(xs) else (0, 0))


def render(display: np.ndarray, frame: DisplayFrame, objects: Sequence[np.ndarray], current: Optional[np.ndarray],
           prompts: Sequence[Prompt], pending: Sequence[Tuple[float, float]] = (), pending_kind: str = "",
           options: ViewOptions = ViewOptions(), selected: Optional[int] = None,
           zoom: Optional[Tuple[float, float, float, float]] = None,
           colours: Optional[Sequence[Tuple[int, int, int]]] = None,
           proposals: Sequence[tuple] = ()) -> np.ndarray:
    """The overlay as uint8 RGB at display size. ``objects`` and ``current`` are masks (resized to the display
    when they are not at its size); ``colours``: each object's (its label's), else the palette in turn;
    prompts, ``pending`` points and ``zoom`` are in image pixels. ``proposals`` (:func:`proposal_outline` of
    each, best first): outlined in yellow with their numbers, not filled (they are not accepted work)."""
    out = display.copy()
    shape = display.shape[:2]
    a = float(np.clip(options.opacity, 0.0, 1.0))
    layers: List[Tuple[np.ndarray, tuple, int]] = []
    if options.show_objects:
        for k, m in enumerate(objects):
            if selected is not None and k == selected and current is not None:
                continue  # being re-edited: drawn as the current object
            colour = colours[k] if colours is not None and k < len(colours) else PALETTE[k % len(PALETTE)]
            layers.append((to_display(m, shape), tuple(int(c) for c in colour), 1))
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
    for k, (cnts, at) in enumerate(proposals):
        cv2.drawContours(out, cnts, -1, PROPOSAL, max(1, r // 3))
        cv2.putText(out, str(k + 1), at, cv2.FONT_HERSHEY_SIMPLEX, r / 8, (0, 0, 0), max(2, r // 2), cv2.LINE_AA)
        cv2.putText(out, str(k + 1), at, cv2.FONT_HERSHEY_SIMPLEX, r / 8, PROPOSAL, max(1, r // 4), cv2.LINE_AA)
    if zoom is not None:  # the crop the model works on
        x0, y0, x1, y1 = frame.roi_to_display(zoom)
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), (0, 230, 230), 1)
    for p in prompts:
        _draw_prompt(out, p, frame, r)
    if pending:
        pts = _display_points(frame, pending)
        colour = (255, 200, 0) if pending_kind != "scribble" else (0, 200, 0)
        for q in pts:
            cv2.circle(out, tuple(int(v) for v in q), r, colour, -1)
        if len(pts) > 1:
            cv2.polylines(out, [pts], pending_kind == "contour" and len(pts) > 2, colour, 2)
    return out


def _display_points(frame: DisplayFrame, points) -> np.ndarray:
    """Image-pixel points as int32 display pixels ``(N, 2)``."""
    return np.array([frame.to_display(x, y) for x, y in points], np.float64).astype(np.int32).reshape(-1, 2)


def _draw_prompt(out: np.ndarray, p: Prompt, frame: DisplayFrame, r: int) -> None:
    if isinstance(p, Click):
        c = tuple(int(v) for v in _display_points(frame, [(p.x, p.y)])[0])
        cv2.circle(out, c, r + 1, (255, 255, 255), -1)
        cv2.circle(out, c, r, (0, 200, 0) if p.positive else (220, 0, 0), -1)
    elif isinstance(p, Box):
        (x0, y0), (x1, y1) = _display_points(frame, [(p.x0, p.y0), (p.x1, p.y1)])
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)), (255, 200, 0), 2)
    elif isinstance(p, Stroke):  # its effect is in the mask; a thin line shows where it went
        pts = _display_points(frame, p.points)
        colour = (220, 0, 0) if p.erase else (0, 200, 0)
        if len(pts) > 1:
            cv2.polylines(out, [pts], False, colour, 1)
        else:
            cv2.circle(out, tuple(int(v) for v in pts[0]), 2, colour, -1)
    elif isinstance(p, (Scribble, Contour)):
        pts = _display_points(frame, p.points)
        colour = (255, 200, 0) if isinstance(p, Contour) else ((0, 200, 0) if p.positive else (220, 0, 0))
        cv2.polylines(out, [pts], isinstance(p, Contour), colour, 2 if isinstance(p, Contour) else max(2, r))
