"""The model registry: ``load_model(name, checkpoint=None, device=None, dtype=None)``.

``checkpoint`` is ``None`` (random weights, for tests and training from scratch), a file path, or a name
resolved by :mod:`iseg_core.weights` (``"hub"`` = the default known checkpoint of that model). A family
registers a builder ``(name, weights, device, dtype) -> Segmenter`` per model name; ``weights`` is the file
already read and checked against its metadata (:class:`Weights`), or None.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, Union

import torch

from ..errors import CheckpointError, UnknownModelError
from .base import Decoded, ImageEmbedding, Segmenter, TrainableSegmenter, TrainOutput, supports_training
from .checkpoint import load_checkpoint


@dataclass
class Weights:
    """A weights file read for a builder: its state dict and what its metadata says about it."""

    path: str
    state: Dict[str, torch.Tensor]
    version: str  # the registry's sha-derived version, the file's meta version, or a file fingerprint
    encoder_version: Optional[str]  # set by decoder-only fine-tunes: the base encoder's version
    meta: dict


@dataclass(frozen=True)
class ModelEntry:
    build: Callable[..., Segmenter]
    has_weights: bool  # False: the model takes no checkpoint (classical)
    trainable: bool  # builds a TrainableSegmenter (fine-tuning works)


_REGISTRY: Dict[str, ModelEntry] = {}


def register_model(name: str, has_weights: bool = True, trainable: bool = True):
    """Decorator: register a builder ``(name, weights, device, dtype) -> Segmenter`` under ``name``."""
    def deco(build):
        _REGISTRY[name] = ModelEntry(build, has_weights, trainable and has_weights)
        return build

    return deco


def list_models() -> list:
    return sorted(_REGISTRY)


def takes_weights(name: str) -> bool:
    """Whether model ``name`` loads a checkpoint (False for weight-free models such as classical)."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return entry.has_weights


def trainable_models() -> list:
    """Names of the registered models that fine-tuning works for."""
    return sorted(n for n, e in _REGISTRY.items() if e.trainable)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def file_fingerprint(path: Union[str, os.PathLike]) -> str:
    """Cheap identity of a weights file (name, size, mtime) for cache keys; not a content hash."""
    st = os.stat(path)
    raw = f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"
    return f"{os.path.basename(path)}:{hashlib.blake2b(raw.encode(), digest_size=6).hexdigest()}"


def read_weights(name: str, checkpoint: Union[str, os.PathLike]) -> Weights:
    """Resolve ``checkpoint`` for model ``name`` and read it; a file trained as another model is refused."""
    from .. import weights

    path, version = weights.resolve_checkpoint(name, checkpoint)
    state, meta = load_checkpoint(path)
    trained_as = meta.get("model")
    if trained_as and trained_as != name:
        raise CheckpointError(f"checkpoint {path} was trained as {trained_as!r}, not {name!r}: "
                              f"load it with load_model({trained_as!r}, ...)")
    return Weights(str(path), state, version or meta.get("version") or file_fingerprint(path),
                   meta.get("encoder_version"), meta)


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
    entry = _REGISTRY.get(name)
    if entry is None:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    if checkpoint is not None and not entry.has_weights:
        raise UnknownModelError(f"the {name} model has no weights: leave checkpoint unset")
    # resolved and read first: a missing or foreign file fails before the model is built
    weights = read_weights(name, checkpoint) if checkpoint is not None else None
    return entry.build(
        name=name,
        weights=weights,
        device=torch.device(device) if device is not None else default_device(),
        dtype=dtype or torch.float32,
    )


def _build_sam(name, weights: Optional[Weights], device, dtype):
    from . import sam

    network = sam.SamNetwork(sam.SAM_CONFIGS[name])
    if weights is not None:
        network.load_official_state_dict(weights.state, name, weights.path)
    return sam.SamSegmenter(name, network, version=weights.version if weights else None, device=device,
                            encoder_dtype=dtype, encoder_version=weights.encoder_version if weights else None)


@register_model("classical", has_weights=False)
def _build_classical(name, weights, device, dtype):
    from .classical import ClassicalSegmenter

    return ClassicalSegmenter(name)


for _name in ("sam_vit_b", "sam_vit_l", "sam_vit_h", "sam_mini", "sam_hq_vit_b", "sam_hq_vit_l", "sam_hq_vit_h",
              "mobile_sam", "sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus", "sam2.1_hiera_large"):
    register_model(_name)(_build_sam)


def _build_clickmap(name, weights: Optional[Weights], device, dtype):
    from .clickmap import build_clickmap

    return build_clickmap(name, weights, device)


