"""Image embeddings kept outside a process: written once, read by every process that serves the same model.

An :class:`EmbeddingStore` is a folder (default ``$ISEG_HOME/embeddings``) or any fsspec URL a team shares (a
mounted filesystem, ``s3://bucket/prefix``, ``memory://`` in tests). One entry per (model cache key, image
content key): ``<root>/<cache key>/<key[:2]>/<key>.safetensors``.

Why safetensors: an entry is a handful of arrays (SAM's 256x64x64 map, SAM 2's high-resolution features,
HQ-SAM's early features, a ViT's tokens, InterFormer's four FPN maps) plus a little structure; safetensors
stores arrays with their dtype and shape and nothing executable (a pickle could run code when read), reads
them without a copy, and needs no server (zarr's chunking buys nothing for arrays read whole). The structure
(which array is ``data``, which are ``extra``, dataclass fields, tuples) goes into the file's metadata as JSON.

An entry is checked when read: its format, the model key and image key it was written for, and a blake2b
digest of every array's bytes. A damaged entry (truncated, bits flipped, arrays swapped) or a foreign one
(another model version, another image) is logged, ignored and later overwritten; it is never served.
Entries are written to a temporary name and renamed into place, so a killed writer leaves nothing half
written under an entry's name. Arrays keep their dtype (float32, or bfloat16 from a bf16 encoder): a round
trip is bit-exact.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import numpy as np
import torch

from .errors import IsegError
from .models.base import ImageEmbedding

LOG = logging.getLogger("iseg.embeddings")
FORMAT = "iseg-embedding/1"


class NotStorable(IsegError):
    """An embedding holds something the store does not write (the classical engine's helper objects)."""


def default_store_url() -> str:
    return os.environ.get("ISEG_EMBEDDING_STORE") or str(Path(os.environ.get("ISEG_HOME", "data")) / "embeddings")


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", key)


# -- an embedding as flat arrays + a JSON skeleton ------------------------------------------------------------
def _pack(value: Any, path: str, arrays: Dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        arrays[path] = value.detach().to("cpu").contiguous()
        return {"t": path}
    if isinstance(value, np.ndarray):
        arrays[path] = torch.from_numpy(np.ascontiguousarray(value))
        return {"n": path}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if not cls.__module__.startswith("iseg_core."):
            raise NotStorable(f"{cls.__module__}.{cls.__qualname__} is not one of iseg's types")
        return {"d": f"{cls.__module__}:{cls.__qualname__}",
                "f": {f.name: _pack(getattr(value, f.name), f"{path}.{f.name}", arrays)
                      for f in dataclasses.fields(value)}}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise NotStorable("a dict with keys other than strings")
        return {"m": {k: _pack(v, f"{path}.{k}", arrays) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"l" if isinstance(value, list) else "u": [_pack(v, f"{path}.{i}", arrays)
                                                          for i, v in enumerate(value)]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"v": value}
    if isinstance(value, (np.integer, np.floating)):
        return {"v": value.item()}
    raise NotStorable(f"a {type(value).__name__} cannot be stored")


def _unpack(node: Any, arrays: Dict[str, torch.Tensor], device: torch.device) -> Any:
    if "t" in node:
        return arrays[node["t"]].to(device)
    if "n" in node:
        return arrays[node["n"]].numpy()
    if "d" in node:
        module, _, qualname = node["d"].partition(":")
        if not module.startswith("iseg_core."):
            raise ValueError(f"type {node['d']} is not iseg's")
        cls = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        if not dataclasses.is_dataclass(cls):
            raise ValueError(f"{node['d']} is not a dataclass")
        return cls(**{k: _unpack(v, arrays, device) for k, v in node["f"].items()})
    if "m" in node:
        return {k: _unpack(v, arrays, device) for k, v in node["m"].items()}
    if "l" in node:
        return [_unpack(v, arrays, device) for v in node["l"]]
    if "u" in node:
        return tuple(_unpack(v, arrays, device) for v in node["u"])
    return node["v"]


def _digest(arrays: Dict[str, torch.Tensor]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        t = arrays[name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class EmbeddingStore:
    """Embeddings by (model cache key, image content key) in a folder or an fsspec URL (see the module)."""

    def __init__(self, url: Union[str, os.PathLike, None] = None,
                 on_put: Optional[Callable[[str, str], None]] = None):
        """``on_put(image_key, cache_key)`` hears of every entry written (the database notes it: a project
        knows which images are ready for which model)."""
        import fsspec

        self.on_put = on_put
        self.url = str(url or default_store_url())
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/")
        try:
            self.fs.makedirs(self.root, exist_ok=True)
        except OSError as e:
            raise IsegError(f"the embedding store {self.url} cannot be used: {e}") from e

    def path(self, cache_key: str, image_key: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9]{8,128}", image_key):
            raise IsegError(f"an image key for the embedding store is a content hash, not {image_key!r}")
        return f"{self.root}/{_safe(cache_key)}/{image_key[:2]}/{image_key}.safetensors"

    def claim(self, cache_key: str, image_key: str, stale_after: float = 600.0) -> bool:
        """Take the entry to write it: True for the one job that gets it (another job that asks before it is
        written or released gets False and moves on), so two jobs on one project share the work without
        encoding an image twice. A claim older than ``stale_after`` seconds (its job killed) is taken over.
        Only a local folder has atomic exclusive creation; on other stores every job gets True (an image two
        jobs reach at once is encoded twice, the same bytes written twice)."""
        if "file" not in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)):
            return True
        path = self.path(cache_key, image_key) + ".claim"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    if time.time() - os.path.getmtime(path) > stale_after:
                        os.unlink(path)  # its job is gone: take it over
                        continue
                except FileNotFoundError:
                    continue  # released meanwhile
                return False
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()} {time.time():.0f}\n")
            return True
        return False

    def release(self, cache_key: str, image_key: str) -> None:
        try:
            os.unlink(self.path(cache_key, image_key) + ".claim")
        except (FileNotFoundError, OSError):
            pass

    def has(self, cache_key: str, image_key: str) -> bool:
        return self.fs.exists(self.path(cache_key, image_key))

    def put(self, image_key: str, embedding: ImageEmbedding) -> str:
        """Write ``embedding`` of the image ``image_key`` (written whole, then renamed into place)."""
        from safetensors.torch import save

        arrays: Dict[str, torch.Tensor] = {}
        skeleton = {"data": _pack(embedding.data, "data", arrays), "extra": _pack(embedding.extra, "extra", arrays)}
        meta = {"format": FORMAT, "model_key": embedding.model_key, "image_key": image_key,
                "original_size": json.dumps(list(embedding.original_size)), "nbytes": str(int(embedding.nbytes)),
                "skeleton": json.dumps(skeleton), "digest": _digest(arrays)}
        blob = save(arrays, metadata=meta)
        final = self.path(embedding.model_key, image_key)
        tmp = f"{final}.{secrets.token_hex(6)}.partial"
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        try:
            with self.fs.open(tmp, "wb") as fh:
                fh.write(blob)
            self.fs.mv(tmp, final)
        except BaseException:
            try:
                self.fs.rm(tmp)
            except (OSError, FileNotFoundError):
                pass
            raise
        if self.on_put is not None:
            try:
                self.on_put(image_key, embedding.model_key)
            except Exception as e:  # the entry is there; only the note about it is missing
                LOG.warning("embedding store: %s written, but not noted: %s", final, e)
        return final

    def get(self, cache_key: str, image_key: str, device: Union[str, torch.device] = "cpu"
            ) -> Optional[ImageEmbedding]:
        """The stored embedding, or None when there is none, or it is damaged or foreign (logged)."""
        from safetensors.torch import load

        path = self.path(cache_key, image_key)
        try:
            with self.fs.open(path, "rb") as fh:
                blob = fh.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            LOG.warning("embedding store: cannot read %s: %s", path, e)
            return None
        try:
            arrays = load(blob)
            meta = _metadata(blob)
            problem = self._problem(meta, arrays, cache_key, image_key)
            if problem:
                LOG.warning("embedding store: ignoring %s: %s", path, problem)
                return None
            skeleton = json.loads(meta["skeleton"])
            device = torch.device(device)
            return ImageEmbedding(cache_key, tuple(json.loads(meta["original_size"])),
                                  _unpack(skeleton["data"], arrays, device), int(meta["nbytes"]),
                                  _unpack(skeleton["extra"], arrays, device))
        except Exception as e:  # a damaged file: whatever the reader trips over, it is not served
            LOG.warning("embedding store: ignoring %s: unreadable (%s: %s)", path, type(e).__name__, e)
            return None

    @staticmethod
    def _problem(meta: dict, arrays: Dict[str, torch.Tensor], cache_key: str, image_key: str) -> Optional[str]:
        if meta.get("format") != FORMAT:
            return f"format {meta.get('format')!r}, not {FORMAT}"
        if meta.get("model_key") != cache_key:
            return f"written for {meta.get('model_key')}, not {cache_key}"
        if meta.get("image_key") != image_key:
            return f"written for image {meta.get('image_key')}, not {image_key}"
        if _digest(arrays) != meta.get("digest"):
            return "its arrays do not match their digest (damaged)"
        return None

    def keys(self, cache_key: str) -> set:
        """The image keys stored for ``cache_key``."""
        base = f"{self.root}/{_safe(cache_key)}"
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return set()
        return {p.rsplit("/", 1)[-1][: -len(".safetensors")] for p in found if p.endswith(".safetensors")}


def _metadata(blob: bytes) -> dict:
    """The ``__metadata__`` of a safetensors file held in memory."""
    n = int.from_bytes(blob[:8], "little")
    if n <= 0 or n > len(blob) - 8:
        raise ValueError("header length out of range")
    return json.loads(blob[8:8 + n]).get("__metadata__") or {}
