"""Image checks and decoding. Arrays handed to models are ``uint8`` RGB, shape ``(H, W, 3)``."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

MIN_SIDE = 8
# 64 MP covers every phone and most DSLR photos; beyond it a full-size mask alone is 64 MB per object.
DEFAULT_MAX_PIXELS = 64_000_000
# Files whose header claims more than this are not decoded at full size at all.
MAX_DECODE_PIXELS = 400_000_000
_EXIF_ORIENTATION = 0x0112
# File suffix of each image format we store and read; IMAGE_SUFFIXES is what folder imports and readers pick up.
SUFFIX_OF_FORMAT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif"}
IMAGE_SUFFIXES = frozenset(SUFFIX_OF_FORMAT.values()) | {".jpeg", ".tiff"}
# PIL warns above this and refuses above twice this at open time. Set above our own limits so that our
# checks (with their messages, and reduced JPEG decoding) decide first.
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, 2 * MAX_DECODE_PIXELS)


def check_image(image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Return ``image`` if it is a usable ``uint8`` RGB ``(H, W, 3)`` array, else raise ImageError.

    Nothing is copied or converted: a caller holding a grayscale, RGBA or float image should convert it
    on purpose (see :func:`load_image`), since silently guessing a colour space changes results.
    """
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy uint8 RGB array of shape (H, W, 3), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(
            f"expected an RGB image of shape (H, W, 3), got shape {tuple(image.shape)}; "
            "convert grayscale or RGBA images to RGB first (load_image does, for files)"
        )
    if image.dtype != np.uint8:
        raise ImageError(f"expected dtype uint8 (0-255), got {image.dtype}")
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"image is {w}x{h} pixels; both sides must be at least {MIN_SIDE} pixels")
    if h * w > max_pixels:
        raise ImageError(
            f"image is {w}x{h} ({h * w / 1e6:.0f} MP), above the limit of {max_pixels / 1e6:.0f} MP; "
            "downscale it first (iseg_core.image.fit_pixels or load_image) or raise max_pixels"
        )
    return image


def fit_pixels(image: np.ndarray, max_pixels: int) -> Tuple[np.ndarray, float]:
    """Downscale ``image`` (area interpolation) so that ``H * W <= max_pixels``. Returns (image, scale)."""
    h, w = image.shape[:2]
    if h * w <= max_pixels:
        return image, 1.0
    scale = (max_pixels / (h * w)) ** 0.5
    nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA), nw / w


def oriented_size(im: Image.Image, size: Optional[Tuple[int, int]] = None) -> Tuple[int, int]:
    """(H, W) of an opened image as it is displayed (EXIF orientations 5-8 swap the sides), from ``size``
    ((W, H) as stored; default ``im.size``). For some formats (PNG) reading EXIF decodes the whole image:
    check the stored size first."""
    w, h = size or im.size
    return (w, h) if im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8) else (h, w)


@dataclass
class LoadedImage:
    """A decoded image ready for a model, and what was done to it on the way."""

    rgb: np.ndarray  # uint8 (H, W, 3), after EXIF rotation and any downscale
    source_size: Tuple[int, int]  # (H, W) of the file as stored, after EXIF rotation
    scale: float  # rgb size / source size (1.0 when not downscaled)
    message: str = ""  # set when the image was changed in a way a person should know about


def load_image(
    source: Union[str, os.PathLike, bytes], max_pixels: int = DEFAULT_MAX_PIXELS
) -> LoadedImage:
    """Decode an image file (path or bytes) to RGB, applying EXIF orientation.

    Images above ``max_pixels`` are downscaled (JPEGs are decoded at reduced size directly, so a
    20000x20000 photo never occupies 1.2 GB); the returned ``message`` says so. Raises ImageError for
    files that are not images, are truncated, or claim more than ``MAX_DECODE_PIXELS`` in a format
    that cannot be decoded at reduced size.
    """
    name = "image bytes" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    try:
        fh = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    except OSError as exc:
        raise ImageError(f"cannot open {name}: {exc.strerror or exc}") from None
    with fh:
        try:
            with Image.open(fh) as im:
                # Only the header has been read so far: decide before decoding anything.
                w0, h0 = im.size
                if im.format == "JPEG" and w0 * h0 > max_pixels:
                    side = max(1, int(max(w0, h0) * (max_pixels / (w0 * h0)) ** 0.5))
                    im.draft("RGB", (side, side))  # decodes at 1/2, 1/4 or 1/8 size
                elif w0 * h0 > MAX_DECODE_PIXELS:
                    raise ImageError(
                        f"{name} is {w0}x{h0} ({w0 * h0 / 1e6:.0f} MP); {im.format} files above "
                        f"{MAX_DECODE_PIXELS / 1e6:.0f} MP are not decoded. Downscale it first."
                    )
                source_size = oriented_size(im, (w0, h0))  # the stored size: a draft may have reduced im.size
                im.load()
                rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        except ImageError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{name} is too large to decode: {exc}. Downscale it first.") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"cannot decode {name}: {exc}") from None
    rgb, _ = fit_pixels(rgb, max_pixels)
    scale = rgb.shape[1] / source_size[1]  # against the stored size: JPEG draft may have reduced it already
    message = ""
    if rgb.shape[:2] != source_size:
        message = (
            f"{os.path.basename(name)} is {source_size[1]}x{source_size[0]}; downscaled to "
            f"{rgb.shape[1]}x{rgb.shape[0]} (limit {max_pixels / 1e6:.0f} MP)"
        )
    check_image(rgb, max_pixels=max(max_pixels, rgb.shape[0] * rgb.shape[1]))
    return LoadedImage(rgb=np.ascontiguousarray(rgb), source_size=source_size, scale=scale, message=message)
