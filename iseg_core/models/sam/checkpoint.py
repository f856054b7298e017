"""SAM-family checkpoints: mapping their keys onto our modules and checking a state dict against the
architecture (files are read by :mod:`iseg_core.models.checkpoint`).

The publishers' files are flat state dicts. What differs from our module names, per family:

- SAM, HQ-SAM: the image encoder is timm's ``VisionTransformerSAM``, which says ``mlp.fc1/fc2`` where SAM says
  ``mlp.lin1/lin2``.
- MobileSAM: timm's ``TinyVit`` names its stages ``stages.i`` (MobileSAM: ``layers.i``), puts each patch merging
  at the start of the next stage (MobileSAM: at the end of the previous one), and calls the conv of a
  conv+BN pair ``conv`` (MobileSAM: ``c``; its stem ``seq.0`` / ``seq.2``). MobileSAM's ImageNet head
  (``norm_head``, ``head``) is unused.
- SAM 2 / 2.1: the heads are ``sam_prompt_encoder`` / ``sam_mask_decoder``; its MLPs are ``mlp.layers.0/1``
  (timm's Hiera: ``mlp.fc1/fc2``; our two-way transformer: ``mlp.lin1/lin2``). The video parts (memory
  attention and encoder, object pointers, ...) are unused by the image path.
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Optional

import torch

from ..checkpoint import check_state_dict

# Constants of the model, not weights: some exporters save them, SAM's own files do not.
IGNORED_KEYS = {"pixel_mean", "pixel_std"}
# The SAM 2 image path: every other key of a SAM 2 file belongs to its video (memory) parts.
SAM2_IMAGE_PREFIXES = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
TINY_VIT_HEAD = ("image_encoder.norm_head.", "image_encoder.head.")

class KeyMap:
    """Publisher <-> module key names: ``prefixes`` rename a key's start (publisher's, ours); ``pieces`` rename a
    piece of the key (publisher's, ours) in keys whose module name matches ``scope``; ``shift`` (both ways)
    handles what a rename cannot (MobileSAM's stage numbering). One table serves both directions."""

    def __init__(self, prefixes=(), pieces=(), shift=None):
        self.prefixes = tuple(prefixes)
        self.pieces = tuple((re.compile(rf"^({scope}.*){re.escape(theirs)}"), re.compile(rf"^({scope}.*){re.escape(ours)}"),
                             theirs, ours) for scope, theirs, ours in pieces)
        self.shift = shift

    def to_module(self, key: str) -> str:
        for theirs, ours in self.prefixes:
            if key.startswith(theirs):
                key = ours + key[len(theirs):]
                break
        if self.shift is not None:
            key = self.shift(key, +1)
        for from_theirs, _, _, ours in self.pieces:
            key = from_theirs.sub(lambda m: m.group(1) + ours, key)
        return key

    def to_official(self, key: str) -> str:
        for _, from_ours, theirs, _ in self.pieces:
            key = from_ours.sub(lambda m: m.group(1) + theirs, key)
        if self.shift is not None:
            key = self.shift(key, -1)
        for theirs, ours in self.prefixes:
            if key.startswith(ours):
                key = theirs + key[len(ours):]
                break
        return key


def _tiny_vit_stages(key: str, direction: int) -> str:
    """MobileSAM's ``layers.i.downsample`` is timm's ``stages.(i+1).downsample``; other ``layers.i`` are ``stages.i``."""
    if direction > 0:
        key = re.sub(r"^image_encoder\.layers\.(\d+)\.downsample\.",
                     lambda m: f"image_encoder.stages.{int(m.group(1)) + 1}.downsample.", key)
        return re.sub(r"^image_encoder\.layers\.", "image_encoder.stages.", key)
    key = re.sub(r"^image_encoder\.stages\.(\d+)\.downsample\.",
                 lambda m: f"image_encoder.layers.{int(m.group(1)) - 1}.downsample.", key)
    return re.sub(r"^image_encoder\.stages\.", "image_encoder.layers.", key)


ENCODER_SCOPE = r"image_encoder\."
KEY_MAPS: Dict[str, KeyMap] = {
    "vit": KeyMap(pieces=[(ENCODER_SCOPE, "mlp.lin1.", "mlp.fc1."), (ENCODER_SCOPE, "mlp.lin2.", "mlp.fc2.")]),
    "tiny_vit": KeyMap(
        prefixes=[("image_encoder.patch_embed.seq.0.", "image_encoder.patch_embed.conv1."),
                  ("image_encoder.patch_embed.seq.2.", "image_encoder.patch_embed.conv2.")],
        pieces=[(ENCODER_SCOPE, ".c.weight", ".conv.weight")],  # the conv of a conv + BatchNorm pair
        shift=_tiny_vit_stages),
    "hiera": KeyMap(
        prefixes=[("sam_prompt_encoder.", "prompt_encoder."), ("sam_mask_decoder.", "mask_decoder.")],
        pieces=[(r"mask_decoder\.transformer\.layers\.\d+\.", "mlp.layers.0.", "mlp.lin1."),
                (r"mask_decoder\.transformer\.layers\.\d+\.", "mlp.layers.1.", "mlp.lin2."),
                (r"image_encoder\.trunk\.", "mlp.layers.0.", "mlp.fc1."),
                (r"image_encoder\.trunk\.", "mlp.layers.1.", "mlp.fc2.")]),
}


def unused_key(key: str, encoder: str) -> bool:
    """Keys the publisher's file carries that the image path never reads (dropped on load)."""
    if key in IGNORED_KEYS:
        return True
    if encoder == "hiera":
        return not key.startswith(SAM2_IMAGE_PREFIXES)
    if encoder == "tiny_vit":
        return key.startswith(TINY_VIT_HEAD)
    return False


def _count_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state for m in [pattern.match(k)] if m})


