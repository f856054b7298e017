"""Content-addressed image files: ``<root>/<sha[:2]>/<sha[2:4]>/<sha><ext>``, written atomically.

The same bytes added twice are one file. A file is checked (it must decode) before it is stored, and is
written to a temporary name, flushed to disk and renamed, so a crash or a full disk never leaves a half file
under a real name.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from PIL import Image, ImageOps

from iseg_core.errors import ImageError
from iseg_core.image import SUFFIX_OF_FORMAT, load_image

from .errors import StorageError

THUMBNAIL = 160  # px, long side of the image browser's thumbnails


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    path: str  # relative to the store's root
    width: int  # after EXIF orientation, as masks are drawn
    height: int


class ImageStore:
    def __init__(self, root: Union[str, os.PathLike]):
        self.root = Path(root)

    def put(self, data: Union[bytes, str, os.PathLike], name: str = "") -> StoredFile:
        """Store an image file's bytes (or the file at a path). Raises StorageError for files that are not
        images (naming ``name``) and for a full disk (nothing is left behind)."""
        if not isinstance(data, (bytes, bytearray)):
            name = name or os.fspath(data)
            try:
                data = Path(data).read_bytes()
            except OSError as e:
                raise StorageError(f"cannot read {name}: {e.strerror or e}") from None
        try:
            loaded = load_image(bytes(data), max_pixels=4_000_000)  # decode check; only the sizes are kept
        except ImageError as e:
            raise StorageError(f"{name or 'upload'} is not a usable image: {str(e).replace('image bytes', 'it')}") from None
        with Image.open(io.BytesIO(data)) as im:
            ext = SUFFIX_OF_FORMAT.get(im.format or "", ".img")
        sha = hashlib.sha256(data).hexdigest()
        rel = f"{sha[:2]}/{sha[2:4]}/{sha}{ext}"
        target = self.root / rel
        if not target.exists():
            self._write(target, bytes(data), name)
        h, w = loaded.source_size
        return StoredFile(sha, rel, w, h)

    def _write(self, target: Path, data: bytes, name: str) -> None:
        tmp = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            tmp = None
        except OSError as e:
            why = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
            raise StorageError(f"cannot store {name or 'image'} under {self.root}: {why}; nothing was added") from None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def path(self, rel: str) -> Path:
        return self.root / rel

    def thumbnail(self, rel: str, size: int = THUMBNAIL) -> Path:
        """A small JPEG of the stored image ``rel`` (long side ``size``), made on first use and kept beside the
        images (``<root>/thumbs/``, named by content), so a page of the image browser reads a few KB per image."""
        name = Path(rel).name.split(".")[0]
        target = self.root / "thumbs" / f"{name}-{size}.jpg"
        if target.is_file():
            return target
        try:
            with Image.open(self.root / rel) as im:
                im = ImageOps.exif_transpose(im)
                im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
                im = im.convert("RGB")
                im.thumbnail((size, size), Image.Resampling.BILINEAR)
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=85)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise StorageError(f"cannot make a thumbnail of {rel}: {e}") from None
        self._write(target, buf.getvalue(), f"the thumbnail of {rel}")
        return target
