"""Benchmark readers. Each yields :class:`Sample` objects (one object each) lazily, in a stable order.

Layouts follow the RITM family (the way ../shared/data and the published zips are organised); every reader
checks that images and masks pair up and says which file is missing or has the wrong size.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
from PIL import Image

from ..errors import IsegError
from ..image import IMAGE_SUFFIXES, load_image
from ..masks import decode_segmentation


class DatasetError(IsegError):
    """A benchmark folder is missing, incomplete or inconsistent."""


@dataclass
class Sample:
    name: str  # unique within the dataset: image stem, plus an object id where an image has several
    image_path: Path
    load_mask: Callable[[], Tuple[np.ndarray, Optional[np.ndarray]]]  # -> (gt bool HxW, ignore bool HxW or None)

    def load(self) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """``(image uint8 HxWx3, gt bool HxW, ignore bool HxW or None)``, sizes checked."""
        loaded = load_image(self.image_path)
        image = loaded.rgb
        gt, ignore = self.load_mask()
        if loaded.scale != 1.0:  # a huge image was downscaled on load: scale its masks to match
            gt = cv2.resize(gt.astype(np.uint8), image.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
            if ignore is not None:
                ignore = cv2.resize(ignore.astype(np.uint8), image.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
        if gt.shape != image.shape[:2]:
            raise DatasetError(f"{self.name}: mask is {gt.shape[1]}x{gt.shape[0]} but image {self.image_path.name} "
                               f"is {image.shape[1]}x{image.shape[0]}")
        return image, gt, ignore


def _files(folder: Path) -> Dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"missing folder {folder}")
    out: Dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            out.setdefault(p.stem, p)
    return out


def _pair(images: Path, masks: Path, mask_stem: Callable[[str], str] = lambda s: s) -> List[Tuple[str, Path, Path]]:
    imgs, msks = _files(images), _files(masks)
    if not imgs:
        raise DatasetError(f"no images in {images}")
    missing = [s for s in imgs if mask_stem(s) not in msks]
    if missing:
        raise DatasetError(f"{len(missing)} image(s) in {images} have no mask in {masks}, e.g. {missing[:3]}")
    return [(s, imgs[s], msks[mask_stem(s)]) for s in imgs]


def _read_gray(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        if im.mode == "P":
            return np.array(im)  # palette indices are the object ids
        return np.array(im.convert("RGB"))[:, :, 0] if im.mode not in ("L", "I", "I;16", "1") else np.array(im)


def _with_ignore_band(path: Path):
    """GrabCut / Berkeley masks: 255 object, 128 unknown (ignored), 0 background; channel 0."""
    def load():
        m = _read_gray(path)
        return m > 128, m == 128
    return load


def _merged_objects(path: Path):
    """DAVIS / COCO_MVal: every non-zero value is foreground (objects merged), no ignore pixels."""
    def load():
        return _read_gray(path) > 0, None
    return load


def grabcut(root: Path) -> Iterator[Sample]:
    for stem, img, msk in _pair(root / "data_GT", root / "boundary_GT"):
        yield Sample(stem, img, _with_ignore_band(msk))


def berkeley(root: Path) -> Iterator[Sample]:
    for stem, img, msk in _pair(root / "images", root / "masks"):
        yield Sample(stem, img, _with_ignore_band(msk))


def davis(root: Path) -> Iterator[Sample]:
    for stem, img, msk in _pair(root / "img", root / "gt"):
        yield Sample(stem, img, _merged_objects(msk))


def coco_mval(root: Path) -> Iterator[Sample]:
    yield from davis(root)


def _instances(image: Path, mask: Path, ids: List[int], stem: str, ignore_value: Optional[int] = 255) -> Iterator[Sample]:
    """One sample per object id of an instance mask; ``ignore_value`` pixels (VOC's void) are ignored."""
    for obj in ids:
        def load(obj=obj):
            m = _read_gray(mask)
            return m == obj, (m == ignore_value) if ignore_value is not None else None
        yield Sample(f"{stem}#{obj}", image, load)


def pascal_voc(root: Path, split: str = "val") -> Iterator[Sample]:
    """``JPEGImages/`` + ``SegmentationObject/`` (instance ids, 255 = void, ignored), one sample per instance
    of the ``ImageSets/Segmentation/<split>.txt`` images."""
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise DatasetError(f"missing {listing}")
    for stem in listing.read_text().split():
        img, msk = root / "JPEGImages" / f"{stem}.jpg", root / "SegmentationObject" / f"{stem}.png"
        for p in (img, msk):
            if not p.is_file():
                raise DatasetError(f"PascalVOC {split} lists {stem} but {p} is missing")
        ids = sorted(int(v) for v in np.unique(_read_gray(msk)) if v not in (0, 255))
        yield from _instances(img, msk, ids, stem)


def sbd(root: Path, split: str = "val") -> Iterator[Sample]:
    """SBD: ``img/*.jpg`` + ``inst/*.mat`` (MATLAB ``GTinst.Segmentation``), one sample per instance."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # scipy is not a dependency of the app
        raise DatasetError("reading SBD .mat files needs scipy (pip install scipy)") from exc
    listing = root / f"{split}.txt"
    if not listing.is_file():
        raise DatasetError(f"missing {listing}")
    for stem in listing.read_text().split():
        img, mat = root / "img" / f"{stem}.jpg", root / "inst" / f"{stem}.mat"
        if not img.is_file() or not mat.is_file():
            raise DatasetError(f"SBD {split} lists {stem} but {img} or {mat} is missing")
        inst = loadmat(str(mat))["GTinst"][0][0][0].astype(np.int32)
        for obj in sorted(int(v) for v in np.unique(inst) if v > 0):
            yield Sample(f"{stem}#{obj}", img, lambda inst=inst, obj=obj: (inst == obj, None))


def images_and_masks(root: Path, images: str = "images", masks: str = "masks") -> Iterator[Sample]:
    """Any folder pair with one mask per image (same stem; ``*_mask``/``*_gt`` suffixes accepted); a mask
    with several non-zero values gives one sample per value, 0/255 masks one sample."""
    msks = _files(root / masks)

    def stem_of(s: str) -> str:
        for cand in (s, f"{s}_mask", f"{s}_gt", f"{s}_GT"):
            if cand in msks:
                return cand
        return s

    for stem, img, msk in _pair(root / images, root / masks, stem_of):
        values = [int(v) for v in np.unique(_read_gray(msk)) if v != 0]
        if values in ([255], [1]) or len(values) <= 1:
            yield Sample(stem, img, _merged_objects(msk))
        else:
            yield from _instances(img, msk, values, stem, ignore_value=None)


def coco(annotations: Path, images: Path) -> Iterator[Sample]:
    """Any COCO instances JSON: one sample per non-crowd annotation; ``iscrowd`` regions of the same image
    are ignored pixels."""
    try:
        data = json.loads(Path(annotations).read_text())
        imgs = {im["id"]: im for im in data["images"]}
        anns = data["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{annotations}: not a COCO instances file ({exc})") from exc

    def decode(ann, h, w):
        try:
            return decode_segmentation(ann.get("segmentation"), h, w)
        except ValueError as exc:
            raise DatasetError(f"{annotations}: annotation {ann.get('id')}: {exc}") from None

    crowd: Dict[int, list] = {}
    for a in anns:
        if a.get("iscrowd"):
            crowd.setdefault(a["image_id"], []).append(a)
    for a in anns:
        if a.get("iscrowd"):
            continue
        im = imgs.get(a.get("image_id"))
        if im is None:
            raise DatasetError(f"{annotations}: annotation {a.get('id')} names unknown image_id {a.get('image_id')}")
        path = Path(images) / im["file_name"]
        if not path.is_file():
            raise DatasetError(f"{annotations}: image {im['file_name']} of annotation {a.get('id')} not in {images}")

        def load(a=a, im=im):
            h, w = im["height"], im["width"]
            ignore = None
            for c in crowd.get(im["id"], []):
                m = decode(c, h, w)
                ignore = m if ignore is None else ignore | m
            return decode(a, h, w), ignore
        yield Sample(f"{Path(im['file_name']).stem}#{a['id']}", path, load)


def hqseg44k(root: Path) -> Iterator[Sample]:
    """HQSeg-44K validation as SegNext lays it out: ``<subset>/im/*.jpg`` + ``<subset>/gt/*.png``."""
    subsets = sorted(p for p in Path(root).iterdir() if (p / "im").is_dir()) if Path(root).is_dir() else []
    if not subsets:
        raise DatasetError(f"no <subset>/im folders under {root}")
    for sub in subsets:
        for stem, img, msk in _pair(sub / "im", sub / "gt"):
            yield Sample(f"{sub.name}/{stem}", img, lambda msk=msk: (_read_gray(msk) > 127, None))


def saic_is(root: Path) -> Iterator[Sample]:
    """SAIC-IS (TETRIS) test set: ``images/*`` + ``masks/<stem>*.png`` (one 0/255 PNG per object)."""
    images, masks = _files(root / "images"), Path(root) / "masks"
    if not masks.is_dir():
        raise DatasetError(f"missing folder {masks}")
    for stem, img in images.items():
        found = sorted(masks.glob(f"{stem}*.png"))
        if not found:
            raise DatasetError(f"SAIC-IS image {img.name} has no mask in {masks}")
        for m in found:
            yield Sample(m.stem, img, lambda m=m: (_read_gray(m) > 127, None))


DATASETS = {
    "grabcut": grabcut, "berkeley": berkeley, "davis": davis, "coco_mval": coco_mval, "pascalvoc": pascal_voc,
    "sbd": sbd, "hqseg44k": hqseg44k, "saic_is": saic_is, "folder": images_and_masks,
    "ecssd": lambda root: images_and_masks(Path(root), "images", "ground_truth_mask"),
}


def open_dataset(name: str, root, annotations=None) -> Iterator[Sample]:
    """Samples of dataset ``name`` under ``root``; ``name="coco"`` reads ``annotations`` (a COCO JSON) with
    images under ``root``."""
    key = name.lower().replace("-", "_")
    if key == "coco":
        if annotations is None:
            raise DatasetError("dataset coco needs --annotations FILE.json (images under --root)")
        return coco(Path(annotations), Path(root))
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: coco, {', '.join(sorted(DATASETS))}")
    if not Path(root).is_dir():
        raise DatasetError(f"dataset root {root} is not a folder")
    return DATASETS[key](Path(root))
