"""Reading checkpoint files of any family: a state dict of tensors, flat or wrapped, with the ``meta`` dict that
files written by ``training.finetune`` carry (see :class:`iseg_core.models.base.TrainableSegmenter`).
Only tensors and plain containers are unpickled (``weights_only``).
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from typing import Dict, Mapping, Optional, Tuple

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


class ForeignObject:
    """Stands in for an object of the publisher's own code found in a checkpoint's pickled config (SimpleClick's
    trainer pickles its loss module there): it is never imported or run; its pickled attributes are kept."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        self.args = args  # e.g. an enum member's value (SAIC-IS pickles its IType members)

    def __repr__(self) -> str:
        return f"<foreign {self.qualname}>"


_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL ([\w.]+) was not an allowed global")
_MAX_FOREIGN = 32


def read_checkpoint_object(path: str | os.PathLike):
    """Whatever the file holds, unpickled safely (``weights_only``), or a CheckpointError that says why not.
    Classes and functions of the publisher's own code (not torch's) in a pickled config are read as inert
    :class:`ForeignObject` stand-ins: nothing from the file is imported or called."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    foreign: list = []
    while True:
        try:
            with torch.serialization.safe_globals(foreign):
                return torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
            found = _UNSUPPORTED.search(str(exc))
            if found and not found.group(1).startswith(("torch.", "builtins.")) and len(foreign) < _MAX_FOREIGN:
                qualname = found.group(1)
                foreign.append((type(qualname.rsplit(".", 1)[-1], (ForeignObject,), {"qualname": qualname}), qualname))
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"checkpoint {path} is not a readable PyTorch file (corrupt or truncated?): {first}") from None


def split_checkpoint(obj, source) -> Tuple[Dict[str, torch.Tensor], dict]:
    """(state dict, meta) of a loaded checkpoint object: a flat state dict, or one wrapped as ``{"model": ...}``
    or ``{"state_dict": ...}`` (with ``{"meta": ...}`` beside it in files written by ``training.finetune``; a
    ``{"config": ...}`` beside it, as RITM-lineage trainers write, lands in meta as ``publisher_config``)."""
    meta: dict = {}
    if isinstance(obj, Mapping):
        if isinstance(obj.get("meta"), Mapping):
            meta = dict(obj["meta"])
        if isinstance(obj.get("config"), Mapping):  # RITM-lineage trainers save their model's serialized config
            meta["publisher_config"] = dict(obj["config"])
        for wrapper in ("model", "state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {os.fspath(source)} does not hold a state dict of tensors")
    return dict(obj), meta


def _listing(keys, limit: int = 8) -> str:
    """``(image_encoder 160, mask_decoder 120) a, b, c ... and N more``: counts per part, then names."""
    keys = sorted(keys)
    parts: Dict[str, int] = {}
    for k in keys:
        parts[k.split(".")[0]] = parts.get(k.split(".")[0], 0) + 1
    counts = ", ".join(f"{p} {n}" for p, n in parts.items())
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"({counts}) " + ", ".join(keys[:limit]) + more


def check_state_dict(expected: Mapping[str, torch.Size], given: Mapping[str, torch.Tensor], model_name: str,
                     source: str, found: Optional[str] = None) -> None:
    """Raise CheckpointError naming missing, unexpected and wrongly shaped keys; ``found`` is the architecture
    the file looks like (e.g. ``"sam_vit_l (embed 1024, 24 blocks)"``), named when it is not ``model_name``."""
    missing = set(expected) - set(given)
    unexpected = set(given) - set(expected)
    wrong = {
        k: (tuple(given[k].shape), tuple(expected[k]))
        for k in set(expected) & set(given)
        if tuple(given[k].shape) != tuple(expected[k])
    }
    if not (missing or unexpected or wrong):
        return
    lines = [f"checkpoint {source} does not fit {model_name}:"]
    if found and not found.startswith(model_name + " "):
        lines.append(f"  it looks like {found}; load it with that model name")
    if missing:
        lines.append(f"  {len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if wrong:
        shown = [f"{k} {got} (expected {exp})" for k, (got, exp) in sorted(wrong.items())[:8]]
        more = f" ... and {len(wrong) - 8} more" if len(wrong) > 8 else ""
        lines.append(f"  {len(wrong)} wrongly shaped keys: " + "; ".join(shown) + more)
    raise CheckpointError("\n".join(lines))
