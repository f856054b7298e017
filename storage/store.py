"""The repository the app, the CLI and training use: projects, categories, images, annotations, model versions.

Every method opens its own transaction and returns plain records (no ORM objects escape), so a caller never
holds a session. A save is committed to disk before the method returns.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np
from sqlalchemy import case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .database import Database, data_home
from .errors import StorageError
from .images import ImageStore
from .masks import decode_mask, encode_mask
from . import models as m
from .models import utcnow


CONFLICT_ATTEMPTS = 3
T = TypeVar("T")
# colours given to new labels in turn (a user picks another with the label editor)
LABEL_COLOURS = ["#e6194b", "#3cb44b", "#ffe119", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#fabebe",
                 "#008080", "#e6beff", "#9a6324"]
IMAGE_STATES = ("to do", "in progress", "done")


def _retry_conflicts(attempt: Callable[[], T], what: str) -> T:
    """Run a find-or-create transaction. A unique-constraint conflict means another writer created the same row
    between our read and our insert; the next attempt finds it. Bounded: a conflict that keeps coming back is
    not a race, and is reported (nothing was written)."""
    for _ in range(CONFLICT_ATTEMPTS - 1):
        try:
            return attempt()
        except IntegrityError:
            continue
    try:
        return attempt()
    except IntegrityError as e:
        detail = str(e.orig).strip().splitlines()[0] if e.orig is not None else type(e).__name__
        raise StorageError(f"could not save {what}: the database refused it {CONFLICT_ATTEMPTS} times as a "
                           f"duplicate ({detail}); nothing was saved") from None


@dataclass(frozen=True)
class ProjectRecord:
    id: int
    name: str


@dataclass(frozen=True)
class CategoryRecord:
    id: int
    coco_id: int
    name: str
    supercategory: str = ""
    color: str = ""  # "#rrggbb"
    key: Optional[int] = None  # 1-9

    @property
    def rgb(self) -> Tuple[int, int, int]:
        return hex_rgb(self.color if is_colour(self.color) else "#808080")


@dataclass(frozen=True)
class ImageRecord:
    id: int
    project_id: int
    coco_id: int
    sha256: str
    file_name: str
    path: Path  # absolute path of the stored file
    width: int
    height: int
    done: bool
    added: bool = False  # True when this call stored it (False: the same content was already there)
    locked_by: Optional[str] = None  # who has it open (team work; the lock may have expired)
    review_state: str = ""  # "", "approved" or "returned"
    review_comment: str = ""
    reviewed_by: str = ""


@dataclass(frozen=True)
class AnnotationRecord:
    id: int
    image_id: int
    category: CategoryRecord
    coco_id: Optional[int]
    rle: str
    height: int
    width: int
    area: int
    bbox: tuple
    iscrowd: int = 0
    author: str = ""
    model: Optional[str] = None  # "name@version"
    interactions: Optional[list] = None
    n_interactions: int = 0
    seconds: float = 0.0

    def mask(self) -> np.ndarray:
        return decode_mask(self.rle, self.height, self.width)


PROPOSAL_STATES = ("proposed", "accepted", "refined", "rejected")


@dataclass(frozen=True)
class ProposalRecord:
    id: int
    image_id: int
    rle: str
    height: int
    width: int
    area: int
    score: float
    stability: float
    model: str
    state: str

    def mask(self) -> np.ndarray:
        return decode_mask(self.rle, self.height, self.width)


@dataclass(frozen=True)
class BrowseRow:
    position: int  # 0-based position of the image in the project's order (what "open image N" takes, minus 1)
    image: ImageRecord
    objects: int
    state: str  # "to do", "in progress" (objects saved, not accepted) or "done" (accepted)


@dataclass(frozen=True)
class BrowsePage:
    rows: List[BrowseRow]
    total: int  # images matching the filter


@dataclass
class Stats:
    projects: int = 0
    images: int = 0
    images_done: int = 0
    annotations: int = 0
    categories: Dict[str, int] = field(default_factory=dict)  # name -> annotations


class Store:
    """``Store()`` opens the default store (``$ISEG_DATABASE_URL`` or ``$ISEG_HOME/iseg.db``, images in
    ``$ISEG_HOME/images`` or ``$ISEG_IMAGE_DIR``)."""

    def __init__(self, database: Union[Database, str, None] = None, image_root: Union[str, os.PathLike, None] = None):
        self.db = database if isinstance(database, Database) else Database(database)
        self.images = ImageStore(image_root or os.environ.get("ISEG_IMAGE_DIR") or data_home() / "images")

    def close(self) -> None:
        self.db.close()

    # -- projects and categories ------------------------------------------------------------------------
    def project(self, name: str, create: bool = True) -> ProjectRecord:
        name = name.strip()
        if not name:
            raise StorageError("a project needs a name")
        with self.db.session() as s:
            p = s.scalar(select(m.Project).where(m.Project.name == name))
            if p is not None:
                return ProjectRecord(p.id, p.name)
        if not create:
            raise StorageError(f"no project named {name!r}; known: {', '.join(self.project_names()) or 'none'}")
        try:
            with self.db.transaction() as s:
                p = m.Project(name=name)
                s.add(p)
                s.flush()
                return ProjectRecord(p.id, p.name)
        except IntegrityError:  # created by someone else meanwhile
            return self.project(name, create=False)

    def project_names(self) -> List[str]:
        with self.db.session() as s:
            return list(s.scalars(select(m.Project.name).order_by(m.Project.id)))

    def category(self, project: ProjectRecord, name: str, supercategory: str = "") -> CategoryRecord:
        """The project's category called ``name``, created with the next free COCO id if missing."""
        name = name.strip()
        if not name:
            raise StorageError("a category needs a name")
        def attempt():
            with self.db.transaction() as s:
                return _record(self._category(s, project.id, name, supercategory))

        return _retry_conflicts(attempt, f"category {name!r}")

    def _category(self, s: Session, project_id: int, name: str, supercategory: str = "",
                  coco_id: Optional[int] = None) -> m.Category:
        c = s.scalar(select(m.Category).where(m.Category.project_id == project_id, m.Category.name == name))
        if c is None:
            rows = s.execute(select(m.Category.coco_id, m.Category.color, m.Category.hotkey)
                             .where(m.Category.project_id == project_id)).all()
            used = {r[0] for r in rows}
            if coco_id is None or coco_id in used:
                coco_id = max(used, default=0) + 1
            colours = {r[1] for r in rows}
            color = next((c for c in LABEL_COLOURS if c not in colours), LABEL_COLOURS[len(rows) % len(LABEL_COLOURS)])
            key = next((k for k in range(1, 10) if k not in {r[2] for r in rows}), None)
            c = m.Category(project_id=project_id, name=name, supercategory=supercategory, coco_id=coco_id,
                           color=color, hotkey=key)
            s.add(c)
            s.flush()
        return c

    def categories(self, project: ProjectRecord) -> List[CategoryRecord]:
        """The project's label set, in COCO id order (the order of every export's class indices)."""
        with self.db.session() as s:
            return [_record(c) for c in s.scalars(select(m.Category).where(m.Category.project_id == project.id)
                                                  .order_by(m.Category.coco_id))]

    def set_label(self, project: ProjectRecord, name: str, color: Optional[str] = None, key: Optional[int] = None,
                  rename: Optional[str] = None) -> CategoryRecord:
        """Create or change a label: its colour (``#rrggbb``), its key (1-9; 0 removes it; a key another label
        held moves here) and its name (``rename``). Missing labels are created with the next free colour and key."""
        name = name.strip()
        if color is not None and not is_colour(color):
            raise StorageError(f"a label colour is #rrggbb, got {color!r}")
        if key is not None and not (isinstance(key, int) and 0 <= key <= 9):
            raise StorageError(f"a label key is 1-9 (0 for none), got {key!r}")
        new_name = rename.strip() if rename else None

        def attempt():
            with self.db.transaction() as s:
                c = self._category(s, project.id, name) if name else None
                if c is None:
                    raise StorageError("a label needs a name")
                if new_name and new_name != c.name:
                    if s.scalar(select(m.Category.id).where(m.Category.project_id == project.id,
                                                            m.Category.name == new_name)) is not None:
                        raise StorageError(f"there is already a label called {new_name!r}")
                    c.name = new_name
                if color is not None:
                    c.color = color.lower()
                if key is not None and key != c.hotkey:
                    other = s.scalar(select(m.Category).where(m.Category.project_id == project.id,
                                                              m.Category.hotkey == key)) if key else None
                    if other is not None:
                        other.hotkey = None
                        s.flush()
                    c.hotkey = key or None
                s.flush()
                return _record(c)

        return _retry_conflicts(attempt, f"label {name!r}")

    def set_annotation_category(self, annotation_id: int, name: str) -> AnnotationRecord:
        """Give a saved object another label of its project (created if new)."""
        name = name.strip()
        if not name:
            raise StorageError("a label needs a name")

        def attempt():
            with self.db.transaction() as s:
                a = s.get(m.Annotation, annotation_id)
                if a is None:
                    raise StorageError(f"no annotation with id {annotation_id}")
                a.category = self._category(s, a.image.project_id, name)
                s.flush()
                return self._annotation_record(a, a.image)

        return _retry_conflicts(attempt, f"label {name!r}")

    # -- images -----------------------------------------------------------------------------------------
    def add_image(self, project: ProjectRecord, source: Union[bytes, str, os.PathLike], file_name: str = "",
                  coco_id: Optional[int] = None) -> ImageRecord:
        """Store an image file in the project; the same content added again returns the existing image."""
        if not isinstance(source, (bytes, bytearray)):
            file_name = file_name or Path(source).name
        stored = self.images.put(source, file_name)

        def attempt():  # on a conflict, another writer added the same content (or took the COCO id) meanwhile
            with self.db.transaction() as s:
                img, added = self._image(s, project.id, stored, file_name or stored.sha256[:12], coco_id)
                return self._image_record(img, added)

        return _retry_conflicts(attempt, f"image {file_name or stored.sha256[:12]}")

    def _image(self, s: Session, project_id: int, stored, file_name: str, coco_id: Optional[int] = None):
        img = s.scalar(select(m.Image).where(m.Image.project_id == project_id, m.Image.sha256 == stored.sha256))
        if img is not None:
            return img, False
        taken = coco_id is not None and s.scalar(select(m.Image.id).where(
            m.Image.project_id == project_id, m.Image.coco_id == coco_id)) is not None
        if coco_id is None or taken:
            coco_id = (s.scalar(select(func.max(m.Image.coco_id)).where(m.Image.project_id == project_id)) or 0) + 1
        img = m.Image(project_id=project_id, coco_id=coco_id, sha256=stored.sha256, file_name=file_name,
                      stored_path=stored.path, width=stored.width, height=stored.height)
        s.add(img)
        s.flush()
        return img, True

    def _image_record(self, img: m.Image, added: bool = False) -> ImageRecord:
        return ImageRecord(img.id, img.project_id, img.coco_id, img.sha256, img.file_name,
                           self.images.path(img.stored_path), img.width, img.height, img.done, added,
                           img.locked_by, img.review_state or "", img.review_comment or "", img.reviewed_by or "")

    # -- team work: image locks and review ----------------------------------------------------------------
    def lock_image(self, image_id: int, user: str, idle_seconds: float) -> Optional[str]:
        """Give image ``image_id`` to ``user`` unless someone else holds it and was active within
        ``idle_seconds``. One conditional UPDATE, so two users racing for it cannot both win. Returns None when
        ``user`` holds it now, else the holder's name."""
        now = utcnow()
        with self.db.transaction() as s:
            won = s.execute(update(m.Image).where(m.Image.id == image_id, _lockable_by(user, now, idle_seconds))
                            .values(locked_by=user, locked_at=now)).rowcount
            if won:
                return None
            holder = s.scalar(select(m.Image.locked_by).where(m.Image.id == image_id))
            if holder is None and s.get(m.Image, image_id) is None:
                raise StorageError(f"no image with id {image_id}")
            return holder

    def next_free_image(self, project: ProjectRecord, user: str, idle_seconds: float,
                        start: int) -> Optional[Tuple[int, ImageRecord]]:
        """(position, image) of the first image at or after position ``start`` (going round to the beginning)
        that is not done and that ``user`` may lock (the rule of :meth:`lock_image`), or None. One query."""
        ranked = _ranked(project)
        later_first = case((ranked.c.position < start, 1), else_=0)
        with self.db.session() as s:
            row = s.execute(select(m.Image, ranked.c.position).join(ranked, ranked.c.id == m.Image.id)
                            .where(m.Image.done.is_(False), _lockable_by(user, utcnow(), idle_seconds))
                            .order_by(later_first, ranked.c.position).limit(1)).first()
            return (int(row[1]), self._image_record(row[0])) if row is not None else None

    def release_image(self, image_id: int, user: str) -> None:
        """Let go of ``user``'s lock on the image (nothing happens when someone else holds it)."""
        with self.db.transaction() as s:
            s.execute(update(m.Image).where(m.Image.id == image_id, m.Image.locked_by == user)
                      .values(locked_by=None, locked_at=None))

    def review_image(self, image_id: int, reviewer: str, approve: bool, comment: str = "") -> ImageRecord:
        """A reviewer's verdict on an accepted image: approved, or sent back (no longer done) with a comment."""
        comment = (comment or "").strip()
        if not approve and not comment:
            raise StorageError("say what to fix: sending an image back needs a comment")
        with self.db.transaction() as s:
            img = s.get(m.Image, image_id)
            if img is None:
                raise StorageError(f"no image with id {image_id}")
            if not img.done:
                raise StorageError(f"{img.file_name} is not accepted yet: only accepted images are reviewed")
            img.review_state = "approved" if approve else "returned"
            img.review_comment, img.reviewed_by, img.reviewed_at = comment, reviewer, utcnow()
            if not approve:
                img.done = False
            s.flush()
            return self._image_record(img)

    # -- the project's images in order, a page at a time (a project may hold 10,000 or more) --------------------
    def image_count(self, project: ProjectRecord) -> Tuple[int, int]:
        """(images, images accepted) of the project, in one query."""
        with self.db.session() as s:
            total, done = s.execute(select(func.count(m.Image.id), func.count(m.Image.id).filter(m.Image.done.is_(True)))
                                    .where(m.Image.project_id == project.id)).one()
            return int(total), int(done or 0)

    def image_at(self, project: ProjectRecord, position: int) -> Optional[ImageRecord]:
        """The image at 0-based ``position`` in the project's order (the order images were added), or None."""
        if position < 0:
            return None
        with self.db.session() as s:
            img = s.scalar(select(m.Image).where(m.Image.project_id == project.id).order_by(m.Image.id)
                           .offset(position).limit(1))
            return self._image_record(img) if img is not None else None

    def position_of(self, project: ProjectRecord, image_id: int) -> int:
        """The 0-based position of image ``image_id`` in the project's order."""
        with self.db.session() as s:
            return int(s.scalar(select(func.count(m.Image.id)).where(m.Image.project_id == project.id,
                                                                     m.Image.id < image_id)))

    def record_embedding(self, sha256: str, cache_key: str, store_url: str) -> None:
        """Note that ``store_url`` holds ``cache_key``'s embedding of the image content ``sha256`` (once)."""
        def attempt():
            with self.db.transaction() as s:
                exists = s.scalar(select(m.StoredEmbedding.id).where(
                    m.StoredEmbedding.sha256 == sha256, m.StoredEmbedding.cache_key == cache_key,
                    m.StoredEmbedding.store_url == store_url))
                if exists is None:
                    s.add(m.StoredEmbedding(sha256=sha256, cache_key=cache_key, store_url=store_url))

        try:
            attempt()
        except IntegrityError:  # another process noted it at the same moment
            pass

    def ready_count(self, project: ProjectRecord, cache_key: str, store_url: str) -> int:
        """How many of the project's images have ``cache_key``'s embedding in ``store_url``."""
        with self.db.session() as s:
            return int(s.scalar(select(func.count(m.Image.id)).where(
                m.Image.project_id == project.id, m.Image.sha256.in_(
                    select(m.StoredEmbedding.sha256).where(m.StoredEmbedding.cache_key == cache_key,
                                                           m.StoredEmbedding.store_url == store_url)))))

    def browse(self, project: ProjectRecord, state: Optional[str] = None, name: str = "", offset: int = 0,
               limit: int = 48, ready: Optional[Tuple[str, str]] = None) -> BrowsePage:
        """One page of the project's images with their position, object count and state, filtered by state
        (``IMAGE_STATES``), by a piece of the file name (case-insensitive) and, with ``ready=(cache_key,
        store_url)``, to the images whose embedding that store holds. Only the page is read."""
        if state not in (None, "", "all") + IMAGE_STATES:
            raise StorageError(f"unknown image state {state!r}; one of {', '.join(IMAGE_STATES)}")
        counts = (select(m.Annotation.image_id, func.count(m.Annotation.id).label("n"))
                  .group_by(m.Annotation.image_id).subquery())
        n = func.coalesce(counts.c.n, 0)
        ranked = _ranked(project)
        q = (select(ranked.c.id, ranked.c.position, n).join(m.Image, m.Image.id == ranked.c.id)
             .outerjoin(counts, counts.c.image_id == ranked.c.id))
        if state == "done":
            q = q.where(m.Image.done.is_(True))
        elif state == "in progress":
            q = q.where(m.Image.done.is_(False), n > 0)
        elif state == "to do":
            q = q.where(m.Image.done.is_(False), n == 0)
        if ready is not None:
            q = q.where(m.Image.sha256.in_(select(m.StoredEmbedding.sha256).where(
                m.StoredEmbedding.cache_key == ready[0], m.StoredEmbedding.store_url == ready[1])))
        if name.strip():
            pattern = "%" + name.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            q = q.where(func.lower(m.Image.file_name).like(pattern, escape="\\"))
        with self.db.session() as s:
            total = int(s.scalar(select(func.count()).select_from(q.subquery())))
            rows = s.execute(q.order_by(ranked.c.id).offset(max(0, offset)).limit(max(1, limit))).all()
            images = {i.id: i for i in s.scalars(select(m.Image).where(m.Image.id.in_([r[0] for r in rows])))}
            out = []
            for iid, pos, count in rows:
                img = images[iid]
                state_of = "done" if img.done else ("in progress" if count else "to do")
                out.append(BrowseRow(int(pos), self._image_record(img), int(count), state_of))
            return BrowsePage(out, total)

    def thumbnail(self, image: ImageRecord) -> Path:
        """The cached thumbnail file of ``image`` (made on first use)."""
        return self.images.thumbnail(image.path.relative_to(self.images.root).as_posix())

    def images_of(self, project: ProjectRecord) -> List[ImageRecord]:
        with self.db.session() as s:
            rows = s.scalars(select(m.Image).where(m.Image.project_id == project.id).order_by(m.Image.id))
            return [self._image_record(i) for i in rows]

    def image(self, image_id: int) -> ImageRecord:
        with self.db.session() as s:
            img = s.get(m.Image, image_id)
            if img is None:
                raise StorageError(f"no image with id {image_id}")
            return self._image_record(img)

    def set_done(self, image_id: int, done: bool = True) -> None:
        with self.db.transaction() as s:
            img = s.get(m.Image, image_id)
            if img is None:
                raise StorageError(f"no image with id {image_id}")
            img.done = done

    # -- annotations ------------------------------------------------------------------------------------
    def save_annotation(self, image_id: int, mask: np.ndarray, category: Union[str, CategoryRecord], *,
                        author: str = "", model: Optional[tuple] = None, interactions: Optional[list] = None,
                        seconds: float = 0.0, replace_id: Optional[int] = None) -> AnnotationRecord:
        """Save one object's mask (full image resolution) in one transaction; ``replace_id`` re-edits an
        existing annotation in place. ``model`` is ``(name, version)`` of the model that produced it."""
        return self.save_annotations(image_id, [dict(mask=mask, category=category, author=author, model=model,
                                                     interactions=interactions, seconds=seconds,
                                                     replace_id=replace_id)])[0]

    def save_annotations(self, image_id: int, objects: Sequence[dict], done: Optional[bool] = None
                         ) -> List[AnnotationRecord]:
        """Save several objects of one image (and optionally mark it done) in one transaction: all or none."""
        prepared = []
        with self.db.session() as s:
            img = s.get(m.Image, image_id)
            if img is None:
                raise StorageError(f"no image with id {image_id}")
            size, project = (img.height, img.width), ProjectRecord(img.project_id, "")
        for k, obj in enumerate(objects):
            mask = np.asarray(obj["mask"])
            if mask.shape != size:
                raise StorageError(f"object {k}: mask is {mask.shape[1]}x{mask.shape[0]}, image {image_id} is "
                                   f"{size[1]}x{size[0]}; nothing was saved")
            enc = encode_mask(mask)
            if enc.area == 0:
                raise StorageError(f"object {k}: the mask is empty; nothing was saved")
            cat = obj["category"]
            # categories and model versions are created first, each in a transaction of its own that copes
            # with another writer creating the same one at the same moment
            category = self.category(project, (cat.name if isinstance(cat, CategoryRecord) else str(cat)) or "object")
            version = self.register_model_version(*obj["model"]) if obj.get("model") else None
            prepared.append((obj, enc, category.id, version))
        with self.db.transaction() as s:
            img = s.get(m.Image, image_id)
            out = []
            for obj, enc, category_id, version_id in prepared:
                if obj.get("replace_id") is not None:
                    ann = s.get(m.Annotation, obj["replace_id"])
                    if ann is None or ann.image_id != image_id:
                        raise StorageError(f"no annotation {obj['replace_id']} on image {image_id}; nothing was saved")
                else:
                    ann = m.Annotation(image_id=image_id)
                    s.add(ann)
                interactions = obj.get("interactions")
                ann.category_id = category_id
                ann.rle = enc.counts
                ann.area = enc.area
                ann.bbox_x, ann.bbox_y, ann.bbox_w, ann.bbox_h = enc.bbox
                ann.author = obj.get("author") or ""
                ann.model_version_id = version_id
                ann.interactions = list(interactions) if interactions is not None else None
                ann.n_interactions = len(interactions) if interactions is not None else 0
                ann.seconds = float(obj.get("seconds") or 0.0)
                s.flush()
                out.append(self._annotation_record(ann, img))
            if done is not None:
                if done and not img.done and img.review_state == "returned":
                    img.review_state = ""  # accepted again after a send-back: waiting for review again
                img.done = done
            return out

    def _model_version(self, s: Session, name: str, version: str, checkpoint: Optional[str] = None,
                       metrics: Optional[dict] = None) -> m.ModelVersion:
        v = s.scalar(select(m.ModelVersion).where(m.ModelVersion.name == name, m.ModelVersion.version == version))
        if v is None:
            v = m.ModelVersion(name=name, version=version, checkpoint=checkpoint, metrics=metrics)
            s.add(v)
            s.flush()
        return v

    def register_model_version(self, name: str, version: str, checkpoint: Optional[str] = None,
                               metrics: Optional[dict] = None) -> int:
        def attempt():
            with self.db.transaction() as s:
                return self._model_version(s, name, version, checkpoint, metrics).id

        return _retry_conflicts(attempt, f"model version {name}@{version}")

    def record_training_run(self, base: Tuple[str, str], status: str = "running", params: Optional[dict] = None,
                            metrics: Optional[dict] = None, message: str = "", result_version_id: Optional[int] = None,
                            run_id: Optional[int] = None, author: str = "") -> int:
        """Create (``run_id=None``) or update a training run: its base model ``(name, version)``, status
        (running, done, kept, failed), parameters, metrics, the model version it produced and (on creation)
        who started it."""
        with self.db.transaction() as s:
            run = s.get(m.TrainingRun, run_id) if run_id is not None else None
            if run is None:
                if run_id is not None:
                    raise StorageError(f"no training run with id {run_id}")
                run = m.TrainingRun(base_version_id=self._model_version(s, *base).id, started_at=utcnow(),
                                    author=author)
                s.add(run)
            run.status = status
            run.params = params if params is not None else run.params
            run.metrics = metrics if metrics is not None else run.metrics
            run.message = message or run.message
            run.result_version_id = result_version_id if result_version_id is not None else run.result_version_id
            if status != "running":
                run.finished_at = utcnow()
            s.flush()
            return run.id

    def training_runs(self) -> List[dict]:
        """All training runs, newest first, with base and result as ``name@version``."""
        with self.db.session() as s:
            runs = s.scalars(select(m.TrainingRun).order_by(m.TrainingRun.id.desc())).all()
            names = {v.id: f"{v.name}@{v.version}" for v in s.scalars(select(m.ModelVersion)).all()}
            return [{"id": r.id, "status": r.status, "author": r.author or "", "base": names.get(r.base_version_id),
                     "result": names.get(r.result_version_id), "params": r.params, "metrics": r.metrics,
                     "message": r.message, "started_at": r.started_at, "finished_at": r.finished_at} for r in runs]

    def _annotation_record(self, a: m.Annotation, img: m.Image) -> AnnotationRecord:
        mv = a.model_version
        return AnnotationRecord(a.id, a.image_id, _record(a.category), a.coco_id, a.rle, img.height, img.width,
                                a.area, (a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h), a.iscrowd, a.author,
                                f"{mv.name}@{mv.version}" if mv else None, a.interactions, a.n_interactions,
                                a.seconds)

    # -- proposed objects (segment-everything): pre-annotations a person accepts, refines or rejects -------------
    def replace_proposals(self, image_id: int, proposals: Sequence[dict], model: str) -> List["ProposalRecord"]:
        """The image's open proposals (state "proposed") replaced by ``proposals`` (dicts of mask, score,
        stability), in one transaction; proposals already accepted, refined or rejected stay as they were."""
        rows = []
        for p in proposals:
            enc = encode_mask(p["mask"])
            if enc.area:
                rows.append(m.Proposal(image_id=image_id, rle=enc.counts, area=enc.area, score=float(p["score"]),
                                       stability=float(p["stability"]), model=model, state="proposed"))
        with self.db.transaction() as s:
            if s.get(m.Image, image_id) is None:
                raise StorageError(f"no image with id {image_id}")
            for old in s.scalars(select(m.Proposal).where(m.Proposal.image_id == image_id,
                                                          m.Proposal.state == "proposed")):
                s.delete(old)
            s.add_all(rows)
        return self.proposals(image_id)

    def proposals(self, image_id: int, state: str = "proposed") -> List["ProposalRecord"]:
        """The image's proposals in ``state``, best score first."""
        with self.db.session() as s:
            img = s.get(m.Image, image_id)
            if img is None:
                raise StorageError(f"no image with id {image_id}")
            q = select(m.Proposal).where(m.Proposal.image_id == image_id, m.Proposal.state == state)
            return [ProposalRecord(p.id, image_id, p.rle, img.height, img.width, p.area, p.score, p.stability,
                                   p.model, p.state) for p in s.scalars(q.order_by(m.Proposal.score.desc(),
                                                                                   m.Proposal.id))]

    def set_proposal_state(self, proposal_id: int, state: str) -> None:
        if state not in PROPOSAL_STATES:
            raise StorageError(f"a proposal's state is one of {', '.join(PROPOSAL_STATES)}, not {state!r}")
        with self.db.transaction() as s:
            p = s.get(m.Proposal, proposal_id)
            if p is None:
                raise StorageError(f"no proposal with id {proposal_id}")
            p.state = state

    def annotations(self, image_id: int) -> List[AnnotationRecord]:
        with self.db.session() as s:
            img = s.get(m.Image, image_id)
            if img is None:
                raise StorageError(f"no image with id {image_id}")
            return [self._annotation_record(a, img) for a in img.annotations]

    def delete_annotation(self, annotation_id: int) -> None:
        with self.db.transaction() as s:
            a = s.get(m.Annotation, annotation_id)
            if a is None:
                raise StorageError(f"no annotation with id {annotation_id}")
            s.delete(a)

    # -- overview ---------------------------------------------------------------------------------------
    def stats(self, project: Optional[ProjectRecord] = None) -> Stats:
        with self.db.session() as s:
            img_q = select(func.count(m.Image.id))
            done_q = select(func.count(m.Image.id)).where(m.Image.done.is_(True))
            ann_q = select(func.count(m.Annotation.id)).join(m.Image)
            cat_q = (select(m.Category.name, func.count(m.Annotation.id))
                     .join(m.Annotation, m.Annotation.category_id == m.Category.id).group_by(m.Category.name))
            if project is not None:
                img_q = img_q.where(m.Image.project_id == project.id)
                done_q = done_q.where(m.Image.project_id == project.id)
                ann_q = ann_q.where(m.Image.project_id == project.id)
                cat_q = cat_q.where(m.Category.project_id == project.id)
            return Stats(projects=1 if project else s.scalar(select(func.count(m.Project.id))),
                         images=s.scalar(img_q), images_done=s.scalar(done_q), annotations=s.scalar(ann_q),
                         categories={n: c for n, c in s.execute(cat_q)})


def _record(c: m.Category) -> CategoryRecord:
    return CategoryRecord(c.id, c.coco_id, c.name, c.supercategory, c.color or "", c.hotkey)


def _ranked(project: ProjectRecord):
    """The project's image ids with their 0-based position in the project's order (ids ascending)."""
    position = func.row_number().over(order_by=m.Image.id) - 1
    return select(m.Image.id, position.label("position")).where(m.Image.project_id == project.id).subquery()


def _lockable_by(user: str, now, idle_seconds: float):
    """The images ``user`` may lock now: free, already theirs, or held by someone idle for ``idle_seconds``."""
    return or_(m.Image.locked_by.is_(None), m.Image.locked_by == user,
               m.Image.locked_at < now - timedelta(seconds=idle_seconds))


def hex_rgb(colour: str) -> Tuple[int, int, int]:
    """``"#rrggbb"`` -> (r, g, b)."""
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def is_colour(text: str) -> bool:
    return (isinstance(text, str) and len(text) == 7 and text[0] == "#"
            and all(ch in "0123456789abcdefABCDEF" for ch in text[1:]))
