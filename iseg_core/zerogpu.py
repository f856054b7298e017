"""ZeroGPU (Hugging Face Spaces): a GPU is lent only for the duration of a call to a function decorated with
``spaces.GPU``, which runs in a separate worker process; what it returns is pickled back to the main process.

iseg fits that shape: only the image encoder needs the GPU. :func:`offload_encoder` moves a model's image
encoder to the GPU device and wraps ``encode`` with the decorator; the embedding comes back as a CPU tensor,
is cached by the main process's :class:`EmbeddingCache` like any other, and every click is decoded on the CPU
without asking for a GPU again. The app calls :func:`maybe_offload` on every model it loads: a no-op unless
``SPACES_ZERO_GPU`` is set (ZeroGPU Spaces set it) and the ``spaces`` package is installed.
"""
from __future__ import annotations

import functools
import importlib
import os
from typing import Callable, Optional


from .models.base import ImageEmbedding, Segmenter


def offload_encoder(model: Segmenter, gpu: Callable[[Callable], Callable], device: str = "cuda") -> Segmenter:
    """Run ``model``'s image encoder on ``device`` inside ``gpu`` (``spaces.GPU`` or ``spaces.GPU(duration=...)``);
    the rest of the model stays where it is. Models without an image encoder (classical) are returned as is."""
    if model.image_encoder is None:
        return model
    model.image_encoder.to(device)
    encode = model.encode

    @gpu
    def encode_on_gpu(image):
        emb = encode(image)
        # only CPU tensors cross back to the main process
        return ImageEmbedding(emb.model_key, emb.original_size, emb.data.to("cpu"), emb.nbytes, emb.extra)

    @functools.wraps(encode)
    def encode_then_move(image) -> ImageEmbedding:
        emb = encode_on_gpu(image)
        emb.data = emb.data.to(model.device)
        return emb

    model.encode = encode_then_move
    model.zerogpu = True
    return model


def maybe_offload(model: Segmenter, duration: Optional[int] = None) -> Segmenter:
    """:func:`offload_encoder` with ``spaces.GPU`` on a ZeroGPU Space; elsewhere ``model`` unchanged."""
    if not os.environ.get("SPACES_ZERO_GPU"):
        return model
    try:
        spaces = importlib.import_module("spaces")
    except ImportError:
        return model
    gpu = spaces.GPU(duration=duration) if duration else spaces.GPU
    return offload_encoder(model, gpu, "cuda")


__all__ = ["maybe_offload", "offload_encoder"]
