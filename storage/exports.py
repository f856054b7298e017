"""Every export a labelling tool is expected to give, from one project of the store:

- ``coco``: COCO instances JSON (RLE, or polygons) - :func:`storage.coco.export_coco`
- ``yolo``: YOLO segmentation: ``labels/<stem>.txt`` per image, a line per polygon ``class x1 y1 x2 y2 ...``
  with coordinates divided by the image's width and height, and ``data.yaml`` naming the classes
- ``voc``: Pascal VOC style PNGs: ``SegmentationClass/<stem>.png`` (palette PNG, pixel = 1-based index of the
  label in the label set, 0 = background; the palette holds the labels' colours), ``SegmentationObject/
  <stem>.png`` (pixel = 1-based object number, the VOC colour map), ``labelmap.txt`` and
  ``ImageSets/Segmentation/default.txt``
- ``objects``: one 0/255 PNG per object, ``objects/<stem>_<object>_<label>.png``, ``objects.csv``, and one
  indexed PNG per image, ``indexed/<stem>.png`` (pixel = object number, the VOC colour map)

Class indices follow the label set's order (COCO ids ascending): YOLO's are 0-based, VOC's 1-based. Where
objects overlap, later objects are drawn over earlier ones. Several files leave as one zip, written to a
temporary name and renamed: a failed export leaves no half file.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple, Union

import numpy as np
from PIL import Image as PILImage

from .coco import export_coco, replacing, write_json_atomic
from .errors import StorageError
from .masks import mask_to_polygons
from .store import AnnotationRecord, CategoryRecord, ImageRecord, ProjectRecord, Store

FORMATS = {"coco": "COCO JSON (RLE)", "coco-polygons": "COCO JSON (polygons)", "yolo": "YOLO segmentation",
           "voc": "Pascal VOC PNGs", "objects": "PNG mask per object"}
Progress = Optional[Callable[[int, int], None]]


def safe_name(text: str, limit: Optional[int] = 80) -> str:
    """``text`` as a piece of a file name: runs of anything but letters, digits, dot, dash and underscore become
    one underscore; at most ``limit`` characters (None: all)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text))[:limit]


def _stem(img: ImageRecord) -> str:
    """A file stem unique within the project: the COCO id, then the name's stem made safe for any file system."""
    safe = safe_name(Path(img.file_name).stem)
    return f"{img.coco_id:06d}_{safe}"


def _annotated(store: Store, project: ProjectRecord, progress: Progress = None
               ) -> Iterator[Tuple[ImageRecord, List[AnnotationRecord]]]:
    images = store.images_of(project)
    for k, img in enumerate(images):
        yield img, store.annotations(img.id)
        if progress is not None:
            progress(k + 1, len(images))


def _check_not_empty(store: Store, project: ProjectRecord) -> None:
    stats = store.stats(project)
    if stats.annotations == 0:
        raise StorageError(f"nothing to export: project {project.name!r} has {stats.images} image(s) and no saved "
                           "object yet")