def describe_sam_architecture(state: Mapping[str, torch.Tensor]) -> Optional[str]:
    """Guess which SAM-family model a state dict belongs to, e.g. ``"sam_vit_l (embed 1024, 24 blocks)"``."""
    w = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if w is not None and w.ndim == 4:  # SAM 2: a Hiera trunk
        dim, blocks = w.shape[0], _count_blocks(state, "image_encoder.trunk.blocks.")
        known = {(96, 12): "sam2.1_hiera_tiny", (96, 16): "sam2.1_hiera_small", (112, 24): "sam2.1_hiera_base_plus",
                 (144, 48): "sam2.1_hiera_large"}
        return f"{known.get((dim, blocks), 'an unknown SAM 2 variant')} (Hiera, embed {dim}, {blocks} blocks)"
    w = state.get("image_encoder.patch_embed.seq.0.c.weight")
    if w is not None and w.ndim == 4:  # MobileSAM: a TinyViT encoder
        return f"mobile_sam (TinyViT, stem {w.shape[0]} channels)"
    w = state.get("image_encoder.patch_embed.proj.weight")
    if w is None or w.ndim != 4:
        return None
    dim = w.shape[0]
    blocks = _count_blocks(state, "image_encoder.blocks.")
    known = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}
    hq = "mask_decoder.hf_token.weight" in state
    variant = known.get((dim, blocks))
    name = (("sam_hq_" if hq else "sam_") + variant) if variant else "an unknown SAM variant"
    return f"{name} (embed {dim}, {blocks} blocks{', HQ decoder' if hq else ''})"


def check_sam_state_dict(
    expected: Mapping[str, torch.Size], state: Mapping[str, torch.Tensor], model_name: str, source: str,
    encoder: str = "vit",
) -> None:
    """Raise CheckpointError naming missing, unexpected and wrongly shaped keys (official key names)."""
    given = {k: v for k, v in state.items() if not unused_key(k, encoder)}
    check_state_dict(expected, given, model_name, source, describe_sam_architecture(state))
