"""Known checkpoints and where their files come from.

Resolution order for a known checkpoint: a file of the same name in the weights folder (``weights/`` of the
project, or ``$ISEG_WEIGHTS_DIR``), then the Hugging Face Hub cache, then a download through
``huggingface_hub`` (``$HF_ENDPOINT`` picks a mirror). Every file is checked against the registry's size and
sha256 before use. Offline (``HF_HUB_OFFLINE=1``) a missing file fails at once with a message that says
which file to put where.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

from .errors import CheckpointError, UnknownModelError, WeightsUnavailableError


@dataclass(frozen=True)
class KnownCheckpoint:
    name: str  # registry name, e.g. "sam_vit_b"
    model: str  # the model it loads into (a name of iseg_core.models)
    repo_id: str  # Hugging Face Hub repository
    filename: str  # path of the file inside the repository
    size: Optional[int]  # bytes
    sha256: Optional[str]
    licence: str
    origin: str  # where the publisher released it
    revision: Optional[str] = None  # Hub revision (branch, tag or commit); None = default branch

    @property
    def basename(self) -> str:
        return Path(self.filename).name


# Official SAM releases (Apache-2.0), mirrored in original format on the Hub. Sizes and hashes are those of
# the files Meta published; the mirror serves the same bytes.
KNOWN_CHECKPOINTS: Dict[str, KnownCheckpoint] = {
    c.name: c
    for c in [
        KnownCheckpoint(
            "sam_vit_b", "sam_vit_b", "ybelkada/segment-anything", "checkpoints/sam_vit_b_01ec64.pth",
            375_042_383, "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", "Apache-2.0",
            "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        ),
        KnownCheckpoint(
            "sam_vit_l", "sam_vit_l", "ybelkada/segment-anything", "checkpoints/sam_vit_l_0b3195.pth",
            1_249_524_607, "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", "Apache-2.0",
            "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        ),
        KnownCheckpoint(
            "sam_vit_h", "sam_vit_h", "ybelkada/segment-anything", "checkpoints/sam_vit_h_4b8939.pth",
            2_564_550_879, "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", "Apache-2.0",
            "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        ),
    ]
}
# The checkpoint that ``checkpoint="hub"`` means for each model.
DEFAULT_CHECKPOINT = {"sam_vit_b": "sam_vit_b", "sam_vit_l": "sam_vit_l", "sam_vit_h": "sam_vit_h"}

_verified_lock = threading.Lock()


def weights_dir() -> Path:
    return Path(os.environ.get("ISEG_WEIGHTS_DIR") or Path(__file__).resolve().parent.parent / "weights")


def _human(n: Optional[int]) -> str:
    return "unknown size" if n is None else f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n} bytes"


def sha256_of(path: Union[str, os.PathLike], chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(path: Union[str, os.PathLike], spec: KnownCheckpoint) -> None:
    """Raise WeightsUnavailableError unless ``path`` has the size and sha256 of ``spec``.

    A successful check is remembered in ``<weights dir>/.verified.json`` (keyed by real path, size and
    mtime) so that multi-GB files are hashed once, not at every start.
    """
    real = os.path.realpath(path)
    size = os.path.getsize(real)
    if spec.size is not None and size != spec.size:
        raise WeightsUnavailableError(
            f"{path} has {size} bytes but {spec.name} has {spec.size}: an incomplete or different file. "
            f"Delete it and fetch {spec.basename} again."
        )
    if spec.sha256 is None:
        return
    record_file = weights_dir() / ".verified.json"
    key = f"{real}:{size}:{os.stat(real).st_mtime_ns}"
    with _verified_lock:
        try:
            records = json.loads(record_file.read_text())
        except (OSError, ValueError):
            records = {}
        if records.get(key) == spec.sha256:
            return
        digest = sha256_of(real)
        if digest != spec.sha256:
            raise WeightsUnavailableError(
                f"{path} has sha256 {digest}, expected {spec.sha256} for {spec.name}. "
                f"The file is corrupt or not {spec.basename}; delete it and fetch it again."
            )
        records[key] = digest
        try:
            record_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = record_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(records, indent=1))
            os.replace(tmp, record_file)
        except OSError:
            pass  # a read-only weights folder only costs a re-hash next time


def _unavailable_message(spec: KnownCheckpoint, reason: str) -> str:
    return (
        f"{spec.name} weights are not available ({reason}). Put {spec.basename} ({_human(spec.size)}"
        + (f", sha256 {spec.sha256}" if spec.sha256 else "")
        + f") into {weights_dir()}/, or allow downloads (network access, HF_HUB_OFFLINE unset) to fetch "
        f"{spec.filename} from the Hugging Face Hub repository {spec.repo_id}. Original source: {spec.origin}"
    )


def fetch(spec: KnownCheckpoint, cache_dir: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Path of a verified local copy of ``spec``, downloading it if needed (see module docstring)."""
    local = weights_dir() / spec.basename
    if local.is_file():
        verify(local, spec)
        return local
    import httpx
    import huggingface_hub
    from huggingface_hub import constants, errors

    offline = constants.is_offline_mode()
    # what a failed download raises (HTTP status, no connection, not in the cache offline, a broken transfer);
    # anything else is a bug and surfaces as itself
    download_failed = (OSError, httpx.HTTPError, errors.EntryNotFoundError, errors.XetDownloadError)
    try:
        path = huggingface_hub.hf_hub_download(
            spec.repo_id,
            spec.filename,
            revision=spec.revision,
            cache_dir=cache_dir,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            etag_timeout=10,
        )
    except download_failed as exc:
        reason = "offline mode (HF_HUB_OFFLINE=1) and not in the local cache" if offline else f"download failed: {exc}"
        raise WeightsUnavailableError(_unavailable_message(spec, reason)) from exc
    verify(path, spec)
    return Path(path)


def resolve_checkpoint(model_name: str, checkpoint: Union[str, os.PathLike]) -> Tuple[Path, Optional[str]]:
    """Turn ``load_model``'s ``checkpoint`` argument into a local file.

    Returns the path and, for known checkpoints, a version string derived from its sha256.
    """
    key = os.fspath(checkpoint)
    if key == "hub":
        if model_name not in DEFAULT_CHECKPOINT:
            raise UnknownModelError(f"no known Hub checkpoint for {model_name}")
        key = DEFAULT_CHECKPOINT[model_name]
    spec = KNOWN_CHECKPOINTS.get(key)
    if spec is None:
        path = Path(key)
        if not path.is_file():
            raise CheckpointError(
                f"{key} is neither an existing file nor a known checkpoint name "
                f"(known: hub, {', '.join(sorted(KNOWN_CHECKPOINTS))})"
            )
        return path, None
    if spec.model != model_name:
        raise CheckpointError(f"checkpoint {spec.name} is for {spec.model}, not {model_name}")
    path = fetch(spec)
    return path, f"{spec.name}:{(spec.sha256 or 'unverified')[:12]}"
