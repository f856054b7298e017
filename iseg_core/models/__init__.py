"""The model registry: ``load_model(name, checkpoint=None, device=None, dtype=None)``.

``checkpoint`` is ``None`` (random weights, for tests and training from scratch), a file path, or a name
resolved by :mod:`iseg_core.weights` (``"hub"`` = the default known checkpoint of that model).
"""
from __future__ import annotations

import hashlib
import os
from typing import Callable, Dict, Optional, Union

import torch

from ..errors import CheckpointError, UnknownModelError
from .base import Decoded, ImageEmbedding, Segmenter

ModelFactory = Callable[..., Segmenter]
_REGISTRY: Dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    def deco(factory: ModelFactory) -> ModelFactory:
        _REGISTRY[name] = factory
        return factory

    return deco


def list_models() -> list:
    return sorted(_REGISTRY)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def file_fingerprint(path: Union[str, os.PathLike]) -> str:
    """Cheap identity of a weights file (name, size, mtime) for cache keys; not a content hash."""
    st = os.stat(path)
    raw = f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"
    return f"{os.path.basename(path)}:{hashlib.blake2b(raw.encode(), digest_size=6).hexdigest()}"


def load_model(
    name: str,
    checkpoint: Optional[Union[str, os.PathLike]] = None,
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[torch.dtype] = None,
) -> Segmenter:
    """Build the model registered as ``name``.

    Args:
        checkpoint: ``None`` for random weights; a path to a weights file; or ``"hub"`` / a name known to
            :mod:`iseg_core.weights`, resolved from ``weights/`` or downloaded from the Hugging Face Hub.
        device: default CUDA when available, else CPU.
        dtype: ``torch.bfloat16`` runs the heavy image encoder in bfloat16 (fast on CPUs with AVX-512
            BF16 and on GPUs); prompts are always decoded in float32.
    """
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name](
        name=name,
        checkpoint=checkpoint,
        device=torch.device(device) if device is not None else default_device(),
        dtype=dtype or torch.float32,
    )


def _build_sam(name, checkpoint, device, dtype):
    from . import sam
    from .sam.checkpoint import load_checkpoint
    from .. import weights

    version = path = encoder_version = None
    if checkpoint is not None:  # resolved first: a missing file fails before the model is built
        path, version = weights.resolve_checkpoint(name, checkpoint)
        state, meta = load_checkpoint(path)
        trained_as = meta.get("model")
        if trained_as and trained_as != name:
            raise CheckpointError(f"checkpoint {path} was trained as {trained_as!r}, not {name!r}: "
                                  f"load it with load_model({trained_as!r}, ...)")
        version = version or meta.get("version")
        encoder_version = meta.get("encoder_version")
    network = sam.SamNetwork(sam.SAM_CONFIGS[name])
    if path is not None:
        network.load_official_state_dict(state, name, str(path))
        version = version or file_fingerprint(path)
    return sam.SamSegmenter(name, network, version=version, device=device, encoder_dtype=dtype,
                            encoder_version=encoder_version)


@register_model("classical")
def _build_classical(name, checkpoint, device, dtype):
    from .classical import ClassicalSegmenter

    if checkpoint is not None:
        raise UnknownModelError("the classical model has no weights: leave checkpoint unset")
    return ClassicalSegmenter(name)


for _name in ("sam_vit_b", "sam_vit_l", "sam_vit_h", "sam_mini"):
    register_model(_name)(_build_sam)

__all__ = ["Decoded", "ImageEmbedding", "Segmenter", "list_models", "load_model", "register_model"]
