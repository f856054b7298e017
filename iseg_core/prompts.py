"""The one prompt vocabulary shared by the app, the models, evaluation and training.

Every prompt is in original-image pixel coordinates: ``x`` is the column, ``y`` the row, both
continuous, with pixel ``(col, row)`` covering ``[col, col + 1) x [row, row + 1)``. A click at
``x=10, y=20`` therefore means the pixel in column 10 of row 20.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .errors import PromptError

Point = Tuple[float, float]


def _finite_point(p, what: str) -> Point:
    try:
        x, y = float(p[0]), float(p[1])
    except (TypeError, ValueError, IndexError):
        raise PromptError(f"{what}: expected an (x, y) pair, got {p!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise PromptError(f"{what}: coordinates must be finite numbers, got ({x}, {y})")
    return x, y


def _points(points: Iterable, what: str) -> Tuple[Point, ...]:
    return tuple(_finite_point(p, f"{what} point {i}") for i, p in enumerate(points))


@dataclass(frozen=True)
class Click:
    """A single click; ``positive`` marks the object, negative marks background."""

    x: float
    y: float
    positive: bool = True

    def __post_init__(self):
        x, y = _finite_point((self.x, self.y), "Click")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "positive", bool(self.positive))


@dataclass(frozen=True)
class Scribble:
    """A free-hand stroke (polyline through ``points``) over object or background."""

    points: Tuple[Point, ...]
    positive: bool = True

    def __post_init__(self):
        pts = _points(self.points, "Scribble")
        if not pts:
            raise PromptError("Scribble: needs at least one point")
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "positive", bool(self.positive))


@dataclass(frozen=True)
class Box:
    """An axis-aligned box with corners ``(x0, y0)`` (top-left) and ``(x1, y1)`` (bottom-right)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self):
        x0, y0 = _finite_point((self.x0, self.y0), "Box corner (x0, y0)")
        x1, y1 = _finite_point((self.x1, self.y1), "Box corner (x1, y1)")
        # A box dragged up-left is still the same box: store it normalised.
        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise PromptError(f"Box: must be at least 1 pixel wide and high, got ({x0}, {y0}, {x1}, {y1})")
        for name, v in zip(("x0", "y0", "x1", "y1"), (x0, y0, x1, y1)):
            object.__setattr__(self, name, v)


@dataclass(frozen=True)
class Contour:
    """A closed polygon traced around the object (the last point joins the first); ``positive=False`` traces
    around a region that is not the object (SAIC-IS's benchmark draws those around false positives)."""

    points: Tuple[Point, ...]
    positive: bool = True

    def __post_init__(self):
        pts = _points(self.points, "Contour")
        if len(pts) < 3:
            raise PromptError(f"Contour: needs at least 3 points, got {len(pts)}")
        arr = np.asarray(pts)
        area = 0.5 * abs(np.dot(arr[:, 0], np.roll(arr[:, 1], 1)) - np.dot(arr[:, 1], np.roll(arr[:, 0], 1)))
        if area < 1.0:
            raise PromptError(f"Contour: encloses {area:.2f} square pixels; trace around the object")
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "positive", bool(self.positive))


Prompt = Union[Click, Scribble, Box, Contour]
PROMPT_TYPES = (Click, Scribble, Box, Contour)


