"""Per-user annotation state, independent of any UI: the image being annotated, the object being drawn
(its prompts, masks and logits after each prompt, a redo stack), and the objects finished on this image.

``SessionManager`` owns one model per process (its embedding cache shared by every session), a session per
browser tab, and a background thread that encodes the next image of a queue before the user opens it.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import cv2
import numpy as np
import torch

from .cache import EmbeddingCache
from .errors import IsegError, PromptError
from .geometry import DisplayFrame, ZoomIn, grow_to_include, zoom_roi
from .models.base import ImageEmbedding, Segmenter
from .predictor import Predictor, image_hash
from .prompts import (Box, Click, Prompt, Scribble, Stroke, model_prompts, prompt_from_dict, prompt_points,
                      prompt_to_dict, to_crop, validate_prompts)

log = logging.getLogger(__name__)


@dataclass
class Step:
    """The state after one prompt or stroke: what the model returned for all prompts so far, with the brush and
    eraser strokes so far painted over it."""

    prompt: Union[Prompt, Stroke]
    mask: np.ndarray  # bool, the session's display size: the model's mask with the strokes painted on
    logits: Optional[torch.Tensor]  # the model's low-res logits, fed back with the next prompt (None: no prompt yet)
    score: float
    model_mask: Optional[np.ndarray] = None  # the model's own mask (display size) before the strokes
    deferred: bool = False  # added without decoding (the page's decoder drew it): mask and logits come later


@dataclass
class FinishedObject:
    mask: np.ndarray
    category: str
    prompts: List[dict]
    seconds: float
    stored_id: Optional[int] = None  # annotation id once saved
    preview: Optional[np.ndarray] = None  # the mask at display size, filled by whoever draws it

    @property
    def area(self) -> int:
        if getattr(self, "_area", None) is None or self._area[0] is not self.mask:
            self._area = (self.mask, int(np.count_nonzero(self.mask)))
        return self._area[1]


@dataclass
class AnnotationSession:
    """One user's work on one image at a time. Not thread-safe on its own: the manager locks it per call."""

    predictor: Predictor
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    image: Optional[np.ndarray] = None
    image_key: Optional[str] = None  # content id (storage sha256 or pixel hash)
    image_ref: Optional[int] = None  # the caller's id for the image (storage image id)
    steps: List[Step] = field(default_factory=list)
    redo_stack: List[Step] = field(default_factory=list)
    objects: List[FinishedObject] = field(default_factory=list)
    editing: Optional[int] = None  # index into objects being re-edited
    threshold: Optional[float] = None  # logit threshold of the masks; None: the model family's default
    display: Optional[DisplayFrame] = None  # image <-> display pixels; the steps keep masks at display size.
    # Decoding at display size skips upsampling every click to full resolution; finish_object makes the full mask
    zoom: Optional[tuple] = None  # (x0, y0, x1, y1): the model sees only this crop (ZoomIn), None = whole image
    seed_logits: Optional[torch.Tensor] = None  # the first click's previous-mask input (a proposal refined)
    base: Optional[np.ndarray] = None  # full-size mask that strokes start from while no model prompt is given
    # (an object re-opened whose log has no model prompt: imported, or made with the brush alone)
    started: float = field(default_factory=time.monotonic)
    lock: threading.RLock = field(default_factory=threading.RLock)

    # -- image ------------------------------------------------------------------------------------------
    def open_image(self, image: np.ndarray, key: Optional[str] = None, ref: Optional[int] = None,
                   objects: Sequence[FinishedObject] = (), display: Optional[DisplayFrame] = None) -> None:
        """Make ``image`` current (encoding it unless cached) and forget the previous image's drawing.
        ``display``: the frame of the copy the user sees (default: the image itself)."""
        if display is not None and tuple(display.image_size) != image.shape[:2]:
            raise IsegError(f"the display frame is for a {display.image_size} image, not {image.shape[:2]}")
        self.predictor.set_image(image, key)
        self.image, self.image_key, self.image_ref = image, key or image_hash(image), ref
        self.display = display or DisplayFrame(image.shape[:2], image.shape[:2])
        self.objects = list(objects)
        self._reset_object()

    def swap_model(self, model: Segmenter) -> None:
        with self.lock:
            same_encoder = self.predictor.model.cache_key == model.cache_key
            self.predictor.model = model
            if self.image is not None and not same_encoder:
                self._set_view(self.zoom)  # the same view, encoded by the new encoder

    def _set_view(self, zoom: Optional[tuple]) -> None:
        """Show the model the whole image (``zoom=None``) or the ZoomIn crop ``(x0, y0, x1, y1)``."""
        if zoom is None:
            self.predictor.set_image(self.image, self.image_key)
        else:
            x0, y0, x1, y1 = zoom
            self.predictor.set_image(np.ascontiguousarray(self.image[y0:y1, x0:x1]),
                                     f"{self.image_key}:{x0},{y0},{x1},{y1}")
        self.zoom = zoom

    def _reset_object(self) -> None:
        if self.zoom is not None and self.image is not None:
            self._set_view(None)
        self.steps, self.redo_stack, self.editing, self.zoom, self.base = [], [], None, None, None
        self.seed_logits = None
        self.started = time.monotonic()

    # -- frames: the whole image, or the ZoomIn crop --------------------------------------------------------
    def _mask(self, logits: torch.Tensor, full: bool = False) -> np.ndarray:
        """The mask of ``logits`` (in the current frame) in the whole image, at display size or full size."""
        size = None if full or self.display.identity else self.display.display_size
        if self.zoom is None:
            return self.predictor.mask_from_logits(logits, size, self.effective_threshold)
        x0, y0, x1, y1 = self.zoom if full else self.display.roi_to_display(self.zoom)
        out = np.zeros(self.image.shape[:2] if full else self.display.display_size, bool)
        out[y0:y1, x0:x1] = self.predictor.mask_from_logits(logits, (y1 - y0, x1 - x0), self.effective_threshold)
        return out

    def _predict(self, prompts: List[Prompt], prev: Optional[torch.Tensor]) -> Step:
        if self.zoom is None:
            size = None if self.display.identity else self.display.display_size
            pred = self.predictor.predict(prompts, prev_logits=prev, mask_size=size, threshold=self.effective_threshold)
            return Step(prompts[-1], pred.mask, pred.logits, pred.score)
        x0, y0 = self.zoom[:2]
        dx0, dy0, dx1, dy1 = self.display.roi_to_display(self.zoom)
        pred = self.predictor.predict([to_crop(p, x0, y0) for p in prompts], prev_logits=prev,
                                      mask_size=(dy1 - dy0, dx1 - dx0), threshold=self.effective_threshold)
        mask = np.zeros(self.display.display_size, bool)
        mask[dy0:dy1, dx0:dx1] = pred.mask  # the crop's mask pasted into the whole frame
        return Step(prompts[-1], mask, pred.logits, pred.score)

    def can_defer(self, prompt) -> bool:
        """Whether ``prompt`` may be added without decoding it now (:meth:`add` with ``decode=False``): a click,
        box or scribble on the whole image of an object that has no brush strokes, contours or starting mask
        (what the page's decoder draws exactly as the server would)."""
        simple = (Click, Box, Scribble)
        return (isinstance(prompt, simple) and self.zoom is None and self.base is None and self.seed_logits is None
                and all(isinstance(p, simple) for p in self.prompts))

    @property
    def deferred(self) -> bool:
        """Whether the current object has prompts not decoded here yet (see :meth:`settle`)."""
        return any(s.deferred for s in self.steps)

    def settle(self) -> int:
        """Decode the deferred steps, in order, each fed the one before's logits (as if they had been decoded
        when added); returns how many were decoded."""
        first = next((i for i, s in enumerate(self.steps) if s.deferred), None)
        if first is None:
            return 0
        prompts = [s.prompt for s in self.steps[first:]]
        del self.steps[first:]
        for p in prompts:
            self.steps.append(self._next_step(p))
        return len(prompts)

    def _replay(self, prompts: List[Prompt]) -> None:
        self.steps, self.redo_stack = [], []
        for p in prompts:
            self.steps.append(self._next_step(p))

    # -- brush and eraser: strokes painted over the model's mask, in order ----------------------------------
    def _start(self, model_mask: Optional[np.ndarray], full: bool = False) -> np.ndarray:
        """What strokes paint on: the model's mask, else the base mask, else nothing."""
        if model_mask is not None:
            return model_mask.copy()
        size = self.image.shape[:2] if full else tuple(self.display.display_size)
        if self.base is None:
            return np.zeros(size, bool)
        if full or self.display.identity:
            return self.base.copy()
        return cv2.resize(self.base.view(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0

    def _paint(self, mask: np.ndarray, strokes: Sequence[Stroke], full: bool = False) -> np.ndarray:
        scale = (1.0, 1.0) if full else self.display.scale_xy
        for st in strokes:
            st.paint(mask, scale)
        return mask

    def _next_step(self, prompt) -> Step:
        """The step that follows ``self.steps`` when ``prompt`` (a model prompt or a stroke) is added."""
        prev = self.steps[-1] if self.steps else None
        if isinstance(prompt, Stroke):
            mask = prompt.paint(prev.mask.copy() if prev else self._start(None), self.display.scale_xy)
            return Step(prompt, mask, prev.logits if prev else None, prev.score if prev else 0.0,
                        prev.model_mask if prev else None)
        step = self._predict(model_prompts(self.prompts) + [prompt], prev.logits if prev else self.seed_logits)
        step.model_mask = step.mask
        strokes = [p for p in self.prompts if isinstance(p, Stroke)]
        if strokes:  # (without strokes the two are one array: no copy on the per-click path)
            step.mask = self._paint(step.mask.copy(), strokes)
        return step

    def _recompose(self) -> None:
        """Every step's mask again from its model mask and the strokes before it (after a threshold change)."""
        strokes, model = [], None
        for step in self.steps + self.redo_stack[::-1]:
            if step.deferred:  # (an object with deferred steps has no strokes)
                continue
            if isinstance(step.prompt, Stroke):
                strokes.append(step.prompt)
            else:
                model = step.model_mask
            step.mask = self._paint(self._start(model), strokes)

    def zoom_in(self, expansion: float = 1.4, min_crop: int = 200) -> tuple:
        """RITM's ZoomIn for small objects: the model looks at a crop around the current object (encoded on
        its own, so a resizing model sees it at a higher resolution) and the prompts are replayed there."""
        if not model_prompts(self.prompts):
            raise IsegError("zoom in needs an object: click on it first")
        self.settle()
        full = self._mask(self.steps[-1].logits, full=True)
        clicks = [p for p in self.prompts if isinstance(p, Click)]
        roi = zoom_roi(full, clicks, ZoomIn(expansion=expansion, min_crop=min_crop))
        # every model prompt must stay inside the crop to be replayed (strokes are painted on the whole image)
        roi = x0, y0, x1, y1 = grow_to_include(roi, (q for p in model_prompts(self.prompts) for q in prompt_points(p)),
                                               full.shape)
        if (x1 - x0) * (y1 - y0) >= 0.8 * full.size:
            raise IsegError("the object already fills most of the image: zooming in would not help")
        prompts = self.prompts
        self.seed_logits = None  # in the whole image's frame, not the crop's
        self._set_view(roi)
        self._replay(prompts)
        return roi

    def zoom_out(self) -> None:
        if self.zoom is None:
            return
        prompts = self.prompts
        self._set_view(None)
        self._replay(prompts)

    def _need_image(self) -> None:
        if self.image is None:
            raise IsegError("open an image first")

    # -- prompts ----------------------------------------------------------------------------------------
    @property
    def prompts(self) -> List[Prompt]:
        return [s.prompt for s in self.steps]

    @property
    def mask(self) -> Optional[np.ndarray]:
        """The current object at display size (None before anything is drawn)."""
        if self.steps:
            self.settle()
            return self.steps[-1].mask
        return self._start(None) if self.base is not None else None

    def add(self, prompt: Union[Prompt, Stroke], decode: bool = True) -> Step:
        """Add one prompt to the current object and segment with all of them (previous logits fed back), or
        paint one brush / eraser stroke over the mask. A prompt outside the image raises PromptError and
        changes nothing. ``decode=False`` (the page decodes it itself) keeps the prompt without decoding it when
        :meth:`can_defer` allows; the mask is made when it is first needed (:meth:`settle`)."""
        self._need_image()
        if not decode and self.can_defer(prompt):
            validate_prompts([prompt], self.image.shape[:2])
            step = Step(prompt, None, None, float("nan"), deferred=True)
            self.steps.append(step)
            self.redo_stack.clear()
            return step
        self.settle()
        if not isinstance(prompt, Stroke):  # strokes are painted on the whole image, zoomed or not
            validate_prompts([prompt], self.image.shape[:2])
            if self.zoom is not None:
                x0, y0, x1, y1 = self.zoom
                try:
                    validate_prompts([to_crop(prompt, x0, y0)], (y1 - y0, x1 - x0))
                except PromptError:  # outside the zoomed crop: back to the whole image first
                    self.zoom_out()
        step = self._next_step(prompt)
        self.steps.append(step)
        self.redo_stack.clear()
        return step

    def undo(self) -> bool:
        if not self.steps:
            return False
        self.redo_stack.append(self.steps.pop())
        return True

    def redo(self) -> bool:
        if not self.redo_stack:
            return False
        self.steps.append(self.redo_stack.pop())
        return True

    def clear(self) -> None:
        self._reset_object()

    @property
    def effective_threshold(self) -> float:
        """The logit threshold in use: the one set, else the model family's (RITM's lineage: probability 0.49)."""
        return self.predictor.model.default_threshold if self.threshold is None else self.threshold

    def set_threshold(self, threshold: Optional[float]) -> None:
        """Re-threshold every step's logits (no decoding): a softer or tighter edge for the current object
        (None: back to the model family's default)."""
        self.threshold = None if threshold is None else float(threshold)
        for step in self.steps + self.redo_stack:
            if not isinstance(step.prompt, Stroke) and not step.deferred:
                step.model_mask = self._mask(step.logits)
        self._recompose()

    def full_mask(self) -> Optional[np.ndarray]:
        """The current object at the image's full resolution: the model's mask decoded at full size, with the
        strokes painted at full size (None before the first prompt)."""
        if not self.steps:
            return self.base.copy() if self.base is not None else None
        self.settle()
        if self.display.identity:
            return self.mask.copy()
        model = next((s for s in reversed(self.steps) if not isinstance(s.prompt, Stroke)), None)
        start = self._start(self._mask(model.logits, full=True) if model is not None else None, full=True)
        return self._paint(start, [p for p in self.prompts if isinstance(p, Stroke)], full=True)

    # -- objects ----------------------------------------------------------------------------------------
    def finish_object(self, category: str) -> FinishedObject:
        """Close the current object (its mask, category, prompt log, time spent) and start a new one."""
        if self.mask is None or not self.mask.any():
            raise IsegError("nothing to finish: the current object has no mask yet")
        full = self.full_mask()
        if not full.any():
            raise IsegError("nothing to finish: at full resolution the mask is empty")
        obj = FinishedObject(full, category.strip() or "object", [prompt_to_dict(p) for p in self.prompts],
                             time.monotonic() - self.started, preview=self.mask.copy())
        if self.editing is not None:
            old = self.objects[self.editing]
            obj.stored_id = old.stored_id
            obj.seconds += old.seconds
            self.objects[self.editing] = obj
        else:
            self.objects.append(obj)
        self._reset_object()
        return obj

    def delete_object(self, index: int) -> FinishedObject:
        if not 0 <= index < len(self.objects):
            raise IsegError(f"no object {index + 1}; this image has {len(self.objects)}")
        if self.editing == index:
            self._reset_object()
        return self.objects.pop(index)

    def start_from(self, mask: np.ndarray, logits: Optional[torch.Tensor] = None) -> None:
        """A new object that starts as ``mask`` (the image's size: a proposed object): shown at once, and
        ``logits`` (the mask in the model's frame, ``Segmenter.logits_from_mask``) are the previous-mask input
        of the first click, so clicks refine it instead of starting over."""
        self._need_image()
        if self.zoom is not None:
            self.zoom_out()
        self._reset_object()
        self.base = np.asarray(mask, bool).copy()
        self.seed_logits = logits

    def edit_object(self, index: int) -> None:
        """Re-open a finished object: its prompts and strokes are replayed (so later prompts refine it as
        before). An object whose log has no model prompt (imported, or drawn with the brush alone) starts from
        its stored mask; its strokes, replayed on it, change nothing."""
        if not 0 <= index < len(self.objects):
            raise IsegError(f"no object {index + 1}; this image has {len(self.objects)}")
        obj = self.objects[index]
        prompts = [prompt_from_dict(d) for d in obj.prompts]
        self._reset_object()
        if not model_prompts(prompts):
            self.base = obj.mask.copy()
        for p in prompts:
            self.add(p)
        self.editing = index


class SessionManager:
    """Sessions by id over one shared model and embedding cache, plus background pre-encoding."""

    def __init__(self, model_loader: Callable[[], Segmenter], cache: Optional[EmbeddingCache] = None,
                 max_sessions: int = 1000):
        self._loader = model_loader
        self._model: Optional[Segmenter] = None
        self.cache = cache if cache is not None else EmbeddingCache()
        self._sessions: Dict[str, AnnotationSession] = {}
        self._lock = threading.Lock()
        self._max = max_sessions
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iseg-precompute")
        self._pending: Dict[str, Future] = {}

    @property
    def model(self) -> Segmenter:
        with self._lock:
            if self._model is None:
                self._model = self._loader()
            return self._model

    def session(self, session_id: str) -> AnnotationSession:
        model = self.model
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None:
                if len(self._sessions) >= self._max:  # forget the oldest
                    self._sessions.pop(next(iter(self._sessions)))
                s = AnnotationSession(Predictor(model, self.cache), id=session_id)
                self._sessions[session_id] = s
            return s

    def drop(self, session_id: str) -> None:
        """Forget a session (its tab was closed); its images' embeddings stay cached for other sessions."""
        with self._lock:
            self._sessions.pop(session_id, None)

    def precompute(self, image: np.ndarray, key: str) -> Future:
        """Encode ``image`` in the background so that opening it later costs no encoder run. A failure is
        logged (the user meets it, with its message, when opening the image) and kept in the future."""
        with self._lock:
            fut = self._pending.get(key)
            if fut is not None and not fut.done():
                return fut

            def run():
                Predictor(self.model, self.cache).set_image(image, key)

            fut = self._pool.submit(run)
            self._pending[key] = fut
        fut.add_done_callback(lambda f, key=key: self._precomputed(f, key))  # outside the lock: may run at once
        return fut

    def _precomputed(self, fut: Future, key: str) -> None:
        with self._lock:
            if self._pending.get(key) is fut:
                del self._pending[key]
        if not fut.cancelled() and fut.exception() is not None:
            e = fut.exception()
            log.warning("background encoding of image %s failed: %s", key, e, exc_info=not isinstance(e, IsegError))

    def precomputing(self) -> bool:
        """Whether a background encoding is queued or running."""
        with self._lock:
            return any(not f.done() for f in self._pending.values())

    def cached_embedding(self, key: str) -> Optional[ImageEmbedding]:
        """The current model's embedding of image ``key`` when it is cached (e.g. for a decoder-only fine-tune)."""
        return self.cache.get((self.model.cache_key, key))

    def is_encoded(self, key: str) -> bool:
        return (self.model.cache_key, key) in self.cache

    def swap_model(self, model: Segmenter) -> None:
        """Serve ``model`` from now on (e.g. a fine-tuned version). Sessions keep their image, objects and undo
        history; an image is re-encoded only when the new model's encoder differs."""
        with self._lock:
            self._model = model
            self._loader = lambda: model
            sessions = list(self._sessions.values())
        for s in sessions:
            s.swap_model(model)

    def close(self) -> None:
        """Stop background encoding: queued images are dropped, one in progress finishes on its own."""
        self._pool.shutdown(wait=False, cancel_futures=True)
