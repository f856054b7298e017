"""COCO JSON import / export for a project (the PNG, YOLO and VOC exports are in :mod:`storage.exports`).

Export writes RLE by default (pixel-exact; holes and several parts kept); ``polygons=True`` writes polygons
and warns for every object whose holes or tiny parts polygons cannot keep. Import reads polygons, compressed
and uncompressed RLE; it checks the whole file first (structure, ids, categories, image files and their sizes,
every segmentation) and then writes everything in one transaction, so a bad file imports nothing. Importing
the same file again changes nothing.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from PIL import Image as PILImage
from pycocotools import mask as mask_utils
from sqlalchemy import select

from iseg_core.image import oriented_size

from . import models as m
from .errors import CocoFormatError, LabelClash, StorageError
from .masks import decode_mask, mask_to_polygons, segmentation_to_counts
from .store import CategoryRecord, ProjectRecord, Store, is_colour

Progress = Optional[Callable[[int, int], None]]


@dataclass
class ExportResult:
    coco: dict
    warnings: List[str] = field(default_factory=list)


@dataclass
class ImportReport:
    images_added: int = 0
    images_existing: int = 0
    annotations_added: int = 0
    annotations_existing: int = 0
    categories_added: int = 0
    notes: List[str] = field(default_factory=list)


def export_coco(store: Store, project: ProjectRecord, polygons: bool = False) -> ExportResult:
    """The project as a COCO instances dict; only committed data is read (one read transaction)."""
    warnings: List[str] = []
    with store.db.session() as s:
        cats = list(s.scalars(select(m.Category).where(m.Category.project_id == project.id)
                              .order_by(m.Category.coco_id)))
        cat_ids = {c.id: c.coco_id for c in cats}
        images = list(s.scalars(select(m.Image).where(m.Image.project_id == project.id).order_by(m.Image.coco_id)))
        anns = list(s.scalars(select(m.Annotation).join(m.Image).where(m.Image.project_id == project.id)
                              .order_by(m.Annotation.id)))
        versions = {v.id: f"{v.name}@{v.version}" for v in s.scalars(select(m.ModelVersion))}
        sizes = {i.id: (i.height, i.width, i.coco_id) for i in images}
        used = {a.coco_id for a in anns if a.coco_id is not None}
        next_id = max(used, default=0) + 1
        seen = set()
        out_anns = []
        for a in anns:
            h, w, image_coco_id = sizes[a.image_id]
            ann_id = a.coco_id
            if ann_id is None or ann_id in seen:
                ann_id, next_id = next_id, next_id + 1
            seen.add(ann_id)
            if polygons:
                poly = mask_to_polygons(decode_mask(a.rle, h, w))
                seg: Any = poly.polygons
                lost = []
                if poly.holes:
                    lost.append(f"{poly.holes} hole(s) filled")
                if poly.dropped_parts:
                    lost.append(f"{poly.dropped_parts} part(s) under 3 pixels dropped")
                if lost:
                    warnings.append(f"annotation {ann_id} (image {image_coco_id}): polygons cannot represent "
                                    f"this mask exactly: {', '.join(lost)}; {poly.differing_pixels} pixels "
                                    "differ. Export RLE to keep it pixel-exact.")
            else:
                seg = {"size": [h, w], "counts": a.rle}
            record = {"id": ann_id, "image_id": image_coco_id, "category_id": cat_ids[a.category_id],
                      "segmentation": seg, "area": a.area, "bbox": [a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h],
                      "iscrowd": a.iscrowd,
                      "iseg": {"author": a.author, "model": versions.get(a.model_version_id),
                               "interactions": a.interactions, "n_interactions": a.n_interactions,
                               "seconds": a.seconds}}
            out_anns.append(record)
        coco = {
            "info": {"description": f"iseg project {project.name}", "version": "1.0"},
            "licenses": [],
            "categories": [{"id": c.coco_id, "name": c.name, "supercategory": c.supercategory, "color": c.color,
                            "iseg": {"key": c.hotkey}} for c in cats],
            "images": [{"id": i.coco_id, "file_name": i.file_name, "width": i.width, "height": i.height,
                        "iseg": {"sha256": i.sha256, "done": i.done}} for i in images],
            "annotations": out_anns,
        }
    return ExportResult(coco, warnings)


@contextmanager
def replacing(path: Union[str, os.PathLike], what: str = "") -> Iterator[Path]:
    """A temporary name beside ``path`` to write to; renamed to ``path`` when the block ends without an error,
    removed when it fails (StorageError naming the file): nothing half-written ever stands under the real name."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise StorageError(f"cannot write {path}: {e.strerror or e}{what}") from None
        raise