def _palette() -> List[int]:
    """The PASCAL VOC colour map (bit-interleaved), so indexed PNGs look as users expect."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _save_indexed(values: np.ndarray, palette: List[int], path: Path) -> None:
    pim = PILImage.fromarray(values, mode="P")
    pim.putpalette(palette)
    pim.save(path)


def _instances(img: ImageRecord, masks: List[np.ndarray], warnings: List[str]) -> np.ndarray:
    """Object numbers 1, 2, ... per pixel (0 = background; later objects over earlier ones; 254 at most, 255
    being VOC's "void")."""
    out = np.zeros((img.height, img.width), np.uint8)
    if len(masks) > 254:
        warnings.append(f"{img.file_name}: {len(masks)} objects; an instance PNG holds 254, the rest share 254")
    for k, m in enumerate(masks, start=1):
        out[m] = min(k, 254)
    return out


def _yaml_str(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar


def write_yolo(store: Store, project: ProjectRecord, out: Path, progress: Progress = None) -> List[str]:
    """YOLO segmentation labels under ``out``; returns warnings (what polygons cannot hold)."""
    labels = store.categories(project)
    index = {c.id: k for k, c in enumerate(labels)}
    (out / "labels").mkdir(parents=True, exist_ok=True)
    warnings: List[str] = []
    names = []
    for img, anns in _annotated(store, project, progress):
        lines = []
        for ann in anns:
            poly = mask_to_polygons(ann.mask())
            if poly.holes or poly.dropped_parts:
                warnings.append(f"{img.file_name}, object {ann.id}: {poly.holes} hole(s) filled and "
                                f"{poly.dropped_parts} tiny part(s) dropped by polygons")
            for ring in poly.polygons:
                xy = np.asarray(ring, np.float64).reshape(-1, 2) / (img.width, img.height)
                lines.append(" ".join([str(index[ann.category.id])] + [f"{v:.6f}" for v in xy.ravel()]))
        (out / "labels" / f"{_stem(img)}.txt").write_text("".join(line + "\n" for line in lines))
        names.append(img.file_name)
    yaml = ["# YOLO segmentation labels exported by iseg; put the images under images/ with the same stems",
            "path: .", "train: images", "val: images", f"nc: {len(labels)}", "names:"]
    yaml += [f"  {k}: {_yaml_str(c.name)}" for k, c in enumerate(labels)]
    (out / "data.yaml").write_text("\n".join(yaml) + "\n")
    (out / "images.txt").write_text("".join(f"{_stem(i)}\t{i.file_name}\n" for i in store.images_of(project)))
    return warnings


def _label_palette(labels: List[CategoryRecord]) -> List[int]:
    pal = [0, 0, 0]
    for c in labels[:254]:
        pal += list(c.rgb)
    pal += [0, 0, 0] * (255 - len(pal) // 3) + [224, 224, 192]  # 255: VOC's "void"
    return pal


def write_voc(store: Store, project: ProjectRecord, out: Path, progress: Progress = None) -> List[str]:
    labels = store.categories(project)
    if len(labels) > 254:
        raise StorageError(f"VOC class PNGs hold 254 labels; project {project.name!r} has {len(labels)}")
    index = {c.id: k + 1 for k, c in enumerate(labels)}
    for sub in ("SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    class_pal, object_pal = _label_palette(labels), _palette()
    warnings, stems = [], []
    for img, anns in _annotated(store, project, progress):
        masks = [ann.mask() for ann in anns]
        cls = np.zeros((img.height, img.width), np.uint8)
        for ann, m in zip(anns, masks):
            cls[m] = index[ann.category.id]
        stem = _stem(img)
        _save_indexed(cls, class_pal, out / "SegmentationClass" / f"{stem}.png")
        _save_indexed(_instances(img, masks, warnings), object_pal, out / "SegmentationObject" / f"{stem}.png")
        stems.append(stem)
    (out / "ImageSets" / "Segmentation" / "default.txt").write_text("".join(s + "\n" for s in stems))
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    lines += [f"{c.name}:{','.join(map(str, c.rgb))}::" for c in labels]
    (out / "labelmap.txt").write_text("\n".join(lines) + "\n")
    return warnings


def write_objects(store: Store, project: ProjectRecord, out: Path, progress: Progress = None) -> List[str]:
    (out / "objects").mkdir(parents=True, exist_ok=True)
    (out / "indexed").mkdir(parents=True, exist_ok=True)
    rows = [["file", "image", "object", "annotation_id", "label", "area"]]
    warnings: List[str] = []
    palette = _palette()
    for img, anns in _annotated(store, project, progress):
        masks = [ann.mask() for ann in anns]
        for k, (ann, m) in enumerate(zip(anns, masks), start=1):
            label = safe_name(ann.category.name, limit=None)
            name = f"objects/{_stem(img)}_{k:03d}_{label}.png"
            PILImage.fromarray(m.astype(np.uint8) * 255).save(out / name)
            rows.append([name, img.file_name, k, ann.id, ann.category.name, ann.area])
        _save_indexed(_instances(img, masks, warnings), palette, out / "indexed" / f"{_stem(img)}.png")
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    (out / "objects.csv").write_text(buf.getvalue())
    return warnings


def export_png(store: Store, project: ProjectRecord, out_dir: Union[str, os.PathLike]) -> int:
    """The ``objects`` export into the folder ``out_dir`` (``python -m storage export-png``). Returns the number
    of PNG files written (one per object, one indexed per image)."""
    out = Path(out_dir)
    write_objects(store, project, out)
    return sum(1 for _ in out.glob("objects/*.png")) + sum(1 for _ in out.glob("indexed/*.png"))


WRITERS = {"yolo": write_yolo, "voc": write_voc, "objects": write_objects}


def export(store: Store, project: ProjectRecord, fmt: str, dest: Union[str, os.PathLike],
           progress: Progress = None) -> Tuple[Path, List[str]]:
    """Export the project as ``fmt`` (a key of ``FORMATS``) to the file ``dest`` (a .json for COCO, a .zip for
    the others). Returns (the file, warnings). An empty project is refused with a message; nothing is written."""
    if fmt not in FORMATS:
        raise StorageError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
    _check_not_empty(store, project)
    dest = Path(dest)
    if fmt.startswith("coco"):
        res = export_coco(store, project, polygons=fmt == "coco-polygons")
        write_json_atomic(dest, res.coco)
        return dest, res.warnings
    with replacing(dest, "; nothing was exported") as tmp_zip, \
            tempfile.TemporaryDirectory(prefix="iseg-export-") as work:
        warnings = WRITERS[fmt](store, project, Path(work), progress)
        with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(Path(work).rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(work).as_posix())
    return dest, warnings


def export_folder(store: Store, project: ProjectRecord, fmt: str, out_dir: Union[str, os.PathLike],
                  progress: Progress = None) -> List[str]:
    """The same files as :func:`export`'s zip, written into the folder ``out_dir`` (the CLI's default)."""
    if fmt not in WRITERS:
        raise StorageError(f"{fmt!r} is written as one file; folders hold {', '.join(WRITERS)}")
    _check_not_empty(store, project)
    return WRITERS[fmt](store, project, Path(out_dir), progress)


