"""The studio's actions as plain functions of a session id: what the Gradio page calls on each event and what
the named API endpoints expose (``add_click``, ``add_box``, ``undo``, ``finish_object``, ``accept_image``...).

Coordinates given to these functions are original-image pixels. Every action returns a ``View``: the overlay
at display size, a status line, the object table and a small JSON summary (what tests and API users read).
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from iseg_core.cache import EmbeddingCache
from iseg_core.errors import IsegError
from iseg_core.geometry import DisplayFrame
from iseg_core.image import IMAGE_SUFFIXES, load_image
from iseg_core.models import Segmenter, list_models, load_model, takes_weights
from iseg_core.models.base import logit_to_probability, probability_to_logit
from iseg_core.prompts import Box, Click, Contour, Scribble, Stroke, prompt_to_dict
from iseg_core.session import FinishedObject, SessionManager
from iseg_core.weights import reporting_progress
from storage import Store, StorageError
from storage.coco import import_coco
from storage.exports import FORMATS, export, safe_name
from storage.store import IMAGE_STATES, BrowsePage, CategoryRecord, ImageRecord

from .text import md
from .render import (CURRENT, DISPLAY_LONG_SIDE, MAX_DISPLAY_LONG_SIDE, PALETTE, ViewOptions, display_copy,
                     proposal_outline, render, to_display)

SAMPLES = Path(__file__).resolve().parent / "samples"
MAX_UPLOAD_MB = 50  # default size limit of one uploaded or imported image file


log = logging.getLogger(__name__)


def allowed_path(path: str, folders: Sequence[Path]) -> Optional[Path]:
    """``path`` resolved (``..`` and every symlink followed) when the result lies inside one of the (resolved)
    ``folders``, else None. Says nothing about whether the file exists, so a refusal reveals nothing."""
    try:
        target = Path(os.path.expanduser(str(path))).resolve(strict=False)
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return None
    return target if any(target.is_relative_to(folder) for folder in folders) else None


def active_checkpoint(models_dir: Path, name: str) -> Optional[str]:
    """The fine-tuned checkpoint last swapped in for ``name`` (if its file still exists)."""
    f = Path(models_dir) / f"{name}.active"
    if f.is_file():
        path = f.read_text().strip()
        if path and Path(path).is_file():
            return path
    return None


def model_loader(default: str, checkpoint: Optional[str] = None, models_dir: Optional[Path] = None,
                 device: Optional[str] = None, dtype: Optional[torch.dtype] = None,
                 wrap: Optional[Callable[[Segmenter], Segmenter]] = None) -> Callable[[str], Segmenter]:
    """How the studio loads a model by name (``python app.py`` and every Studio use this one policy).

    The ``default`` model loads ``checkpoint`` when one is given (a file, a known name, ``hub``, or ``random``
    for random weights: demos and tests). Otherwise a model with weights loads the fine-tuned version last
    swapped in (``<models_dir>/<name>.active``), else its published weights (``hub``). ``wrap`` is applied to
    every loaded model (ZeroGPU offloading)."""
    def load(name: str) -> Segmenter:
        ckpt = None
        if takes_weights(name):
            ckpt = checkpoint if name == default else None
            if ckpt is None:
                ckpt = (active_checkpoint(models_dir, name) if models_dir else None) or "hub"
        model = load_model(name, checkpoint=None if ckpt == "random" else ckpt, device=device, dtype=dtype)
        return wrap(model) if wrap is not None else model

    return load


@dataclass
class View:
    image: Optional[np.ndarray]
    status: str
    objects: List[list]
    info: dict
    decoder: Optional[dict] = None  # the page's decoder settings (ui.page_decoder), None: the server decodes


@dataclass
class TabState:
    """What the page needs beyond the annotation session: queue position, display copy, half-drawn shapes."""

    index: int = -1
    record: Optional[ImageRecord] = None  # the open image
    display: Optional[np.ndarray] = None  # the downscaled copy shown (its frame: the session's ``display``)
    pending: List[Tuple[float, float]] = field(default_factory=list)  # box corner / contour vertices
    pending_kind: str = ""  # "box", "contour" or "scribble" while one is being clicked
    pending_positive: bool = True
    options: ViewOptions = field(default_factory=ViewOptions)
    model: str = ""
    message: str = ""
    user: str = ""  # the signed-in name (sign-in on), the author of what this tab saves
    lock_refreshed: float = 0.0  # when the lock on the open image was last renewed (monotonic)
    display_long: int = DISPLAY_LONG_SIDE  # the display copy's long side (raised for a large canvas)
    proposals: list = field(default_factory=list)  # the open image's proposed objects (ProposalRecord), best first
    proposal_previews: dict = field(default_factory=dict)  # proposal id -> its outline at display size
    refining: Optional[int] = None  # the proposal id the current object started from
    seq: int = 0  # the page's number of the last canvas gesture handled (the page's decoder syncs by it)

    @property
    def image_id(self) -> Optional[int]:
        return self.record.id if self.record is not None else None


class Studio:
    def __init__(self, store: Store, project: str = "default", model: str = "classical",
                 checkpoint: Optional[str] = None, loader: Optional[Callable[[str], Segmenter]] = None,
                 export_dir: Optional[Path] = None, author: str = "", notice: Optional[str] = None,
                 import_dirs: Sequence[Path] = (), max_upload_mb: float = MAX_UPLOAD_MB,
                 roles: Optional[Callable[[str], Optional[str]]] = None, lock_minutes: float = 15.0,
                 embedding_store=None):
        """``loader`` loads a model by name (default: :func:`model_loader` for ``model`` and ``checkpoint``);
        ``notice``: one line shown under the status while a tab uses the default model (how to get a better one);
        ``import_dirs``: the only folders the API may import image files from by path (``--import-dir``);
        ``max_upload_mb``: the size limit of one image file, uploaded or imported; ``roles``: a signed-in user's
        role ("annotator", "reviewer"; sign-in on); ``lock_minutes``: how long an image stays locked to a signed-in
        user who does nothing with it; ``embedding_store``: an :class:`iseg_core.embedding_store.EmbeddingStore`
        behind every model's cache (images precomputed into it open without encoding; what is encoded here
        goes into it), or None."""
        self.embedding_store = None
        self._prepare = None  # the background "Prepare project" run's state
        self.roles = roles
        self.lock_seconds = float(lock_minutes) * 60
        self.notice = notice
        self.page = None  # the page's decoder (ui.page_decoder.PageDecoder), set by build_app; None: server only
        self.import_dirs = [Path(d).resolve() for d in import_dirs]
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self.store = store
        self.project = store.project(project)
        self.export_dir = Path(export_dir or Path(os.environ.get("ISEG_HOME", "data")) / "exports")
        self.models_dir = self.export_dir.parent / "models"  # fine-tuned checkpoints
        self._loader = loader or model_loader(model, checkpoint, self.models_dir)
        self.default_model = model
        self._managers: Dict[str, SessionManager] = {}
        self._tabs: Dict[str, TabState] = {}
        self._lock = threading.Lock()
        self.author = author
        self._job = None  # the latest training.job.FinetuneJob
        self._cached: Dict[str, tuple] = {}  # key -> (when, value): see _for_a_second
        if embedding_store is not None:
            self.attach_store(embedding_store)
        self.manager(model)  # fail early (and clearly) when the default model cannot load

    # -- plumbing ---------------------------------------------------------------------------------------
    def manager(self, name: str) -> SessionManager:
        with self._lock:
            mgr = self._managers.get(name)
        if mgr is None:
            model = self._loader(name)  # raises a clear IsegError (e.g. weights missing) before anything changes
            mgr = SessionManager(lambda: model, EmbeddingCache(store=self.embedding_store))
            with self._lock:
                mgr = self._managers.setdefault(name, mgr)
        return mgr

    def tab(self, sid: str) -> TabState:
        with self._lock:
            t = self._tabs.get(sid)
            if t is None:
                t = self._tabs[sid] = TabState(model=self.default_model)
            return t

    def sign_in(self, sid: str, name: str) -> None:
        """The tab ``sid`` belongs to the signed-in user ``name``: the author of everything it saves."""
        self.tab(sid).user = name

    def _author(self, sid: str) -> str:
        return self.tab(sid).user or self.author

    def _session(self, sid: str):
        return self.manager(self.tab(sid).model).session(sid)

    def drop(self, sid: str) -> None:
        """Forget a browser session (its tab closed): its half-drawn object and undo history go; saved work
        is in the store, and cached embeddings stay for everyone else."""
        with self._lock:
            t = self._tabs.pop(sid, None)
            managers = list(self._managers.values())
        if t is not None and t.user and t.image_id is not None:
            self._release(t)
        for mgr in managers:
            mgr.drop(sid)

    def close(self) -> None:
        """Stop background work: pre-encoding of every model and a running fine-tuning job."""
        if self._job is not None:
            self._job.cancel()
        with self._lock:
            managers = list(self._managers.values())
        for mgr in managers:
            mgr.close()

    def ensure_samples(self) -> int:
        """On a first run (an empty project), add the bundled sample images. Returns how many were added."""
        if self.store.image_count(self.project)[0]:
            return 0
        n = 0
        for f in sorted(SAMPLES.glob("*.jpg")):
            n += self.store.add_image(self.project, f).added
        return n

    def _for_a_second(self, key: str, load: Callable[[], object], fresh: bool):
        """``load()``, kept for a second: what every click shows should not cost a query per click."""
        now = time.monotonic()
        hit = self._cached.get(key)
        if fresh or hit is None or now - hit[0] > 1.0:
            hit = self._cached[key] = (now, load())
        return hit[1]

    def counts(self, fresh: bool = False) -> Tuple[int, int]:
        """(images, images done) of the project: one aggregate query (a project of 10,000 images is never
        listed to answer it)."""
        return self._for_a_second("counts", lambda: self.store.image_count(self.project), fresh)

    def labels(self, fresh: bool = False) -> List[CategoryRecord]:
        """The project's label set (every change made here refreshes it)."""
        return self._for_a_second("labels", lambda: self.store.categories(self.project), fresh)

    def _colour(self, category: str, k: int) -> Tuple[int, int, int]:
        for c in self.labels():
            if c.name == category:
                return c.rgb
        return PALETTE[k % len(PALETTE)]

    # -- the view ---------------------------------------------------------------------------------------
    def view(self, sid: str, message: Optional[str] = None) -> View:
        t = self.tab(sid)
        s = self._session(sid)
        if message is not None:
            t.message = message
        total, done = self.counts()
        with s.lock:
            img = None
            deferred = s.deferred  # the page's decoder drew the current object: the frame leaves it out
            drawn = None if deferred else s.mask
            if t.display is not None:
                for o in s.objects:
                    if o.preview is None:
                        o.preview = to_display(o.mask, t.display.shape[:2])
                for p in t.proposals:
                    if p.id not in t.proposal_previews:
                        t.proposal_previews[p.id] = proposal_outline(p.mask(), t.display.shape[:2])
                img = render(t.display, s.display, [o.preview for o in s.objects], drawn, s.prompts, t.pending,
                             t.pending_kind, t.options, s.editing, zoom=s.zoom,
                             colours=[self._colour(o.category, k) for k, o in enumerate(s.objects)],
                             proposals=[t.proposal_previews[p.id] for p in t.proposals])
            rows = [[k + 1, o.category, o.area, len(o.prompts), "saved" if o.stored_id else "not saved"]
                    for k, o in enumerate(s.objects)]
            decoder = self._decoder_config(t, s)
            current = t.record
            info = {
                "session": sid, "model": t.model, "image_index": t.index, "image_id": t.image_id,
                "file_name": current.file_name if current else None,
                "image_size": list(s.image.shape[:2]) if s.image is not None else None,
                "prompts": [prompt_to_dict(p) for p in s.prompts],
                # pixels of the displayed mask (None: drawn by the page, not decoded here yet)
                "mask_area": None if deferred else int(drawn.sum()) if drawn is not None else 0,
                "score": float(s.steps[-1].score) if s.steps and not deferred else None, "redo": len(s.redo_stack),
                "decoded_by": "page" if deferred else "server",
                "objects": [{"category": o.category, "area": o.area, "id": o.stored_id} for o in s.objects],
                "editing": s.editing, "zoom": list(s.zoom) if s.zoom else None, "pending": [list(p) for p in t.pending], "pending_kind": t.pending_kind,
                "queue": {"done": done, "total": total},
                "threshold": round(logit_to_probability(s.effective_threshold), 4),
                "proposals": [{"id": p.id, "score": round(p.score, 4), "area": p.area} for p in t.proposals],
            }
        head = f"**{done} / {total} images done**"
        if t.user:
            head = f"{md(t.user)} · " + head
            self._renew_lock(t)
        if current:
            head += f" · image {t.index + 1}: {md(current.file_name)} ({current.width}x{current.height})"
            head += " · accepted" if current.done else ""
            if current.review_state == "approved":
                head += f" · approved by {md(current.reviewed_by)}"
            elif current.review_state == "returned":
                head += f"\n\n**Sent back by {md(current.reviewed_by)}:** {md(current.review_comment)}"
        if self.notice and t.model == self.default_model:
            head += f"\n\n{self.notice}"
        status = head + (f"\n\n{t.message}" if t.message else "")
        return View(img, status, rows, info, decoder)

    def _decoder_config(self, t: TabState, s) -> Optional[dict]:
        """The page's decoder settings for this tab (None: its model has none, or it is not exported yet)."""
        if self.page is None:
            return None
        try:
            cfg = self.page.config(s.predictor.model, s, t.options, CURRENT)
        except (IsegError, OSError) as e:
            log.warning("page decoder: %s", e)
            return None
        if cfg is not None:
            cfg["seq"] = t.seq
        return cfg

    # -- images -----------------------------------------------------------------------------------------
    def open_index(self, sid: str, index: int) -> View:
        total, _ = self.counts(fresh=True)
        if not total:
            return self.view(sid, "The project has no images yet: upload some.")
        index = int(index) % total
        rec = self.store.image_at(self.project, index)
        if rec is None:  # images removed meanwhile
            return self.view(sid, f"There is no image {index + 1} any more.")
        t = self.tab(sid)
        note = ""
        if t.user:  # sign-in on: the image is this user's until accepted, left, or idle for lock_minutes
            index, rec, note = self._claim(t, index, total, rec)
            if rec is None:
                return self.view(sid, note)
        s = self._session(sid)
        try:
            loaded = load_image(rec.path)
        except IsegError as e:
            return self.view(sid, f"Cannot open {md(rec.file_name)}: {md(e, None)}")
        if loaded.rgb.shape[:2] != (rec.height, rec.width):
            return self.view(sid, f"{md(rec.file_name)} is {rec.width}x{rec.height}, larger than this app's pixel limit; "
                                  "annotate a downscaled copy.")
        stored = [FinishedObject(a.mask(), a.category.name, a.interactions or [], a.seconds, a.id)
                  for a in self.store.annotations(rec.id)]
        t0 = time.perf_counter()
        frame = DisplayFrame.fit(loaded.rgb.shape[:2], t.display_long)
        with s.lock:
            t.display = display_copy(loaded.rgb, frame)
            s.open_image(loaded.rgb, rec.sha256, rec.id, stored, display=frame)
            t.index, t.record = index, rec
            t.pending, t.pending_kind = [], ""
            t.proposals, t.proposal_previews, t.refining = self.store.proposals(rec.id), {}, None
        enc = time.perf_counter() - t0
        self._precompute_next(sid, index, total)
        msg = f"Opened in {enc:.1f} s. Click on an object." if enc > 0.5 else "Click on an object."
        if s.predictor.source == "store":  # encoded beforehand (python -m iseg_core.precompute)
            msg = f"Embedding from the store ({enc:.1f} s). Click on an object."
        return self.view(sid, (note + " " if note else "") + msg)

    # -- team work: locks and review ----------------------------------------------------------------------
    def _claim(self, t: TabState, index: int, total: int, rec: ImageRecord):
        """Lock ``rec`` for the tab's user, else the next free image not yet done (a bounded search). Returns
        (position, record or None, a note for the user); the tab's previous image is released on success."""
        holder = self.store.lock_image(rec.id, t.user, self.lock_seconds)
        note = ""
        if holder is not None:
            for _ in range(5):  # someone else may lock the candidate between the query and our lock
                found = self.store.next_free_image(self.project, t.user, self.lock_seconds, (index + 1) % total)
                if found is None or self.store.lock_image(found[1].id, t.user, self.lock_seconds) is None:
                    break
            else:
                found = None
            if found is None:
                return index, None, f"{md(rec.file_name)} is being annotated by {md(holder)}, and no other image is free."
            note = f"{md(rec.file_name)} is being annotated by {md(holder)}; opened the next free image."
            index, rec = found
        if t.image_id is not None and t.image_id != rec.id:
            self._release(t)
        t.lock_refreshed = time.monotonic()
        return index, rec, note

    def _release(self, t: TabState) -> None:
        try:
            self.store.release_image(t.image_id, t.user)
        except StorageError as e:  # it expires on its own
            log.warning("could not release the lock on image %s: %s", t.image_id, e)

    def _renew_lock(self, t: TabState) -> None:
        """Keep the open image locked while its user works (at most one write a minute)."""
        if t.image_id is None or time.monotonic() - t.lock_refreshed < 60:
            return
        t.lock_refreshed = time.monotonic()
        holder = self.store.lock_image(t.image_id, t.user, self.lock_seconds)
        if holder is not None:
            t.message = f"**{md(holder)} has taken this image** (you were idle for over {self.lock_seconds / 60:g} min)."

    def review(self, sid: str, approve: bool, comment: str = "") -> View:
        """A reviewer approves the open (accepted) image or sends it back to the annotators with a comment."""
        t = self.tab(sid)
        if not self.is_reviewer(sid):
            return self.view(sid, "Only a signed-in reviewer can approve or send back images.")
        if t.image_id is None:
            return self.view(sid, "Open an image first.")
        try:
            t.record = self.store.review_image(t.image_id, t.user, bool(approve), comment)
        except StorageError as e:
            return self.view(sid, f"**Not reviewed:** {md(e, None)}")
        self.counts(fresh=True)
        what = "Approved" if approve else "Sent back"
        return self.view(sid, f"{what} {md(t.record.file_name)}" + (f": {md(t.record.review_comment)}" if not approve else "."))

    def _precompute_next(self, sid: str, index: int, total: int) -> None:
        if total < 2:
            return
        nxt = self.store.image_at(self.project, (index + 1) % total)
        mgr = self.manager(self.tab(sid).model)
        if nxt is None or mgr.is_encoded(nxt.sha256):
            return
        try:
            rgb = load_image(nxt.path).rgb
        except IsegError as e:  # the user gets the same message when opening it
            log.warning("not pre-encoding %s: %s", nxt.file_name, e)
            return
        mgr.precompute(rgb, nxt.sha256)

    def next_image(self, sid: str, step: int = 1) -> View:
        return self.open_index(sid, self.tab(sid).index + step)

    def import_paths(self, sid: str, paths: Sequence[str]) -> View:
        """Image files named by path (the API's ``add_images``): each must resolve (symlinks and ``..`` followed)
        into a folder the operator named with ``--import-dir``; anything else gets one message, whether or not
        it exists. A folder inside one adds its image files."""
        files, problems = [], []
        if not isinstance(paths, (list, tuple)):
            return self.view(sid, "**Not added:** give a list of file paths.")
        for p in paths:
            target = allowed_path(p, self.import_dirs) if isinstance(p, str) else None
            if target is None:
                problems.append(f"{p}: not allowed (the API imports files only from the folders the operator "
                                "named with --import-dir; upload files instead)")
            elif target.is_dir():
                files += sorted(str(f) for f in target.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES
                                and allowed_path(str(f), self.import_dirs))
            elif not target.is_file():
                problems.append(f"{p}: no such file in the import folders")
            else:
                files.append(str(target))
        return self.upload(sid, files, problems)

    def upload(self, sid: str, paths: Sequence[str], problems: Optional[List[str]] = None) -> View:
        """Files the page (or an API client) uploaded through Gradio: added to the project, each up to the size
        limit."""
        added, problems, first_new = 0, list(problems or []), None
        for p in paths or []:
            try:
                size = os.path.getsize(p)
            except OSError as e:
                problems.append(f"{Path(p).name}: cannot read it ({e.strerror or e})")
                continue
            if size > self.max_upload_bytes:
                problems.append(f"{Path(p).name} is {size / 2**20:.1f} MB, over the {self.max_upload_bytes / 2**20:.0f} "
                                "MB limit of one image file; nothing was added for it")
                continue
            try:
                rec = self.store.add_image(self.project, p, file_name=Path(p).name)
                added += rec.added
                if first_new is None:
                    first_new = rec.id
            except StorageError as e:
                problems.append(str(e))
        msg = f"Added {added} image(s)." + ("".join(f"\n\n**Skipped:** {md(p, None)}" for p in problems))
        if first_new is not None:
            self.open_index(sid, self.store.position_of(self.project, first_new))
        return self.view(sid, msg)

    # -- prompts ----------------------------------------------------------------------------------------
    def _add(self, sid: str, prompt, decode: bool = True) -> View:
        """Add a prompt to the tab's object. ``decode=False``: the page's decoder drew it, so the server keeps
        the prompt and decodes it only when the mask is needed (finish, a brush stroke, ZoomIn...)."""
        s = self._session(sid)
        if s.image is None:
            return self.view(sid, "Open an image first.")
        t0 = time.perf_counter()
        try:
            with s.lock:
                step = s.add(prompt, decode=decode)
        except IsegError as e:
            return self.view(sid, f"**Not added:** {md(e, None)}")
        ms = (time.perf_counter() - t0) * 1e3
        if step.deferred:
            return self.view(sid, f"{len(s.steps)} prompt(s) · decoded in the page")
        return self.view(sid, f"{len(s.steps)} prompt(s) · mask {int(step.mask.sum())} px · {ms:.0f} ms on the server")

    def add_click(self, sid: str, x: float, y: float, positive: bool = True, decode: bool = True) -> View:
        return self._add(sid, Click(float(x), float(y), bool(positive)), decode)

    def add_box(self, sid: str, x0: float, y0: float, x1: float, y1: float, decode: bool = True) -> View:
        x0, x1 = sorted((float(x0), float(x1)))
        y0, y1 = sorted((float(y0), float(y1)))
        return self._add(sid, Box(x0, y0, x1, y1), decode)

    def add_scribble(self, sid: str, points: Sequence[Sequence[float]], positive: bool = True,
                     decode: bool = True) -> View:
        try:
            prompt = Scribble([(float(x), float(y)) for x, y in points], bool(positive))
        except (TypeError, ValueError, IsegError) as e:
            return self.view(sid, f"**Not added:** a scribble needs a list of [x, y] points ({e})")
        return self._add(sid, prompt, decode)

    def add_contour(self, sid: str, points: Sequence[Sequence[float]]) -> View:
        try:
            prompt = Contour([(float(x), float(y)) for x, y in points])
        except (TypeError, ValueError, IsegError) as e:
            return self.view(sid, f"**Not added:** a contour needs a list of [x, y] points ({e})")
        return self._add(sid, prompt)

    def add_stroke(self, sid: str, points: Sequence[Sequence[float]], radius: float, erase: bool = False) -> View:
        """A brush (or eraser) stroke in image pixels: pixels within ``radius`` of the path are forced into (out
        of) the current object, whatever the model answers now or after later prompts."""
        try:
            stroke = Stroke([(float(x), float(y)) for x, y in points], float(radius), bool(erase))
        except (TypeError, ValueError, IsegError) as e:
            return self.view(sid, f"**Not painted:** a stroke needs [x, y] points and a radius ({e})")
        s = self._session(sid)
        if s.image is None:
            return self.view(sid, "Open an image first.")
        with s.lock:
            s.add(stroke)
            area = int(s.mask.sum())
        what = "Erased" if stroke.erase else "Painted"
        return self.view(sid, f"{len(s.steps)} prompt(s) · {what} a {stroke.radius:.0f} px stroke · mask {area} px")

    def _to_image(self, sid: str, x: float, y: float) -> Tuple[float, float]:
        """Display pixels of the tab's image -> image pixels."""
        frame = self._session(sid).display
        return frame.to_image(float(x), float(y)) if frame is not None else (float(x), float(y))

    def image_click(self, sid: str, mode: str, x: float, y: float, negative: bool = False,
                    decode: bool = True) -> View:
        """A click on the displayed image (display pixels), interpreted by the tool ``mode`` (``decode=False``:
        a positive / negative click the page's decoder drew)."""
        t = self.tab(sid)
        ox, oy = self._to_image(sid, x, y)
        if mode == "box":
            if t.pending_kind != "box":
                t.pending, t.pending_kind = [(ox, oy)], "box"
                return self.view(sid, "Box: now click the opposite corner.")
            (x0, y0), t.pending, t.pending_kind = t.pending[0], [], ""
            return self.add_box(sid, x0, y0, ox, oy)
        if mode in ("contour", "scribble"):
            if t.pending_kind != mode:
                # a scribble's polarity is set by its first point (Shift = negative)
                t.pending, t.pending_kind, t.pending_positive = [], mode, not negative
            t.pending.append((ox, oy))
            what = "Contour" if mode == "contour" else ("Scribble" if t.pending_positive else "Negative scribble")
            return self.view(sid, f"{what}: {len(t.pending)} point(s); press Enter or 'Close shape' to finish.")
        t.pending, t.pending_kind = [], ""
        return self.add_click(sid, ox, oy, positive=(mode != "negative") != bool(negative), decode=decode)

    def gesture(self, sid: str, mode: str, g: dict) -> View:
        """A pointer gesture on the canvas (display pixels): ``{"kind": "click", "point", "negative"}``,
        ``{"kind": "box", "box": [x0, y0, x1, y1]}`` or ``{"kind": "scribble", "points", "negative"}``; the page
        numbers them (``seq``) and says which ones its decoder drew (``page``: kept here, decoded when needed).
        ``{"kind": "settle"}``: the page's decoder stopped; decode what it drew and draw it here from now on."""
        t = self.tab(sid)
        try:
            if g.get("seq") is not None:
                t.seq = int(g["seq"])
            decode = not g.get("page")
            kind = g.get("kind")
            if kind == "settle":
                s = self._session(sid)
                with s.lock:
                    n = s.settle()
                return self.view(sid, f"The page's decoder stopped; decoded {n} prompt(s) on the server.")
            if kind == "box":
                bx0, by0, bx1, by1 = g["box"]
                (x0, y0), (x1, y1) = self._to_image(sid, bx0, by0), self._to_image(sid, bx1, by1)
                t.pending, t.pending_kind = [], ""
                return self.add_box(sid, x0, y0, x1, y1, decode=decode)
            if kind == "stroke":  # brush / eraser: radius in display pixels
                pts = [self._to_image(sid, x, y) for x, y in g["points"]]
                frame = self._session(sid).display
                scale = (sum(frame.scale_xy) / 2) if frame is not None else 1.0
                t.pending, t.pending_kind = [], ""
                return self.add_stroke(sid, pts, float(g["radius"]) / scale, bool(g.get("erase")))
            if kind == "scribble":
                pts = [self._to_image(sid, x, y) for x, y in g["points"]]
                t.pending, t.pending_kind = [], ""
                return self.add_scribble(sid, pts, not g.get("negative"), decode=decode)
            x, y = (float(v) for v in g["point"])
            return self.image_click(sid, mode, x, y, negative=bool(g.get("negative")), decode=decode)
        except (KeyError, TypeError, ValueError) as e:
            return self.view(sid, f"**Not understood:** {e}")

    def close_contour(self, sid: str) -> View:
        """End the shape being clicked: a contour (>= 3 points) or a scribble (>= 2 points)."""
        t = self.tab(sid)
        kind, pts, t.pending, t.pending_kind = t.pending_kind, list(t.pending), [], ""
        if kind == "scribble":
            if len(pts) < 2:
                return self.view(sid, "A scribble needs at least 2 points.")
            return self.add_scribble(sid, pts, t.pending_positive)
        if len(pts) < 3:
            return self.view(sid, "A contour needs at least 3 points.")
        return self.add_contour(sid, pts)

    def undo(self, sid: str) -> View:
        t = self.tab(sid)
        if t.pending:
            t.pending.pop()
            if not t.pending:
                t.pending_kind = ""
            return self.view(sid, "Removed the last point.")
        s = self._session(sid)
        with s.lock:
            ok = s.undo()
        return self.view(sid, "Undone." if ok else "Nothing to undo.")

    def redo(self, sid: str) -> View:
        s = self._session(sid)
        with s.lock:
            ok = s.redo()
        return self.view(sid, "Redone." if ok else "Nothing to redo.")

    def clear(self, sid: str) -> View:
        t = self.tab(sid)
        t.pending, t.pending_kind = [], ""
        s = self._session(sid)
        with s.lock:
            s.clear()
        if t.refining is not None and t.image_id is not None:  # the proposal it came from is offered again
            t.proposals, t.proposal_previews, t.refining = self.store.proposals(t.image_id), {}, None
        return self.view(sid, "Cleared the current object.")

    # -- objects and saving -----------------------------------------------------------------------------
    def _model_version(self, sid: str) -> Tuple[str, str]:
        model = self.manager(self.tab(sid).model).model
        return model.name, getattr(model, "version", "unknown")

    def finish_object(self, sid: str, category: str = "object") -> View:
        """Close the current object and save it (one transaction) before saying so."""
        s = self._session(sid)
        with s.lock:
            try:
                obj = s.finish_object(category or "object")
            except IsegError as e:
                return self.view(sid, str(e))
            try:
                rec = self.store.save_annotation(s.image_ref, obj.mask, obj.category, author=self._author(sid),
                                                 model=self._model_version(sid), interactions=obj.prompts,
                                                 seconds=obj.seconds, replace_id=obj.stored_id)
            except StorageError as e:
                return self.view(sid, f"**Not saved** (the object is kept here, try again): {md(e, None)}")
            obj.stored_id = rec.id
            n = len(s.objects)
        t = self.tab(sid)
        if t.refining is not None:  # the proposal it started from is done with
            self.store.set_proposal_state(t.refining, "refined")
            t.refining = None
        self.labels(fresh=True)  # a new name is a new label
        return self.view(sid, f"Saved object {n} ({md(obj.category)}).")

    # -- proposed objects (segment-everything) ------------------------------------------------------------
    def propose(self, sid: str, config=None, progress: Optional[Callable[[int, int], None]] = None) -> View:
        """Propose the open image's objects with the tab's model (SAM's automatic mask generator rules,
        iseg_core.everything); they replace the image's open proposals and are drawn outlined and numbered."""
        from iseg_core.everything import EverythingConfig, segment_everything

        t, s = self.tab(sid), self._session(sid)
        if t.image_id is None:
            return self.view(sid, "Open an image first.")
        env = os.environ.get
        cfg = config or EverythingConfig(points_per_side=int(env("ISEG_PROPOSE_POINTS", "16")),
                                         pred_iou_thresh=float(env("ISEG_PROPOSE_IOU", "0.88")),
                                         stability_score_thresh=float(env("ISEG_PROPOSE_STABILITY", "0.95")),
                                         box_nms_thresh=float(env("ISEG_PROPOSE_NMS", "0.7")))
        t0 = time.perf_counter()
        with s.lock:
            if s.zoom is not None:
                s.zoom_out()
            model = s.predictor.model
            try:
                found = segment_everything(model, s.predictor._current(), cfg, progress)
            except IsegError as e:
                return self.view(sid, f"**No proposals:** {md(e, None)}")
        try:
            t.proposals = self.store.replace_proposals(t.image_id, [{"mask": p.mask, "score": p.score,
                                                                     "stability": p.stability} for p in found],
                                                       model.cache_key)
        except StorageError as e:
            return self.view(sid, f"**Proposals not saved:** {md(e, None)}")
        t.proposal_previews = {}
        if not t.proposals:
            return self.view(sid, f"No object passed the filters ({cfg.points_per_side}x{cfg.points_per_side} "
                                  f"clicks, predicted IoU >= {cfg.pred_iou_thresh}, stability >= "
                                  f"{cfg.stability_score_thresh}).")
        return self.view(sid, f"{len(t.proposals)} proposed object(s) in {time.perf_counter() - t0:.1f} s, "
                              "outlined and numbered: accept one (P accepts number 1), refine it with clicks, or "
                              "reject it.")

    def _proposal(self, sid: str, number: int):
        t = self.tab(sid)
        k = int(number) - 1
        if not 0 <= k < len(t.proposals):
            raise IsegError(f"no proposal {int(number)}; this image has {len(t.proposals)}")
        return t, t.proposals[k]

    def accept_proposal(self, sid: str, number: int = 1, category: str = "object") -> View:
        """Proposal ``number`` becomes a finished object with label ``category`` (saved; accepted work now)."""
        try:
            t, p = self._proposal(sid, number)
        except IsegError as e:
            return self.view(sid, str(e))
        s = self._session(sid)
        mask = p.mask()
        with s.lock:
            try:
                rec = self.store.save_annotation(t.image_id, mask, category or "object", author=self._author(sid),
                                                 model=tuple(p.model.split("@", 1)) if "@" in p.model else None)
                self.store.set_proposal_state(p.id, "accepted")
            except StorageError as e:
                return self.view(sid, f"**Not saved:** {md(e, None)}")
            s.objects.append(FinishedObject(mask, rec.category.name, [], 0.0, rec.id))
            t.proposals.remove(p)
        self.labels(fresh=True)
        return self.view(sid, f"Accepted proposal {int(number)} as object {len(s.objects)} ({md(rec.category.name)}).")

    def reject_proposal(self, sid: str, number: int) -> View:
        try:
            t, p = self._proposal(sid, number)
            self.store.set_proposal_state(p.id, "rejected")
        except (IsegError, StorageError) as e:
            return self.view(sid, md(e, None))
        t.proposals.remove(p)
        return self.view(sid, f"Rejected proposal {int(number)}; {len(t.proposals)} left.")

    def refine_proposal(self, sid: str, number: int) -> View:
        """Proposal ``number`` becomes the current object: shown at once, and its mask is the previous-mask
        input of the next click (clicks correct it instead of starting over); finishing it saves the object."""
        try:
            t, p = self._proposal(sid, number)
        except IsegError as e:
            return self.view(sid, str(e))
        s = self._session(sid)
        with s.lock:
            model = s.predictor.model
            mask = p.mask()
            logits = (model.logits_from_mask(s.predictor._current(), mask) if hasattr(model, "logits_from_mask")
                      else None)
            s.start_from(mask, logits)
            t.proposals.remove(p)
            t.refining = p.id
        return self.view(sid, f"Refining proposal {int(number)}: click to correct it, then finish the object.")

    def label_key(self, sid: str, key: int) -> View:
        """Key 1-9: finish the object being drawn as the label with that key. With no object in progress it
        says so and changes nothing."""
        label = next((c for c in self.labels(fresh=True) if c.key == int(key)), None)
        if label is None:
            return self.view(sid, f"No label has key {int(key)}; give one that key under Labels.")
        s = self._session(sid)
        with s.lock:
            drawing = s.mask is not None and s.mask.any()
        if not drawing:
            return self.view(sid, f"No object to label '{md(label.name)}': draw one first (click on it), then press "
                                  f"{int(key)}.")
        return self.finish_object(sid, label.name)

    def set_object_label(self, sid: str, number: int, name: str) -> View:
        """Give finished object ``number`` (1-based) another label; a saved object is changed in the store."""
        name = (name or "").strip()
        if not name:
            return self.view(sid, "Pick a label first.")
        s = self._session(sid)
        with s.lock:
            k = int(number) - 1
            if not 0 <= k < len(s.objects):
                return self.view(sid, f"No object {int(number)}; this image has {len(s.objects)}.")
            obj = s.objects[k]
            if obj.stored_id is not None:
                try:
                    self.store.set_annotation_category(obj.stored_id, name)
                except StorageError as e:
                    return self.view(sid, f"**Not changed:** {md(e, None)}")
            old, obj.category = obj.category, name
        self.labels(fresh=True)
        return self.view(sid, f"Object {int(number)}: {md(old)} -> {md(name)}.")

    def set_label(self, sid: str, name: str, color: Optional[str] = None, key: Optional[int] = None,
                  rename: Optional[str] = None) -> View:
        """Add a label to the project's label set, or change its colour, key (0 = none) or name."""
        try:
            rec = self.store.set_label(self.project, name or "", color or None, key, rename or None)
        except StorageError as e:
            return self.view(sid, f"**Label not saved:** {md(e, None)}")
        self.labels(fresh=True)
        s = self._session(sid)
        if rename and rename.strip() != name.strip():
            with s.lock:  # objects on screen follow the new name
                for o in s.objects:
                    if o.category == name.strip():
                        o.category = rec.name
        key_text = f"key {rec.key}" if rec.key else "no key"
        return self.view(sid, f"Label '{md(rec.name)}': {rec.color}, {key_text}.")

    def delete_object(self, sid: str, number: int) -> View:
        s = self._session(sid)
        with s.lock:
            try:
                obj = s.delete_object(int(number) - 1)
            except IsegError as e:
                return self.view(sid, str(e))
            if obj.stored_id is not None:
                try:
                    self.store.delete_annotation(obj.stored_id)
                except StorageError as e:
                    s.objects.insert(int(number) - 1, obj)
                    return self.view(sid, f"**Not deleted:** {md(e, None)}")
        return self.view(sid, f"Deleted object {number}.")

    def edit_object(self, sid: str, number: int) -> View:
        s = self._session(sid)
        with s.lock:
            try:
                s.edit_object(int(number) - 1)
            except IsegError as e:
                return self.view(sid, str(e))
        return self.view(sid, f"Editing object {number}: add prompts, then finish it again.")

    def accept_image(self, sid: str, category: str = "object") -> View:
        """Save the object in progress (if any) and every unsaved one, mark the image done, in one
        transaction; then open the next image."""
        s = self._session(sid)
        t = self.tab(sid)
        with s.lock:
            if s.image_ref is None:
                return self.view(sid, "Open an image first.")
            if s.mask is not None and s.mask.any():
                s.finish_object(category or "object")
            unsaved = [o for o in s.objects if o.stored_id is None]
            version = self._model_version(sid)
            try:
                recs = self.store.save_annotations(s.image_ref, [
                    dict(mask=o.mask, category=o.category, author=self._author(sid), model=version,
                         interactions=o.prompts, seconds=o.seconds) for o in unsaved], done=True)
            except StorageError as e:
                return self.view(sid, f"**Not saved** (nothing was lost here, try again): {md(e, None)}")
            for o, r in zip(unsaved, recs):
                o.stored_id = r.id
            n = len(s.objects)
        index = t.index
        t.record = self.store.image(t.image_id)
        if t.user:
            self._release(t)  # accepted: free for the reviewer
        if self.counts(fresh=True)[0] > 1:
            self.open_index(sid, index + 1)
        return self.view(sid, f"Saved image {index + 1} with {n} object(s).")

    def export(self, sid: str, polygons: bool = False, fmt: Optional[str] = None,
               progress: Optional[Callable[[int, int], None]] = None) -> Tuple[View, Optional[str]]:
        """Export the project as ``fmt`` (``storage.exports.FORMATS``; default COCO, RLE or ``polygons``) to one
        file under the export folder: a .json for COCO, a .zip for the others."""
        fmt = fmt or ("coco-polygons" if polygons else "coco")
        if fmt not in FORMATS:
            return self.view(sid, f"Unknown export format {fmt!r}; one of {', '.join(FORMATS)}."), None
        stamp = time.strftime('%Y%m%d-%H%M%S')
        suffix = ".json" if fmt.startswith("coco") else ".zip"
        # a random part: two people exporting in the same second get two files
        path = self.export_dir / f"{safe_name(self.project.name) or 'project'}-{stamp}-{secrets.token_hex(4)}-{fmt}{suffix}"
        try:
            path, warnings = export(self.store, self.project, fmt, path, progress)
        except StorageError as e:
            return self.view(sid, f"**Export failed:** {md(e, None)}"), None
        n = self.store.stats(self.project).annotations
        warn = "".join(f"\n\n{w}" for w in warnings[:5])
        more = f"\n\n... and {len(warnings) - 5} more warning(s)" if len(warnings) > 5 else ""
        return self.view(sid, f"Exported {n} annotation(s) as {FORMATS[fmt]} to `{path}`.{warn}{more}"), str(path)

    def import_coco(self, sid: str, path: str, on_clash: str = "map",
                    progress: Optional[Callable[[int, int], None]] = None) -> View:
        """COCO pre-annotations of this project's images (matched by file name): all of them arrive as
        finished, editable objects, or (a bad file, or label clashes with ``on_clash="refuse"``) none."""
        try:
            r = import_coco(self.store, self.project, path, author=self._author(sid), on_clash=on_clash, progress=progress)
        except StorageError as e:
            return self.view(sid, f"**Not imported:** {md(e, None)}")
        self.labels(fresh=True)
        self.counts(fresh=True)
        t = self.tab(sid)
        if t.index >= 0:  # the open image may have received objects
            self.open_index(sid, t.index)
        notes = "".join(f"\n\n{n}" for n in r.notes[:5])
        return self.view(sid, f"Imported {r.annotations_added} object(s) on {r.images_existing} image(s) "
                              f"({r.annotations_existing} were already here); {r.categories_added} new label(s)."
                              + notes)

    # -- the image browser ------------------------------------------------------------------------------
    def browse(self, state: str = "all", name: str = "", page: int = 1, per_page: int = 48,
               ready_for: Optional[str] = None) -> BrowsePage:
        """One page (1-based) of the project's images, filtered by state and file name, and with ``ready_for``
        (a model name) to the images whose embedding for that model is in the store."""
        if state not in IMAGE_STATES:
            state = None
        ready = None
        if ready_for:
            key = self.manager(ready_for).model.cache_key
            ready = (key, self.embedding_store.url if self.embedding_store is not None else "")
        return self.store.browse(self.project, state, name or "", (max(1, int(page)) - 1) * per_page, per_page,
                                 ready=ready)

    # -- a project prepared before anyone clicks: its embeddings precomputed into the store -------------------
    def attach_store(self, embeddings) -> None:
        """Put ``embeddings`` (an EmbeddingStore) behind every model's cache; what it writes is noted in the
        database (a project knows which images are ready for which model)."""
        embeddings.on_put = lambda key, cache_key: self.store.record_embedding(key, cache_key, embeddings.url)
        self.embedding_store = embeddings
        with self._lock:
            managers = list(self._managers.values())
        for mgr in managers:
            mgr.cache.store = embeddings

    def start_prepare(self, sid: str) -> View:
        """Encode every image of the project that the store lacks for the tab's model, in the background
        (the store: the app's, else ``$ISEG_HOME/embeddings``, made now)."""
        from iseg_core.embedding_store import EmbeddingStore
        from iseg_core.precompute import precompute

        if self.prepare_running:
            return self.view(sid, "The project is being prepared already.")
        t = self.tab(sid)
        model = self.manager(t.model).model
        try:
            if self.embedding_store is None:
                self.attach_store(EmbeddingStore(self.export_dir.parent / "embeddings"))
        except IsegError as e:
            return self.view(sid, f"**Cannot prepare:** {md(e, None)}")
        state = self._prepare = {"model": t.model, "counts": None, "started": time.monotonic(), "done": False,
                                 "error": "", "stop": False}

        def report(counts):
            state["counts"] = dict(counts)

        def run():
            try:
                precompute(self.store, self.project.name, model, self.embedding_store, progress=False,
                           stop=lambda: state["stop"], report=report)
            except Exception as e:  # shown in the status; the app goes on
                state["error"] = str(e)
                logging.getLogger(__name__).warning("preparing the project failed: %s", e, exc_info=True)
            finally:
                state["done"] = True

        threading.Thread(target=run, name="iseg-prepare", daemon=True).start()
        return self.view(sid, f"Preparing the project for {t.model} in the background: every image's embedding "
                              f"into {self.embedding_store.url}; keep annotating.")

    @property
    def prepare_running(self) -> bool:
        return self._prepare is not None and not self._prepare["done"]

    def prepare_status(self) -> str:
        """One line: images done / total, rate, time left (or how it ended), and how many are ready."""
        st = self._prepare
        if st is None:
            return "Prepare the project: every image encoded once for the model in use, before anyone opens it."
        c = st["counts"] or {"encoded": 0, "stored": 0, "failed": 0, "total": 0}
        done, total = c["encoded"] + c["stored"] + c["failed"], c["total"]
        rate = c["encoded"] / max(time.monotonic() - st["started"], 1e-6)
        line = f"{st['model']}: {done} / {total} images ({c['encoded']} encoded, {c['stored']} already stored"
        line += f", {c['failed']} failed)" if c["failed"] else ")"
        if st["error"]:
            return f"**Preparing failed:** {md(st['error'], None)} ({line})"
        if st["done"]:
            return f"**Project prepared.** {line}."
        left = (total - done) / rate if rate > 0 else None
        return line + (f", {rate:.2f} images/s, about {left:.0f} s left" if left is not None else "") + "."

    def thumbnail(self, image: ImageRecord) -> Optional[str]:
        try:
            return str(self.store.thumbnail(image))
        except StorageError as e:
            log.warning("%s", e)
            return None

    # -- settings ---------------------------------------------------------------------------------------
    def set_options(self, sid: str, opacity: float, contours: bool) -> View:
        t = self.tab(sid)
        t.options = ViewOptions(float(opacity), bool(contours))
        return self.view(sid)

    def zoom(self, sid: str, zoom_in: bool = True) -> View:
        """ZoomIn for small objects: the model works on a crop around the current object (re-encoded: a few
        seconds with SAM on a CPU), prompts are replayed there; a click outside the crop zooms back out."""
        s = self._session(sid)
        with s.lock:
            if s.image is None:
                return self.view(sid, "Open an image first.")
            try:
                if zoom_in:
                    x0, y0, x1, y1 = s.zoom_in()
                    msg = f"Zoomed in on {x1 - x0}x{y1 - y0} px around the object; a click outside zooms out."
                else:
                    s.zoom_out()
                    msg = "Zoomed out."
            except IsegError as e:
                return self.view(sid, str(e))
        return self.view(sid, msg)

    def set_threshold(self, sid: str, probability: float) -> View:
        """The mask threshold of the tab's current object, as a probability (the model's logit threshold is
        its logit): every step is re-thresholded, nothing decoded again."""
        try:
            logit = probability_to_logit(probability)
        except (TypeError, ValueError):
            return self.view(sid, f"The mask threshold is a probability between 0 and 1, not {probability!r}.")
        s = self._session(sid)
        with s.lock:
            if s.image is not None:
                s.set_threshold(logit)
            else:
                s.threshold = logit
        return self.view(sid, f"Mask threshold: probability {float(probability):.2f} (logit {logit:+.2f}).")

    def threshold_probability(self, sid: str) -> float:
        """The tab's mask threshold as a probability: the model family's default (RITM's lineage 0.49, SAM's
        0.5) until someone moves the slider."""
        s = self._session(sid)
        with s.lock:
            return round(logit_to_probability(s.effective_threshold), 4)

    def set_screen(self, sid: str, pixels) -> None:
        """The page's canvas spans ``pixels`` device pixels along its long side: images opened from now on are
        shown from a copy that large (1024 to 2048 px, in steps of 256; a 12 MP photo still costs a click what
        a 2 MP one does)."""
        try:
            px = int(pixels or 0)
        except (TypeError, ValueError):
            return
        if px > 0:
            self.tab(sid).display_long = max(DISPLAY_LONG_SIDE, min(MAX_DISPLAY_LONG_SIDE, -(-px // 256) * 256))

    def is_reviewer(self, sid: str) -> bool:
        t = self.tab(sid)
        return bool(t.user) and self.roles is not None and self.roles(t.user) == "reviewer"

    def set_model(self, sid: str, name: str, progress: Optional[Callable[[int, Optional[int]], None]] = None) -> View:
        """Switch the tab to model ``name``, loading it first (a download of its weights reports to ``progress``
        as ``(done_bytes, total_bytes)``; the file is only renamed into place when whole)."""
        t = self.tab(sid)
        if name == t.model:
            return self.view(sid)
        if name not in list_models():
            return self.view(sid, f"Unknown model '{md(name)}'; known: {', '.join(list_models())}")
        try:
            with reporting_progress(progress) if progress is not None else nullcontext():
                self.manager(name)
        except IsegError as e:
            return self.view(sid, f"**{md(name)} is not available:** {md(e, None)} Still using {t.model}.")
        t.model = name
        if t.index >= 0:
            return self.open_index(sid, t.index)
        return self.view(sid, f"Model: {name}.")

    # -- fine-tuning ------------------------------------------------------------------------------------
    def start_finetune(self, sid: str, labels: str = "given") -> View:
        """Fine-tune the tab's model on the project's accepted annotations in the background (``labels="proposals"``:
        pre-train it on pseudo-objects of the images not accepted yet, MIS's way); the result is swapped in (for
        every user of that model) only when it is better on held-out accepted objects."""
        from training.finetune import FinetuneConfig
        from training.job import FinetuneJob

        t = self.tab(sid)
        if self.finetune_running:
            return self.view(sid, "A training job is already running. " + self._job.describe())
        mgr = self.manager(t.model)
        env, d = os.environ.get, FinetuneConfig()
        config = FinetuneConfig(steps=int(env("ISEG_FINETUNE_STEPS", d.steps)),
                                batch_size=int(env("ISEG_FINETUNE_BATCH", d.batch_size)),
                                mode="auto", lr=float(env("ISEG_FINETUNE_LR", d.lr)), save_every=0)
        what = "Pre-train" if labels == "proposals" else "Fine-tune"
        try:
            job = FinetuneJob(self.store, self.project, mgr.model, self.models_dir, config,
                              on_better=lambda model, ckpt, name=t.model: self._swap(name, model, ckpt),
                              embedding_source=mgr.cached_embedding,
                              max_clicks=int(env("ISEG_FINETUNE_EVAL_CLICKS", "10")), author=self._author(sid),
                              labels=labels)
        except IsegError as e:
            return self.view(sid, f"**Cannot {what.lower()}:** {md(e, None)}")
        self._job = job.start()
        source = ("pseudo-objects of the images not accepted yet" if labels == "proposals"
                  else "the accepted annotations")
        doing = "Pre-training" if labels == "proposals" else "Fine-tuning"
        return self.view(sid, f"{doing} {t.model} on {source} in the background "
                              f"({config.steps} steps); keep annotating.")

    def start_pretrain(self, sid: str) -> View:
        return self.start_finetune(sid, labels="proposals")

    def cancel_finetune(self, sid: str) -> View:
        if not self.finetune_running:
            return self.view(sid, "No fine-tuning job is running.")
        self._job.cancel()
        return self.view(sid, "Cancelling the fine-tuning job (it stops after the current step; the model in use "
                              "is unchanged).")

    def finetune_status(self) -> str:
        job = self._job
        if job is not None:
            return job.describe()
        return ("Nothing has been trained yet. Every model but the classical engine can learn (pre-training also "
                "needs DINO's weights in the weights folder).")

    @property
    def finetune_running(self) -> bool:
        return self._job is not None and self._job.state.running

    def _swap(self, name: str, model, checkpoint: str) -> None:
        self.manager(name).swap_model(model)
        self.models_dir.mkdir(parents=True, exist_ok=True)  # the next start of the app loads it (model_loader)
        (self.models_dir / f"{name}.active").write_text(checkpoint + "\n")

    active_checkpoint = staticmethod(active_checkpoint)