def write_json_atomic(path: Union[str, os.PathLike], obj: Any) -> None:
    with replacing(path) as tmp, open(tmp, "w") as fh:
        json.dump(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


# -- import ----------------------------------------------------------------------------------------------
def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _load(source: Union[str, os.PathLike, dict]) -> Tuple[dict, str]:
    if isinstance(source, dict):
        return source, "COCO data"
    name = os.fspath(source)
    try:
        with open(name) as fh:
            return json.load(fh), name
    except OSError as e:
        raise StorageError(f"cannot read {name}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise CocoFormatError(name, [f"not valid JSON: {e}"]) from None


def _image_size(path: Path) -> Tuple[int, int]:
    """(width, height) after EXIF orientation, from the header only."""
    with PILImage.open(path) as im:
        h, w = oriented_size(im)
        return w, h


def _check(coco: Any, image_dir: Optional[Path], known: Optional[Dict[str, Any]] = None,
           progress: Progress = None) -> Tuple[List[str], Dict[int, Any], Dict[int, str]]:
    """Every problem of the file (empty list: importable), image paths (or, without ``image_dir``, the project's
    images of ``known``, by file name) by COCO id, counts by annotation id."""
    problems: List[str] = []
    if not isinstance(coco, dict):
        return ["the top level must be an object with 'images', 'annotations' and 'categories'"], {}, {}
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            problems.append(f"missing or not a list: '{key}'")
    if problems:
        return problems, {}, {}
    cats: Dict[int, str] = {}
    names = set()
    for k, c in enumerate(coco["categories"]):
        where = f"categories[{k}]"
        if not isinstance(c, dict) or not _int(c.get("id")) or not isinstance(c.get("name"), str) or not c["name"].strip():
            problems.append(f"{where}: needs an integer 'id' and a non-empty 'name'")
            continue
        if c["id"] in cats:
            problems.append(f"{where}: duplicate category id {c['id']}")
        elif c["name"].strip() in names:
            problems.append(f"{where}: duplicate category name {c['name']!r}")
        cats[c["id"]] = c["name"].strip()
        names.add(c["name"].strip())
    images: Dict[int, dict] = {}
    paths: Dict[int, Path] = {}
    for k, im in enumerate(coco["images"]):
        where = f"images[{k}]"
        if not isinstance(im, dict) or not _int(im.get("id")) or not isinstance(im.get("file_name"), str):
            problems.append(f"{where}: needs an integer 'id' and a 'file_name'")
            continue
        where = f"images[{k}] (id {im['id']}, {im['file_name']})"
        if im["id"] in images:
            problems.append(f"{where}: duplicate image id {im['id']}")
            continue
        if not (_int(im.get("width")) and _int(im.get("height")) and im["width"] > 0 and im["height"] > 0):
            problems.append(f"{where}: needs positive integer 'width' and 'height'")
            continue
        images[im["id"]] = im
        if image_dir is None:  # pre-annotations of images already in the project, matched by file name
            rec = known.get(im["file_name"])
            if rec is None:
                problems.append(f"{where}: no image of this name in the project (add the image first)")
            elif (rec.width, rec.height) != (im["width"], im["height"]):
                problems.append(f"{where}: the project's image is {rec.width}x{rec.height}, the record says "
                                f"{im['width']}x{im['height']}")
            else:
                paths[im["id"]] = rec
            continue
        path = image_dir / im["file_name"]
        if not path.is_file():
            problems.append(f"{where}: file not found: {path}")
            continue
        try:
            w, h = _image_size(path)
        except Exception as e:  # any decoder complaint is a bad file
            problems.append(f"{where}: not a readable image: {e}")
            continue
        if (w, h) != (im["width"], im["height"]):
            problems.append(f"{where}: the file is {w}x{h}, the record says {im['width']}x{im['height']}")
            continue
        paths[im["id"]] = path
    counts: Dict[int, str] = {}
    for k, a in enumerate(coco["annotations"]):
        where = f"annotations[{k}]"
        if not isinstance(a, dict) or not _int(a.get("id")):
            problems.append(f"{where}: needs an integer 'id'")
            continue
        where = f"annotations[{k}] (id {a['id']})"
        if a["id"] in counts:
            problems.append(f"{where}: duplicate annotation id {a['id']}")
            continue
        missing = [key for key in ("image_id", "category_id", "segmentation") if key not in a]
        if missing:
            problems.append(f"{where}: missing {', '.join(missing)}")
            continue
        if a["category_id"] not in cats:
            problems.append(f"{where}: unknown category_id {a['category_id']!r}")
            continue
        im = images.get(a["image_id"])
        if im is None:
            problems.append(f"{where}: unknown image_id {a['image_id']!r}")
            continue
        try:
            counts[a["id"]] = segmentation_to_counts(a["segmentation"], im["height"], im["width"])
        except (ValueError, TypeError) as e:
            problems.append(f"{where}: bad segmentation for image {im['id']} ({im['width']}x{im['height']}): {e}")
            continue
        if decode_mask(counts[a["id"]], im["height"], im["width"]).sum() == 0:
            problems.append(f"{where}: the segmentation covers no pixel of image {im['id']}")
        if progress is not None and k % 500 == 499:
            progress(k + 1, 2 * len(coco["annotations"]))
    return problems, paths, counts


def label_clashes(labels: List[CategoryRecord], categories: List[dict]) -> List[str]:
    """How a file's categories differ from a (non-empty) label set: names the set lacks, names under another id."""
    if not labels:
        return []
    by_name = {c.name: c for c in labels}
    out = []
    for c in categories:
        have = by_name.get(c["name"].strip())
        if have is None:
            out.append(f"{c['name'].strip()!r} is not in the label set")
        elif have.coco_id != c["id"]:
            out.append(f"{have.name!r} has id {c['id']} in the file and {have.coco_id} in the label set")
    return out


def import_coco(store: Store, project: ProjectRecord, source: Union[str, os.PathLike, dict],
                image_dir: Union[str, os.PathLike, None] = None, author: str = "", on_clash: str = "map",
                progress: Progress = None) -> ImportReport:
    """Import a COCO instances file: all of it or (raising CocoFormatError / LabelClash) none of it.

    With ``image_dir`` the images are read from there (``file_name`` relative to it) and added; without, the
    file holds pre-annotations of images already in the project, matched by file name. Categories are matched
    to the label set by name; when they differ from a non-empty label set (a name it lacks, or the same name
    under another id), ``on_clash="refuse"`` imports nothing and says how, ``"map"`` adds the missing names.
    Everything is written in one transaction; ``progress(done, total)`` hears about checking and writing."""
    if on_clash not in ("map", "refuse"):
        raise StorageError(f"on_clash is 'map' or 'refuse', not {on_clash!r}")
    coco, name = _load(source)
    known = None
    if image_dir is None:
        known = {}
        for img in store.images_of(project):
            known.setdefault(img.file_name, img)
    problems, paths, counts = _check(coco, Path(image_dir) if image_dir is not None else None, known, progress)
    if problems:
        raise CocoFormatError(name, problems)
    clashes = label_clashes(store.categories(project), coco["categories"])
    if clashes and on_clash == "refuse":
        raise LabelClash(name, clashes)
    if image_dir is not None:
        stored = {iid: store.images.put(path, str(path)) for iid, path in paths.items()}
    report = ImportReport()
    total = len(coco["annotations"])
    with store.db.transaction() as s:
        cat_map: Dict[int, m.Category] = {}
        for c in coco["categories"]:
            before = s.scalar(select(m.Category.id).where(m.Category.project_id == project.id,
                                                          m.Category.name == c["name"].strip()))
            cat_map[c["id"]] = store._category(s, project.id, c["name"].strip(), c.get("supercategory") or "", c["id"])
            if before is None and is_colour(c.get("color")):  # a label made here keeps the file's colour
                cat_map[c["id"]].color = c["color"].lower()
            report.categories_added += before is None
        img_map: Dict[int, m.Image] = {}
        for im in coco["images"]:
            if image_dir is None:
                img_map[im["id"]] = s.get(m.Image, paths[im["id"]].id)
                report.images_existing += 1
                continue
            img, added = store._image(s, project.id, stored[im["id"]], im["file_name"], im["id"])
            img_map[im["id"]] = img
            if added:
                report.images_added += 1
                if img.coco_id != im["id"]:
                    report.notes.append(f"image id {im['id']} ({im['file_name']}) was taken in this project; "
                                        f"it is image {img.coco_id} now")
            else:
                report.images_existing += 1
        ids = [i.id for i in img_map.values()]
        by_coco_id: Dict[Tuple[int, int], str] = {}
        masks_there = set()  # (image, category, rle) of every object there: an identical object is not added twice
        for chunk in range(0, len(ids), 500):  # what an earlier import (or the app) left, read once
            for image_id, coco_id, category_id, rle in s.execute(
                    select(m.Annotation.image_id, m.Annotation.coco_id, m.Annotation.category_id, m.Annotation.rle)
                    .where(m.Annotation.image_id.in_(ids[chunk:chunk + 500]))):
                if coco_id is not None:
                    by_coco_id[(image_id, coco_id)] = rle
                masks_there.add((image_id, category_id, rle))
        for k, a in enumerate(coco["annotations"]):
            if progress is not None and k % 500 == 499:
                progress(total + k + 1, 2 * total)
            img = img_map[a["image_id"]]
            old = by_coco_id.get((img.id, a["id"]))
            rle = counts[a["id"]]
            if old is None and (img.id, cat_map[a["category_id"]].id, rle) in masks_there:
                old = rle  # e.g. an export of this project imported back: the object made here is already there
            if old is not None:
                if old != rle:
                    raise CocoFormatError(name, [f"annotation id {a['id']} was imported before with a different "
                                                 "mask; rename its id or delete the old one"])
                report.annotations_existing += 1
                continue
            obj = {"size": [img.height, img.width], "counts": rle.encode("ascii")}
            x, y, w, h = (float(v) for v in mask_utils.toBbox(obj))
            extra = a.get("iseg") if isinstance(a.get("iseg"), dict) else {}
            interactions = extra.get("interactions") if isinstance(extra.get("interactions"), list) else None
            s.add(m.Annotation(image_id=img.id, category_id=cat_map[a["category_id"]].id, coco_id=a["id"], rle=rle,
                               area=int(mask_utils.area(obj)), bbox_x=x, bbox_y=y, bbox_w=w, bbox_h=h,
                               iscrowd=1 if a.get("iscrowd") == 1 else 0,
                               author=str(extra.get("author") or author), interactions=interactions,
                               n_interactions=len(interactions) if interactions else 0,
                               seconds=float(extra.get("seconds") or 0.0)))
            report.annotations_added += 1
    return report