# RITM's, SAIC-IS's, SimpleClick's and MST's click-map models (they train in full mode only: prompts enter at the stem)
for _name in ("ritm_hrnet18s_cocolvis", "ritm_hrnet18_cocolvis", "ritm_hrnet32_cocolvis", "saicis_hrnet18_multi_cocolvis",
              "saicis_segformer_b4_multi_cocolvis",
              "simpleclick_vit_xtiny448_cocolvis", "simpleclick_vit_b448_cocolvis", "simpleclick_vit_l448_cocolvis",
              "simpleclick_vit_h448_cocolvis", "mis_simpleclick_vit_b448_sbd",
              # MST: the main branch's slim model (its README's) and the mst-448 branch's (its experiment table's)
              "mst_vit_b448_slim_cocolvis", "mst_vit_b448_cocolvis"):
    register_model(_name)(_build_clickmap)


def _build_segnext(name, weights: Optional[Weights], device, dtype):
    from .clickmap.segnext import build_segnext

    return build_segnext(name, weights, device)


for _name in ("segnext_vit_b1024_sax1_cocolvis", "segnext_vit_b1024_sax2_cocolvis", "segnext_vit_b1024_sax2_hqseg44k"):
    register_model(_name)(_build_segnext)

def _build_interformer(name, weights: Optional[Weights], device, dtype):
    from .interformer import build_interformer

    return build_interformer(name, weights, device)


# InterFormer's released configurations ("light" is its ViT-B model, "tiny" its ViT-L one)
for _name in ("interformer_light_vitb_cocolvis", "interformer_tiny_vitl_cocolvis"):
    register_model(_name)(_build_interformer)

# Which model ``python app.py`` starts with when none is named: the first of these whose published weights are
# already on disk. On a CPU the light models lead (bench/bench_sam_family.py: MobileSAM encodes an image about 2x
# faster than SAM 2.1 tiny and 8x faster than SAM ViT-B at about the same per-click cost); on a GPU the largest.
CPU_PREFERENCE = ("mobile_sam", "sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam_vit_b", "sam_hq_vit_b",
                  "sam2.1_hiera_base_plus", "sam2.1_hiera_large", "sam_vit_l", "sam_hq_vit_l", "sam_vit_h", "sam_hq_vit_h")
GPU_PREFERENCE = ("sam2.1_hiera_large", "sam_hq_vit_h", "sam_vit_h", "sam_hq_vit_l", "sam_vit_l",
                  "sam2.1_hiera_base_plus", "sam_hq_vit_b", "sam_vit_b", "sam2.1_hiera_small", "sam2.1_hiera_tiny",
                  "mobile_sam")
LIGHT_MODEL = "mobile_sam"


def best_available_model(device: Optional[Union[str, torch.device]] = None) -> Tuple[str, Optional[str]]:
    """``(name, hint)``: the preferred model whose weights are on disk for ``device`` (default: this machine's),
    else ``classical`` and a one-line hint saying how to get a better one."""
    from .. import weights

    gpu = torch.device(device or default_device()).type == "cuda"
    for name in GPU_PREFERENCE if gpu else CPU_PREFERENCE:
        if weights.on_disk(name) is not None:
            return name, None
    spec = weights.KNOWN_CHECKPOINTS[LIGHT_MODEL]
    return "classical", (f"No model weights on disk, so clicks use the classical engine. For model masks start with "
                         f"`python app.py --model {LIGHT_MODEL}` (downloads {spec.basename}, "
                         f"{spec.published_size}, from {spec.repo_id}) or put {spec.basename} into "
                         f"{weights.weights_dir()}/.")


def fetch_light_model(log: Callable[[str], None] = print, every: float = 2.0) -> Optional[str]:
    """Download the light model's published weights (MobileSAM's) into the Hub cache, its progress written to
    ``log`` (a line at most every ``every`` seconds, and the last); returns its name, or None (offline, Hub
    unreachable, a wrong file: the reason is logged, nothing half-written is kept)."""
    import time

    from .. import weights
    from ..errors import IsegError

    spec = weights.KNOWN_CHECKPOINTS[LIGHT_MODEL]
    log(f"fetching {LIGHT_MODEL} weights ({spec.published_size or weights._human(spec.size)}) from {spec.repo_id}")
    text, last = weights.ProgressText(f"{LIGHT_MODEL} weights"), [0.0]

    def report(done: int, total: Optional[int]) -> None:
        now = time.monotonic()
        if now - last[0] >= every or (total and done >= total):
            last[0] = now
            log(text(done, total))

    try:
        weights.fetch(spec, progress=report)
    except IsegError as e:
        log(f"{LIGHT_MODEL} not fetched: {e}")
        return None
    return LIGHT_MODEL


__all__ = ["best_available_model", "fetch_light_model", "Decoded", "ImageEmbedding", "Segmenter", "TrainOutput", "TrainableSegmenter", "Weights", "list_models",
           "load_model", "read_weights", "register_model", "supports_training", "takes_weights", "trainable_models"]
