"""Reading checkpoint files of any family: a state dict of tensors, flat or wrapped, with the ``meta`` dict that
files written by ``training.finetune`` carry (see :class:`iseg_core.models.base.TrainableSegmenter`).
Only tensors and plain containers are unpickled (``weights_only``).
"""
from __future__ import annotations

import os
import pickle
import zipfile
from typing import Dict, Mapping, Tuple

import torch

from ..errors import CheckpointError


def read_checkpoint(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """Load a flat ``{key: tensor}`` state dict from a ``.pth``/``.pt`` file (or a wrapped one:
    ``{"model": ...}`` or ``{"state_dict": ...}``). Only tensors are unpickled (``weights_only``)."""
    return load_checkpoint(path)[0]


def load_checkpoint(path: str | os.PathLike) -> Tuple[Dict[str, torch.Tensor], dict]:
    """:func:`read_checkpoint` plus the file's metadata: ``{}`` for SAM's own files, the ``meta`` dict of files
    written by ``training.finetune`` (model name, base model, data, steps, metrics, encoder version)."""
    return split_checkpoint(read_checkpoint_object(path), path)


def read_checkpoint_object(path: str | os.PathLike):
    """Whatever the file holds, unpickled safely (``weights_only``), or a CheckpointError that says why not."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch file (corrupt or truncated?): {first}") from None


def split_checkpoint(obj, source) -> Tuple[Dict[str, torch.Tensor], dict]:
    """(state dict, meta) of a loaded checkpoint object: a flat state dict, or one wrapped as ``{"model": ...}``
    or ``{"state_dict": ...}`` (with ``{"meta": ...}`` beside it in files written by ``training.finetune``)."""
    meta: dict = {}
    if isinstance(obj, Mapping):
        if isinstance(obj.get("meta"), Mapping):
            meta = dict(obj["meta"])
        for wrapper in ("model", "state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {os.fspath(source)} does not hold a state dict of tensors")
    return dict(obj), meta
