"""SAM checkpoints: mapping their keys onto our modules and checking a state dict against the architecture
(files are read by :mod:`iseg_core.models.checkpoint`).

Official SAM files are flat state dicts with ``image_encoder.``, ``prompt_encoder.`` and ``mask_decoder.``
prefixes. Our image encoder is timm's ``VisionTransformerSAM``, which names the MLP layers ``fc1/fc2``
where SAM says ``lin1/lin2``; that rename is the only difference, and it lives here.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch

from ..checkpoint import check_state_dict

# Constants of the model, not weights: some exporters save them, SAM's own files do not.
IGNORED_KEYS = {"pixel_mean", "pixel_std"}
ENCODER = "image_encoder."


def official_to_module(key: str) -> str:
    if key.startswith(ENCODER):
        return key.replace("mlp.lin1.", "mlp.fc1.").replace("mlp.lin2.", "mlp.fc2.")
    return key


def module_to_official(key: str) -> str:
    if key.startswith(ENCODER):
        return key.replace("mlp.fc1.", "mlp.lin1.").replace("mlp.fc2.", "mlp.lin2.")
    return key


def describe_sam_architecture(state: Mapping[str, torch.Tensor]) -> Optional[str]:
    """Guess which SAM variant a state dict belongs to, e.g. ``"sam_vit_l (embed 1024, 24 blocks)"``."""
    w = state.get("image_encoder.patch_embed.proj.weight")
    if w is None or w.ndim != 4:
        return None
    dim = w.shape[0]
    blocks = {k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")}
    known = {(768, 12): "sam_vit_b", (1024, 24): "sam_vit_l", (1280, 32): "sam_vit_h"}
    name = known.get((dim, len(blocks)), "an unknown SAM variant")
    return f"{name} (embed {dim}, {len(blocks)} blocks)"


def check_sam_state_dict(
    expected: Mapping[str, torch.Size], state: Mapping[str, torch.Tensor], model_name: str, source: str
) -> None:
    """Raise CheckpointError naming missing, unexpected and wrongly shaped keys (official key names)."""
    given = {k: v for k, v in state.items() if k not in IGNORED_KEYS}
    check_state_dict(expected, given, model_name, source, describe_sam_architecture(state))
