"""Training data: objects from an images + masks folder (e.g. ECSSD), any COCO JSON, or the accepted
annotations of a storage project, a deterministic train / held-out split, and augmentation.

A ``TrainingObject`` is one object: its image, its mask and the union of the image's other objects (where
the negative-click sampler may put negatives). Images are loaded lazily.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from iseg_core.eval.datasets import DatasetError, Sample, coco, images_and_masks
from iseg_core.image import load_image

Loaded = Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]  # image uint8 HxWx3, mask bool HxW, others or None
DEFAULT_HELD_OUT = 0.2  # fraction of images kept out of training to check the result (CLI and app alike)


@dataclass(frozen=True)
class TrainingObject:
    name: str
    load: Callable[[], Loaded]
    image_key: str = ""  # identifies the image (objects of one image share its embedding); default: the name

    @property
    def key(self) -> str:
        return self.image_key or self.name


def _from_samples(samples, source: str) -> List[TrainingObject]:
    objects = [TrainingObject(s.name, _sample_loader(s)) for s in samples]
    if not objects:
        raise DatasetError(f"{source}: no objects to train on")
    return objects


def _sample_loader(s: Sample) -> Callable[[], Loaded]:
    def load() -> Loaded:
        image, gt, _ = s.load()  # sizes checked there; a mismatch names the files
        if not gt.any():
            raise DatasetError(f"{s.name}: the mask is empty")
        return image, gt, None

    return load


def folder_objects(root, images: str = "images", masks: str = "masks") -> List[TrainingObject]:
    """Objects of an images + masks folder pair (``folder_objects(".../ECSSD", masks="ground_truth_mask")``)."""
    root = Path(root)
    if not (root / images).is_dir() or not (root / masks).is_dir():
        raise DatasetError(f"{root} needs the folders {images}/ and {masks}/")
    return _from_samples(images_and_masks(root, images, masks), str(root))


def coco_objects(annotations, images) -> List[TrainingObject]:
    return _from_samples(coco(Path(annotations), Path(images)), str(annotations))


def store_objects(store, project) -> List[TrainingObject]:
    """The accepted annotations of a storage project (images marked done), each with the union of the other
    objects of its image."""
    objects = []
    for img in store.images_of(project):
        if not img.done:
            continue
        anns = store.annotations(img.id)
        for k, ann in enumerate(anns):
            def load(img=img, anns=anns, k=k) -> Loaded:
                loaded = load_image(img.path)
                masks = [a.mask() for a in anns]
                if loaded.rgb.shape[:2] != masks[k].shape:
                    raise DatasetError(f"{img.file_name}: the image is {loaded.rgb.shape[1]}x{loaded.rgb.shape[0]}, "
                                       f"its masks {masks[k].shape[1]}x{masks[k].shape[0]}")
                others = np.zeros_like(masks[k])
                for j, m in enumerate(masks):
                    if j != k:
                        others |= m
                return loaded.rgb, masks[k], others

            objects.append(TrainingObject(f"{img.file_name}#{ann.id}", load, img.sha256))
    if not objects:
        raise DatasetError(f"project {project.name!r} has no accepted annotations yet: accept some images first")
    return objects


def split(objects: Sequence[TrainingObject], held_out: float = DEFAULT_HELD_OUT) -> Tuple[List[TrainingObject], List[TrainingObject]]:
    """(train, held-out) by a hash of each name: stable when objects are added, the same on every machine."""
    train, held = [], []
    for o in objects:
        h = int(hashlib.sha1(o.name.split("#")[0].encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (held if h < held_out else train).append(o)
    if not train or (held_out > 0 and not held):
        raise DatasetError(f"{len(objects)} object(s) are too few for a held-out fraction of {held_out}")
    return train, held


@dataclass(frozen=True)
class AugmentConfig:
    scale: Tuple[float, float] = (0.75, 1.4)
    flip: bool = True
    crop: int = 320  # the augmented image's side is at most this (a random crop that keeps the object)
    colour: float = 0.2  # brightness / contrast / saturation jitter, +- this fraction


def augment(image: np.ndarray, mask: np.ndarray, others: Optional[np.ndarray], rng: np.random.Generator,
            config: AugmentConfig = AugmentConfig()) -> Loaded:
    """Random scale, horizontal flip, crop (keeping part of the object) and colour jitter; the masks follow
    the image exactly."""
    h, w = mask.shape
    s = rng.uniform(*config.scale) * (config.crop / max(h, w))  # long side ~ crop x scale, then cropped
    nh, nw = max(8, round(h * s)), max(8, round(w * s))
    image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    mask = cv2.resize(mask.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST) > 0
    if others is not None:
        others = cv2.resize(others.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST) > 0
    if config.flip and rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
        others = others[:, ::-1] if others is not None else None
    ch, cw = min(nh, config.crop), min(nw, config.crop)
    if (ch, cw) != (nh, nw) and mask.any():
        ys, xs = np.nonzero(mask)
        k = int(rng.integers(xs.size))  # the crop contains this object pixel
        y0 = int(rng.integers(max(0, ys[k] - ch + 1), min(ys[k], nh - ch) + 1))
        x0 = int(rng.integers(max(0, xs[k] - cw + 1), min(xs[k], nw - cw) + 1))
        image, mask = image[y0:y0 + ch, x0:x0 + cw], mask[y0:y0 + ch, x0:x0 + cw]
        others = others[y0:y0 + ch, x0:x0 + cw] if others is not None else None
    if config.colour > 0:
        img = image.astype(np.float32)
        grey = img.mean(axis=2, keepdims=True)
        sat, con, bri = rng.uniform(1 - config.colour, 1 + config.colour, 3)
        img = grey + (img - grey) * sat
        img = (img - img.mean()) * con + img.mean() * bri
        image = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask), (
        np.ascontiguousarray(others) if others is not None else None)