@dataclass(frozen=True)
class Stroke:
    """A brush (``erase=False``) or eraser stroke: every pixel within ``radius`` of the polyline through
    ``points`` is forced into (or out of) the object, on top of whatever the model answers. Not a model prompt:
    it is kept in the object's prompt log beside the prompts, and replayed in order with them. Painting is
    idempotent, so replaying a log onto its own result changes nothing."""

    points: Tuple[Point, ...]
    radius: float
    erase: bool = False

    def __post_init__(self):
        pts = _points(self.points, "Stroke")
        if not pts:
            raise PromptError("Stroke: needs at least one point")
        r = float(self.radius)
        if not (math.isfinite(r) and 0 < r <= 10_000):
            raise PromptError(f"Stroke: the brush radius must be a positive number of pixels, got {self.radius!r}")
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "radius", r)
        object.__setattr__(self, "erase", bool(self.erase))

    def paint(self, mask: np.ndarray, scale_xy: Tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
        """Paint the stroke into the bool ``mask`` in place (coordinates scaled by ``scale_xy`` first: a mask
        at display size) and return it. Round caps and joins: a disc at every point, joined by thick lines."""
        sx, sy = scale_xy
        r = max(0.5, self.radius * (sx + sy) / 2)
        canvas = np.zeros(mask.shape, np.uint8)
        pts = np.round(np.array(self.points, np.float64) * (sx, sy) - 0.5).astype(np.int32)
        thick = max(1, int(round(2 * r)))
        if len(pts) > 1:
            cv2.polylines(canvas, [pts.reshape(-1, 1, 2)], False, 1, thick, cv2.LINE_8)
        for x, y in pts:
            cv2.circle(canvas, (int(x), int(y)), int(round(r)), 1, -1, cv2.LINE_8)
        mask[canvas.view(bool)] = not self.erase
        return mask


def model_prompts(prompts: Sequence) -> list:
    """The prompts a model sees: everything but brush and eraser strokes."""
    return [p for p in prompts if not isinstance(p, Stroke)]


def prompt_points(prompt: Prompt) -> Tuple[Point, ...]:
    """All coordinates a prompt names, for range checks and bounding boxes."""
    if isinstance(prompt, Click):
        return ((prompt.x, prompt.y),)
    if isinstance(prompt, Box):
        return ((prompt.x0, prompt.y0), (prompt.x1, prompt.y1))
    return prompt.points


def clipped_contour(points: np.ndarray, image_size: Tuple[int, int]) -> Contour:
    """A contour through ``points`` ``(N, 2)`` (x, y) moved onto the image's pixels, ``(H, W)``."""
    h, w = image_size
    pts = np.column_stack([np.clip(points[:, 0], 0, w - 1), np.clip(points[:, 1], 0, h - 1)])
    return Contour([tuple(map(float, p)) for p in pts])


def prompt_to_dict(p: Prompt) -> dict:
    """A prompt as plain JSON data (the stored prompt log, result files, the API's state)."""
    if isinstance(p, Click):
        return {"type": "click", "x": p.x, "y": p.y, "positive": p.positive}
    if isinstance(p, Box):
        return {"type": "box", "x0": p.x0, "y0": p.y0, "x1": p.x1, "y1": p.y1}
    if isinstance(p, Scribble):
        return {"type": "scribble", "points": [list(map(float, q)) for q in p.points], "positive": p.positive}
    if isinstance(p, Contour):
        d = {"type": "contour", "points": [list(map(float, q)) for q in p.points]}
        return d if p.positive else {**d, "positive": False}
    if isinstance(p, Stroke):
        return {"type": "eraser" if p.erase else "brush", "points": [list(map(float, q)) for q in p.points],
                "radius": p.radius}
    raise PromptError(f"unknown prompt {p!r}")


def prompt_from_dict(d: dict):
    """The inverse of :func:`prompt_to_dict`; PromptError for an unknown type, KeyError for a missing field."""
    kind = d.get("type")
    if kind == "click":
        return Click(float(d["x"]), float(d["y"]), bool(d.get("positive", True)))
    if kind == "box":
        return Box(float(d["x0"]), float(d["y0"]), float(d["x1"]), float(d["y1"]))
    if kind == "scribble":
        return Scribble([tuple(map(float, q)) for q in d["points"]], bool(d.get("positive", True)))
    if kind == "contour":
        return Contour([tuple(map(float, q)) for q in d["points"]], bool(d.get("positive", True)))
    if kind in ("brush", "eraser"):
        return Stroke([tuple(map(float, q)) for q in d["points"]], float(d["radius"]), kind == "eraser")
    raise PromptError(f"unknown prompt type {kind!r}")


def validate_prompts(prompts: Sequence[Prompt], image_size: Tuple[int, int]) -> list:
    """Check that ``prompts`` are known prompt types inside an image of ``image_size=(H, W)``.

    Clicks, scribble and contour points must lie on a pixel: ``0 <= x < W`` and ``0 <= y < H``.
    Box corners may touch the far edges (``x1 <= W``, ``y1 <= H``). Returns the prompts as a list;
    raises :class:`PromptError` naming the first offending prompt.
    """
    if isinstance(prompts, PROMPT_TYPES):
        prompts = [prompts]
    prompts = list(prompts)
    h, w = image_size
    for i, p in enumerate(prompts):
        if not isinstance(p, PROMPT_TYPES):
            raise PromptError(f"prompt {i}: {type(p).__name__} is not a Click, Scribble, Box or Contour")
        inclusive = isinstance(p, Box)
        for x, y in prompt_points(p):
            inside_x = 0 <= x <= w if inclusive else 0 <= x < w
            inside_y = 0 <= y <= h if inclusive else 0 <= y < h
            if not (inside_x and inside_y):
                raise PromptError(
                    f"prompt {i} ({type(p).__name__}) has point ({x:g}, {y:g}) outside the "
                    f"{w}x{h} image (x in [0, {w}), y in [0, {h}))"
                )
    return prompts


def resample_polyline(points: Sequence[Point], n: int) -> np.ndarray:
    """``n`` points evenly spaced by arc length along a polyline, endpoints included. Shape (n, 2)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    if cum[-1] == 0:  # a single point, or a stroke that never moved
        return np.repeat(pts[:1], n, axis=0)
    # One point goes to the middle of the stroke; more are spread end to end.
    t = np.linspace(0.0, cum[-1], n) if n > 1 else np.array([cum[-1] / 2])
    return np.stack([np.interp(t, cum, pts[:, 0]), np.interp(t, cum, pts[:, 1])], axis=1)


def to_crop(p: Prompt, dx: float, dy: float, flip_w: Optional[int] = None) -> Prompt:
    """``p`` in the frame of a crop whose top-left corner is ``(dx, dy)`` (i.e. translated by ``(-dx, -dy)``)
    and, with ``flip_w``, mirrored in a crop ``flip_w`` pixels wide."""
    def fx(x):
        x = x - dx
        return (flip_w - 1 - x) if flip_w is not None else x

    if isinstance(p, Click):
        return Click(fx(p.x), p.y - dy, p.positive)
    if isinstance(p, Box):
        if flip_w is None:
            return Box(p.x0 - dx, p.y0 - dy, p.x1 - dx, p.y1 - dy)
        return Box(flip_w - (p.x1 - dx), p.y0 - dy, flip_w - (p.x0 - dx), p.y1 - dy)
    pts = [(fx(x), y - dy) for x, y in p.points]
    return Scribble(pts, p.positive) if isinstance(p, Scribble) else Contour(pts, p.positive)
