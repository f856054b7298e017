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
from typing import Callable, Dict, Mapping, Optional, Tuple

import torch

from ..checkpoint import check_state_dict

# Constants of the model, not weights: some exporters save them, SAM's own files do not.
IGNORED_KEYS = {"pixel_mean", "pixel_std"}
ENCODER = "image_encoder."
# The SAM 2 image path: every other key of a SAM 2 file belongs to its video (memory) parts.
SAM2_IMAGE_PREFIXES = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
TINY_VIT_HEAD = ("image_encoder.norm_head.", "image_encoder.head.")

Rules = Tuple[Tuple[str, str], ...]


def _apply(key: str, rules: Rules) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


VIT_TO_MODULE: Rules = ((r"^(image_encoder\..*)mlp\.lin1\.", r"\1mlp.fc1."), (r"^(image_encoder\..*)mlp\.lin2\.", r"\1mlp.fc2."))
VIT_TO_OFFICIAL: Rules = ((r"^(image_encoder\..*)mlp\.fc1\.", r"\1mlp.lin1."), (r"^(image_encoder\..*)mlp\.fc2\.", r"\1mlp.lin2."))
SAM2_TO_MODULE: Rules = (
    (r"^sam_prompt_encoder\.", "prompt_encoder."),
    (r"^sam_mask_decoder\.", "mask_decoder."),
    (r"^(mask_decoder\.transformer\.layers\.\d+\.mlp\.)layers\.0\.", r"\1lin1."),
    (r"^(mask_decoder\.transformer\.layers\.\d+\.mlp\.)layers\.1\.", r"\1lin2."),
    (r"^(image_encoder\.trunk\..*mlp\.)layers\.0\.", r"\1fc1."),
    (r"^(image_encoder\.trunk\..*mlp\.)layers\.1\.", r"\1fc2."),
)
SAM2_TO_OFFICIAL: Rules = (
    (r"^prompt_encoder\.", "sam_prompt_encoder."),
    (r"^mask_decoder\.", "sam_mask_decoder."),
    (r"^(sam_mask_decoder\.transformer\.layers\.\d+\.mlp\.)lin1\.", r"\1layers.0."),
    (r"^(sam_mask_decoder\.transformer\.layers\.\d+\.mlp\.)lin2\.", r"\1layers.1."),
    (r"^(image_encoder\.trunk\..*mlp\.)fc1\.", r"\1layers.0."),
    (r"^(image_encoder\.trunk\..*mlp\.)fc2\.", r"\1layers.1."),
)
TINY_VIT_COMMON_TO_MODULE: Rules = (
    (r"^image_encoder\.patch_embed\.seq\.0\.", "image_encoder.patch_embed.conv1."),
    (r"^image_encoder\.patch_embed\.seq\.2\.", "image_encoder.patch_embed.conv2."),
    (r"^(image_encoder\..*)\.c\.weight$", r"\1.conv.weight"),
)
TINY_VIT_COMMON_TO_OFFICIAL: Rules = (
    (r"^image_encoder\.patch_embed\.conv1\.", "image_encoder.patch_embed.seq.0."),
    (r"^image_encoder\.patch_embed\.conv2\.", "image_encoder.patch_embed.seq.2."),
    (r"^(image_encoder\..*)\.conv\.weight$", r"\1.c.weight"),
)


def _tiny_vit_to_module(key: str) -> str:
    key = re.sub(r"^(image_encoder\.)layers\.(\d+)\.downsample\.",
                 lambda m: f"{m.group(1)}stages.{int(m.group(2)) + 1}.downsample.", key)
    key = re.sub(r"^image_encoder\.layers\.", "image_encoder.stages.", key)
    return _apply(key, TINY_VIT_COMMON_TO_MODULE)


def _tiny_vit_to_official(key: str) -> str:
    key = re.sub(r"^(image_encoder\.)stages\.(\d+)\.downsample\.",
                 lambda m: f"{m.group(1)}layers.{int(m.group(2)) - 1}.downsample.", key)
    key = re.sub(r"^image_encoder\.stages\.", "image_encoder.layers.", key)
    return _apply(key, TINY_VIT_COMMON_TO_OFFICIAL)


KEY_MAPS: Dict[str, Tuple[Callable[[str], str], Callable[[str], str]]] = {
    "vit": (lambda k: _apply(k, VIT_TO_MODULE), lambda k: _apply(k, VIT_TO_OFFICIAL)),
    "tiny_vit": (_tiny_vit_to_module, _tiny_vit_to_official),
    "hiera": (lambda k: _apply(k, SAM2_TO_MODULE), lambda k: _apply(k, SAM2_TO_OFFICIAL)),
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
