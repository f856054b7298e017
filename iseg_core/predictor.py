"""``Predictor``: encode an image once, then answer prompts in tens of milliseconds."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .cache import EmbeddingCache
from .errors import IsegError, PromptError
from .image import DEFAULT_MAX_PIXELS, check_image
from .models.base import ImageEmbedding, Segmenter
from .prompts import Prompt, validate_prompts


def image_hash(image: np.ndarray) -> str:
    """Content hash of an image array (shape and pixels), used as its cache identity."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


def _write_through(store, image_key: str, embedding: ImageEmbedding) -> None:
    """Keep a fresh embedding in the shared store too; a store that cannot take it costs a log line, not the
    click (the classical engine's embeddings are not storable: they cost milliseconds to make)."""
    from .embedding_store import LOG, NotStorable

    try:
        store.put(image_key, embedding)
    except NotStorable:
        pass
    except (OSError, IsegError) as e:
        LOG.warning("embedding store %s: could not keep %s: %s", store.url, image_key, e)


@dataclass
class Prediction:
    mask: np.ndarray  # bool (H, W): original image size unless mask_size was asked for
    logits: torch.Tensor  # low-res logits in the model's frame; pass back as prev_logits
    score: float  # the model's own quality estimate (SAM: predicted IoU)
    soft: Optional[np.ndarray] = None  # float32 logits at the mask size, only when predict(soft=True)


class Predictor:
    """One image at a time for one model; embeddings are shared through an :class:`EmbeddingCache`.

    >>> predictor = Predictor(load_model("sam_vit_b", checkpoint="hub"))
    >>> predictor.set_image(rgb)                       # slow: the image encoder, once per image
    >>> p = predictor.predict([Click(120, 80)])         # fast: prompt decoder only
    >>> p = predictor.predict([Click(120, 80), Click(40, 60, positive=False)], prev_logits=p.logits)
    """

    def __init__(self, model: Segmenter, cache: Optional[EmbeddingCache] = None, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.model = model
        self.cache = cache if cache is not None else EmbeddingCache()
        self.max_pixels = max_pixels
        self._embedding: Optional[ImageEmbedding] = None
        self.source = ""  # where the last set_image's embedding came from: memory, store or encoded

    def set_image(self, image: np.ndarray, image_id: Optional[str] = None) -> ImageEmbedding:
        """Make ``image`` (``uint8`` RGB ``(H, W, 3)``) current, encoding it unless cached.

        ``image_id`` is a caller-known content id (e.g. the storage hash) that spares hashing the pixels.
        """
        check_image(image, self.max_pixels)
        key = (self.model.cache_key, image_id or image_hash(image))
        embedding, self.source = self.cache.get(key), "memory"
        if embedding is None:
            store = self.cache.store if ":" not in key[1] else None  # whole images only, not ZoomIn crops
            embedding, self.source = (store.get(*key, device=self.model.device) if store is not None else None), "store"
            if embedding is None:
                embedding, self.source = self.model.encode(image), "encoded"
                if store is not None:
                    _write_through(store, key[1], embedding)
            self.cache.put(key, embedding)
        self._embedding = embedding
        return embedding

    @property
    def image_size(self) -> Tuple[int, int]:
        return self._current().original_size

    def _current(self) -> ImageEmbedding:
        if self._embedding is None:
            raise IsegError("no image is set: call set_image(image) before predict()")
        return self._embedding

    def predict(
        self,
        prompts: Union[Prompt, Sequence[Prompt]],
        prev_logits: Optional[torch.Tensor] = None,
        multimask: Optional[bool] = None,
        threshold: Optional[float] = None,
        mask_size: Optional[Tuple[int, int]] = None,
        soft: bool = False,
    ) -> Prediction:
        """Segment the current image from ``prompts`` (image pixel coordinates).

        Args:
            prev_logits: ``Prediction.logits`` of the previous step, fed back as a mask prompt.
            multimask: ``None`` = the model decides (SAM: three candidates for a lone click).
            threshold: logit threshold of the returned mask; default the model family's own
                (``Segmenter.default_threshold``: RITM's lineage probability 0.49, SAM's logit 0).
            mask_size: ``(H, W)`` of the returned mask, e.g. a display size; default the image size.
            soft: also return the upsampled float logits (``Prediction.soft``), e.g. to average test-time
                augmentations; costs one float buffer of the mask size.
        """
        embedding = self._current()
        prompts = validate_prompts(prompts, embedding.original_size)
        if not prompts and prev_logits is None:
            raise PromptError("nothing to segment from: give at least one prompt or previous logits")
        prev = None
        if prev_logits is not None:
            if isinstance(prev_logits, np.ndarray):
                prev_logits = torch.from_numpy(prev_logits)
            if not isinstance(prev_logits, torch.Tensor):
                raise PromptError(f"prev_logits must be a tensor or array, got {type(prev_logits).__name__}")
            prev = self.model.check_logits(prev_logits)
        decoded = self.model.decode(embedding, prompts, prev, multimask)
        full = self.model.upsample_logits(embedding, decoded.logits, mask_size)
        if threshold is None:
            threshold = self.model.default_threshold
        return Prediction(mask=full > threshold, logits=decoded.logits, score=decoded.score, soft=full if soft else None)

    def mask_from_logits(self, logits: torch.Tensor, size: Optional[Tuple[int, int]] = None,
                         threshold: Optional[float] = None) -> np.ndarray:
        """The mask of ``Prediction.logits`` (of the current image) at ``size`` (default the image size): a
        prediction made at a display size gives its full-resolution mask only when it is needed."""
        if threshold is None:
            threshold = self.model.default_threshold
        return self.model.upsample_logits(self._current(), logits, size) > threshold
