"""A thread-safe LRU cache of image embeddings, bounded in bytes, shared by every session of a process."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Hashable, Optional

from .models.base import ImageEmbedding

DEFAULT_CACHE_BYTES = 1 << 30  # 1 GiB: 256 SAM embeddings of 4 MiB


class EmbeddingCache:
    """Maps ``(model cache_key, image hash)`` to an :class:`ImageEmbedding`.

    Embeddings stay on the device the model produced them on (GPU memory when there is one). When the
    total ``nbytes`` would exceed ``max_bytes`` the least recently used entries are dropped; an entry
    larger than the whole budget is not stored at all.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES, store=None):
        """``store``: an :class:`iseg_core.embedding_store.EmbeddingStore` behind this cache (every Predictor
        using the cache reads a miss from it and writes what it encodes into it), or None."""
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.store = store
        self._items: "OrderedDict[Hashable, ImageEmbedding]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Optional[ImageEmbedding]:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: Hashable, embedding: ImageEmbedding) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if embedding.nbytes > self.max_bytes:
                return
            self._items[key] = embedding
            self._bytes += embedding.nbytes
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
