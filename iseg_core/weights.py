"""Known checkpoints and where their files come from.

Resolution order for a known checkpoint: a file of the same name in the weights folder (``weights/`` of the
project, or ``$ISEG_WEIGHTS_DIR``), then, for files on the Hugging Face Hub, the Hub cache and a download
through ``huggingface_hub`` (``$HF_ENDPOINT`` picks a mirror); for files their authors publish at an HTTPS
address (a GitHub release), a download into the weights folder: streamed into a temporary file with a
progress bar, checked, and renamed only when whole. Files that cannot be fetched automatically (Google Drive)
get a message naming the file, the page to get it from and the folder to put it in. Every file is checked
against the registry's size and sha256 (where published) before use. Offline (``HF_HUB_OFFLINE=1``) a
missing file fails at once with a message that says which file to put where.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

from .errors import CheckpointError, UnknownModelError, WeightsUnavailableError


@dataclass(frozen=True)
class KnownCheckpoint:
    name: str  # registry name, e.g. "sam_vit_b"
    model: str  # the model it loads into (a name of iseg_core.models)
    repo_id: Optional[str]  # Hugging Face Hub repository, or None for files not on the Hub
    filename: str  # path of the file inside the repository (or its file name)
    size: Optional[int]  # bytes, where known exactly (checked)
    sha256: Optional[str]
    licence: str
    origin: str  # where the publisher released it
    revision: Optional[str] = None  # Hub revision (branch, tag or commit); None = default branch
    url: Optional[str] = None  # an HTTPS address the file downloads from directly (not on the Hub)
    manual_page: Optional[str] = None  # a page to fetch it from by hand (Google Drive): no automatic download
    published_size: Optional[str] = None  # the size as its authors state it ("16.5 MB"), where not exact
    folder: Optional[str] = None  # a sub-folder of the weights folder it lives in (files of one name, e.g.
    #                               InterFormer's iter_320000.pth, kept apart by their publisher's folder name)
    unpublished: Optional[str] = None  # the authors never released the file: why, and how to get such a model

    @property
    def basename(self) -> str:
        return Path(self.filename).name

    @property
    def local_path(self) -> str:
        """Where it lives inside the weights folder."""
        return f"{self.folder}/{self.basename}" if self.folder else self.basename


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
# RITM's iterative-mask models (MIT), published as GitHub release assets of saic-vul/ritm_interactive_segmentation
# (README table, "v1.0"); that repository now lives on as SamsungLabs/ritm_interactive_segmentation. Sizes as
# the README states them; no hashes are published, so the loaded file is checked by its keys, shapes and the
# config the official trainer stored in it.
_RITM_RELEASE = "https://github.com/SamsungLabs/ritm_interactive_segmentation/releases/download/v1.0/"
_RITM_ORIGIN = "https://github.com/saic-vul/ritm_interactive_segmentation (README, release v1.0)"
for _name, _file, _size in (("ritm_hrnet18s_cocolvis", "coco_lvis_h18s_itermask.pth", "16.5 MB"),
                            ("ritm_hrnet18_cocolvis", "coco_lvis_h18_itermask.pth", "38.8 MB"),
                            ("ritm_hrnet32_cocolvis", "coco_lvis_h32_itermask.pth", "119 MB")):
    KNOWN_CHECKPOINTS[_name] = KnownCheckpoint(_name, _name, None, _file, None, None, "MIT", _RITM_ORIGIN,
                                               url=_RITM_RELEASE + _file, published_size=_size)

# SAIC-IS's multi-input models (MIT), GitHub release assets of SamsungLabs/saic-is (README, "v1.0"); no sizes
# or hashes published.
_SAICIS_RELEASE = "https://github.com/SamsungLabs/saic-is/releases/download/v1.0/"
for _name, _file in (("saicis_hrnet18_multi_cocolvis", "hrnet18_multi.pth"),
                     ("saicis_segformer_b4_multi_cocolvis", "segformer_multi.pth")):
    KNOWN_CHECKPOINTS[_name] = KnownCheckpoint(_name, _name, None, _file, None, None, "MIT",
                                               "https://github.com/SamsungLabs/saic-is (README, release v1.0)",
                                               url=_SAICIS_RELEASE + _file)

# SimpleClick (MIT) and SegNext (MIT) publish their weights on Google Drive only (SimpleClick README
# "Download"; SegNext README and its download.py, which fetches them with gdown): no automatic download, the
# message names the file, the page and the folder. SegNext's sizes as its download script states them;
# SimpleClick states none.
_SIMPLECLICK_PAGE = "https://github.com/uncbiag/SimpleClick#download (Google Drive links)"
_SEGNEXT_PAGE = "https://github.com/uncbiag/SegNext#download (Google Drive links; or its download.py)"
for _name, _file, _page, _size in (
        ("simpleclick_vit_b448_cocolvis", "cocolvis_vit_base.pth", _SIMPLECLICK_PAGE, None),
        ("simpleclick_vit_l448_cocolvis", "cocolvis_vit_large.pth", _SIMPLECLICK_PAGE, None),
        ("simpleclick_vit_h448_cocolvis", "cocolvis_vit_huge.pth", _SIMPLECLICK_PAGE, None),
        ("segnext_vit_b1024_sax1_cocolvis", "vitb_sa1_cocolvis_epoch_90.pth", _SEGNEXT_PAGE, "408 MB"),
        ("segnext_vit_b1024_sax2_cocolvis", "vitb_sa2_cocolvis_epoch_90.pth", _SEGNEXT_PAGE, "435 MB"),
        ("segnext_vit_b1024_sax2_hqseg44k", "vitb_sa2_cocolvis_hq44k_epoch_0.pth", _SEGNEXT_PAGE, "435 MB")):
    KNOWN_CHECKPOINTS[_name] = KnownCheckpoint(_name, _name, None, _file, None, None, "MIT", _page,
                                               manual_page=_page.split(" ")[0], published_size=_size)

# InterFormer (MIT, "Copyright (c) 2024 YouHuang67") publishes its two models in one Google Drive folder (README
# since b209eb3), each as work_dirs/<config name>/iter_320000.pth beside its config: the same file name twice, so
# each lives in the weights folder under its config's folder name. No sizes or hashes published (fp32 weights
# alone: Light about 390 MB, Tiny about 1.3 GB; mmcv also stores the optimizer state unless stripped).
_INTERFORMER_PAGE = "https://drive.google.com/drive/folders/1517mfRoEHtbfnN83JuNWuQT6fSiZ8my3"
for _name, _folder in (("interformer_light_vitb_cocolvis", "interformer_light_coco_lvis_320k"),
                       ("interformer_tiny_vitl_cocolvis", "interformer_tiny_coco_lvis_320k")):
    KNOWN_CHECKPOINTS[_name] = KnownCheckpoint(
        _name, _name, None, f"work_dirs/{_folder}/iter_320000.pth", None, None, "MIT",
        f"{_INTERFORMER_PAGE} (linked from https://github.com/YouHuang67/InterFormer#readme)",
        manual_page=_INTERFORMER_PAGE, folder=_folder)

# MST (Apache-2.0, hahamyt/mst) publishes on SharePoint only: its main branch's README points to the slim MST-3s
# ViT-B 448 + CL file in its "Model Zoo" folder; the mst-448 branch's README (Experiment table) links its
# +MST+CL-3s file. No sizes or hashes published (fp32 weights alone: about 622 MB and 806 MB). SharePoint links
# expire: the message names the README that carries the current one.
_MST_ZOO = ("https://cuhko365-my.sharepoint.com/:f:/g/personal/xulong_cuhk_edu_cn/"
            "EjwcfWorCwZGsOayrEP9ymkBhHnlnACdFYpVDgEoCVqupA?e=wh45gO")
for _name, _file, _page, _readme in (
        ("mst_vit_b448_slim_cocolvis", "mst-3s-slim-448-base.pth", _MST_ZOO, "https://github.com/hahamyt/mst#readme"),
        ("mst_vit_b448_cocolvis", "mst-3s+cl-448-cclvs.pth", "https://github.com/hahamyt/mst/tree/mst-448",
         "https://github.com/hahamyt/mst/tree/mst-448 (README, Experiment table: +MST+CL, 448, ViT-B)")):
    KNOWN_CHECKPOINTS[_name] = KnownCheckpoint(_name, _name, None, _file, None, None, "Apache-2.0",
                                               f"SharePoint, linked from {_readme}", manual_page=_page)

# MIS (ICCV'23) trains SimpleClick's ViT-B 448 without labels; its README's weights link is empty and "Upload
# pre-trained weight" is still an open item (its demo expects weights/mis_simpleclick_base448_sbd.pth). The
# repository has no licence file. DINO ViT-S/8 (Apache-2.0, facebookresearch/dino) gives MIS's proposal features:
# Meta's file as its README links it; no size or hash published (about 87 MB of fp32 weights).
KNOWN_CHECKPOINTS["mis_simpleclick_vit_b448_sbd"] = KnownCheckpoint(
    "mis_simpleclick_vit_b448_sbd", "mis_simpleclick_vit_b448_sbd", None, "mis_simpleclick_base448_sbd.pth", None, None,
    "none stated (no licence file in lkhl/MIS)", "https://github.com/lkhl/MIS#readme",
    unpublished="lkhl/MIS's README links no file and lists 'Upload pre-trained weight' as not done; train one with "
                "python -m training.finetune --labels proposals --images DIR --model mis_simpleclick_vit_b448_sbd")
KNOWN_CHECKPOINTS["dino_vits8"] = KnownCheckpoint(
    "dino_vits8", "dino_vits8", None, "dino_deitsmall8_pretrain.pth", None, None, "Apache-2.0",
    "https://github.com/facebookresearch/dino#pretrained-models",
    url="https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth",
    published_size="about 87 MB")

# The current SAM family on the Hugging Face Hub (all Apache-2.0): SAM 2.1 (Meta's own repositories, map in
# sam2/build_sam.py), HQ-SAM (its authors' lkeab/hq-sam) and MobileSAM (dhkim2810/MobileSAM). No sizes or hashes
# are published beside them: the sizes below are approximate, and the loaded file is checked by its keys and
# shapes (a file of another model is refused naming both).
for _name, _repo, _file, _size in (
        ("sam2.1_hiera_tiny", "facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt", "about 156 MB"),
        ("sam2.1_hiera_small", "facebook/sam2.1-hiera-small", "sam2.1_hiera_small.pt", "about 184 MB"),
        ("sam2.1_hiera_base_plus", "facebook/sam2.1-hiera-base-plus", "sam2.1_hiera_base_plus.pt", "about 324 MB"),
        ("sam2.1_hiera_large", "facebook/sam2.1-hiera-large", "sam2.1_hiera_large.pt", "about 898 MB"),
        ("sam_hq_vit_b", "lkeab/hq-sam", "sam_hq_vit_b.pth", "about 379 MB"),
        ("sam_hq_vit_l", "lkeab/hq-sam", "sam_hq_vit_l.pth", "about 1.25 GB"),
        ("sam_hq_vit_h", "lkeab/hq-sam", "sam_hq_vit_h.pth", "about 2.57 GB"),
        ("mobile_sam", "dhkim2810/MobileSAM", "mobile_sam.pt", "about 40 MB")):
    KNOWN_CHECKPOINTS[_name] = KnownCheckpoint(_name, _name, _repo, _file, None, None, "Apache-2.0",
                                               f"https://huggingface.co/{_repo}", published_size=_size)

# The checkpoint that ``checkpoint="hub"`` means for each model: its own known file.
DEFAULT_CHECKPOINT = {name: name for name in KNOWN_CHECKPOINTS}

_verified_lock = threading.Lock()
#: Where downloads report ``(done_bytes, total_bytes_or_None)`` when no ``progress`` is passed: set by
#: :func:`reporting_progress` (the studio's model picker shows a progress bar with it).
_progress_hook: ContextVar[Optional[Callable[[int, Optional[int]], None]]] = ContextVar("iseg_download_progress",
                                                                                       default=None)


@contextmanager
def reporting_progress(callback: Callable[[int, Optional[int]], None]):
    """Within this block, every download this thread starts reports to ``callback(done, total)``."""
    token = _progress_hook.set(callback)
    try:
        yield
    finally:
        _progress_hook.reset(token)


class ProgressText:
    """``progress(done, total)`` -> "sam2.1_hiera_tiny: 40 of 156 MB, 12 MB/s, about 10 s left"."""

    def __init__(self, what: str, clock=time.monotonic):
        self.what, self.clock = what, clock
        self.start = clock()

    def __call__(self, done: int, total: Optional[int]) -> str:
        elapsed = max(self.clock() - self.start, 1e-6)
        rate = done / elapsed
        text = f"{self.what}: {done / 1e6:.0f}" + (f" of {total / 1e6:.0f} MB" if total else " MB")
        if rate > 0:
            text += f", {rate / 1e6:.1f} MB/s"
            if total and done < total:
                text += f", about {(total - done) / rate:.0f} s left"
        return text


def _tqdm_reporting(callback: Callable[[int, Optional[int]], None]):
    """A tqdm class (for ``hf_hub_download``) that also reports its count to ``callback``."""
    from tqdm.auto import tqdm

    class Reporting(tqdm):
        def update(self, n=1):
            out = super().update(n)
            callback(int(self.n), int(self.total) if self.total else None)
            return out

    return Reporting


def weights_dir() -> Path:
    return Path(os.environ.get("ISEG_WEIGHTS_DIR") or Path(__file__).resolve().parent.parent / "weights")


def page_graph_dir() -> Path:
    """Where the page's decoder graphs are kept (``Segmenter.page_graph``): ``ISEG_ONNX_DIR``, else
    ``weights/onnx`` beside the checkpoints."""
    return Path(os.environ.get("ISEG_ONNX_DIR") or weights_dir() / "onnx")


def _human(n: Optional[int], published: Optional[str] = None) -> str:
    if n is None:
        if not published:
            return "unknown size"
        return published if published.startswith("about") else f"{published}, as published"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n} bytes"


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
    if spec.unpublished:
        return (f"{spec.name} weights were never published ({spec.unpublished}). A file you trained or were given "
                f"loads from {weights_dir()}/{spec.local_path} or by its path. Licence {spec.licence}.")
    put = (f"{spec.name} weights are not available ({reason}). Put {spec.local_path} ({_human(spec.size, spec.published_size)}"
           + (f", sha256 {spec.sha256}" if spec.sha256 else "") + f") into {weights_dir()}/")
    if spec.manual_page:
        return f"{put}: get it by hand from {spec.manual_page} (no automatic download). Licence {spec.licence}."
    source = (f"fetch {spec.filename} from the Hugging Face Hub repository {spec.repo_id}" if spec.repo_id
              else f"download it from {spec.url}")
    return (f"{put}, or allow downloads (network access, HF_HUB_OFFLINE unset) to {source}. "
            f"Original source: {spec.origin}")


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def download_url(spec: KnownCheckpoint, dest: Path, progress=None, chunk: int = 1 << 20) -> Path:
    """Stream ``spec.url`` into ``dest``: written to a temporary file beside it, checked (size, sha256 where
    known, and against the length the server announced), renamed only when whole; nothing is left behind on
    failure. ``progress(done_bytes, total_bytes_or_None)`` is called as it goes (a tqdm bar on stderr by
    default)."""
    import httpx
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")
    bar = None
    try:
        with httpx.stream("GET", spec.url, follow_redirects=True, timeout=httpx.Timeout(30.0, read=120.0)) as r:
            if r.status_code != 200:
                raise WeightsUnavailableError(_unavailable_message(spec, f"{spec.url} answered HTTP {r.status_code}"))
            announced = int(r.headers["Content-Length"]) if r.headers.get("Content-Length", "").isdigit() else None
            total = spec.size or announced
            if progress is None:
                bar = tqdm(total=total, unit="B", unit_scale=True, desc=spec.basename)
            done = 0
            with open(tmp, "wb") as f:
                for block in r.iter_bytes(chunk):
                    f.write(block)
                    done += len(block)
                    bar.update(len(block)) if bar is not None else progress(done, total)
                f.flush()
                os.fsync(f.fileno())
        if announced is not None and done != announced:
            raise WeightsUnavailableError(_unavailable_message(
                spec, f"the download stopped after {done} of {announced} bytes"))
        verify(tmp, spec)
        os.replace(tmp, dest)
        return dest
    except httpx.HTTPError as exc:
        raise WeightsUnavailableError(_unavailable_message(spec, f"download from {spec.url} failed: {exc}")) from exc
    except OSError as exc:  # a full disk, a read-only folder
        raise WeightsUnavailableError(_unavailable_message(spec, f"could not write {tmp}: {exc}")) from exc
    finally:
        if bar is not None:
            bar.close()
        if tmp.exists():
            tmp.unlink()


def fetch(spec: KnownCheckpoint, cache_dir: Optional[Union[str, os.PathLike]] = None, progress=None) -> Path:
    """Path of a verified local copy of ``spec``, downloading it if needed (see module docstring).
    ``progress(done, total)`` (default: the hook of :func:`reporting_progress`, if any) follows a download."""
    progress = progress or _progress_hook.get()
    local = weights_dir() / spec.local_path
    if local.is_file():
        verify(local, spec)
        return local
    if spec.repo_id is None:
        if spec.manual_page or not spec.url:
            raise WeightsUnavailableError(_unavailable_message(spec, "not downloadable automatically"))
        if _offline():
            raise WeightsUnavailableError(_unavailable_message(spec, "offline mode (HF_HUB_OFFLINE=1)"))
        return download_url(spec, local, progress)
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
            **({"tqdm_class": _tqdm_reporting(progress)} if progress is not None else {}),
        )
    except download_failed as exc:
        reason = "offline mode (HF_HUB_OFFLINE=1) and not in the local cache" if offline else f"download failed: {exc}"
        raise WeightsUnavailableError(_unavailable_message(spec, reason)) from exc
    verify(path, spec)
    return Path(path)


def on_disk(name: str) -> Optional[Path]:
    """The local file of known checkpoint ``name`` if it is already here (the weights folder or the Hub cache),
    without any request and without hashing it; None otherwise."""
    spec = KNOWN_CHECKPOINTS.get(name)
    if spec is None:
        return None
    local = weights_dir() / spec.local_path
    if local.is_file():
        return local
    if spec.repo_id is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(spec.repo_id, spec.filename, revision=spec.revision)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def resolve_checkpoint(model_name: str, checkpoint: Union[str, os.PathLike]) -> Tuple[Path, Optional[str]]:
    """Turn ``load_model``'s ``checkpoint`` argument into a local file.

    Returns the path and, for known checkpoints, a version string derived from its sha256.
    """
    key = os.fspath(checkpoint)
    if key == "hub":
        if model_name not in DEFAULT_CHECKPOINT:
            raise UnknownModelError(f"no published weights are known for {model_name}: give it a weights file "
                                    "(--checkpoint FILE, or a fine-tuned file swapped in)")
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
