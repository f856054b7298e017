"""Object proposals without labels, as MIS (ICCV'23, "Multi-granularity Interaction Simulation") makes them: a
self-supervised ViT's patch features merged bottom-up into a tree of regions, from which pseudo-objects are
sampled top-down to train an interactive model on images nobody has labelled.

1. Features (:class:`DinoFeatures`): DINO v1 ViT-S/8, the last block's tokens after the final LayerNorm, the class
   token dropped; the image resized (bicubic) to the next multiple of 8 on each side, ImageNet-normalised; the
   position embedding resized DINO's way (bicubic with ``scale_factor = (grid + 0.1) / 28``, which differs from a
   size-based resize by up to ~0.5: timm's own resampling would not give DINO's features). Random weights unless
   the published file (``dino_vits8``, Apache-2.0) is given.
2. Tree (:func:`merge_tree`): Ward agglomeration restricted to the 4-connected patch grid (a merge joins two
   touching regions; cost ``n_a n_b / (n_a + n_b) * |c_a - c_b|^2``), by scikit-learn's ``ward_tree`` with the
   grid's connectivity. Returned as MIS stores it: ``n - 1`` child pairs, leaves ``0..n-1``, merge ``k`` makes
   node ``n + k``. Tie rule: scikit-learn works in float64 and breaks exact cost ties by its heap's order; MIS's
   op works in float32 with a heap on cost alone, so where two costs tie exactly (float32) the two may merge in
   another order. On real features ties are vanishingly rare; the tests compare on tie-free features.
3. Sampling (:func:`top_down_sample`, :func:`sample_mask`): from the root, while a uniform draw is at most ``p``
   (``p`` starts at 1, times ``decay`` = 0.9 per step, in float32), go to either child with probability 1/2
   (stopping at a leaf); the region is the leaves under the node reached. The draws reproduce MIS's C++
   (``std::default_random_engine``: minstd_rand0, and ``uniform_real_distribution<double>`` from two draws each),
   so a seed gives MIS's region. A pseudo-object is the first region of up to 100 seeds covering more than 5 % of
   the grid, painted on the patch grid and resized (nearest) to the image.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from iseg_core.errors import IsegError

Tree = List[Tuple[int, int]]
PATCH = 8
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# -- features ----------------------------------------------------------------------------------------------------
class DinoFeatures(nn.Module):
    """DINO v1 ViT-S/8 (timm's architecture, DINO's key names and position-embedding resize) -> patch features."""

    def __init__(self):
        super().__init__()
        import timm

        self.vit = timm.create_model("vit_small_patch8_224", pretrained=False, num_classes=0)

    def load_dino(self, state: dict, source: str) -> None:
        """DINO's published ``dino_deitsmall8_pretrain.pth`` (keys as timm's ViT), checked strictly."""
        from iseg_core.models.checkpoint import check_state_dict

        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        check_state_dict({k: v.shape for k, v in self.vit.state_dict().items()}, state, "dino_vits8", source)
        self.vit.load_state_dict(state)

    @staticmethod
    def frame(image: np.ndarray) -> torch.Tensor:
        """``uint8`` RGB -> ``(1, 3, H8, W8)``: PIL bicubic resize up to multiples of 8, ImageNet-normalised."""
        h, w = image.shape[:2]
        th, tw = -(-h // PATCH) * PATCH, -(-w // PATCH) * PATCH
        pil = Image.fromarray(image)
        if (th, tw) != (h, w):
            pil = pil.resize((tw, th), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(pil, np.float32) / 255).permute(2, 0, 1)[None]
        mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    def position(self, rows: int, cols: int) -> torch.Tensor:
        """DINO's ``interpolate_pos_encoding``: the class slot as it is, the 28 x 28 table resized bicubically with
        ``scale_factor = ((rows + 0.1) / 28, (cols + 0.1) / 28)`` (not with a target size)."""
        table = self.vit.pos_embed
        n = table.shape[1] - 1
        side = int(math.sqrt(n))
        if rows * cols == n and rows == cols:
            return table
        grid = table[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side), mode="bicubic")
        if tuple(grid.shape[-2:]) != (rows, cols):
            raise ValueError(f"position table resized to {tuple(grid.shape[-2:])}, not {(rows, cols)}")
        return torch.cat([table[:, :1], grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)], 1)

    @torch.inference_mode()
    def forward(self, image: np.ndarray) -> Tuple[np.ndarray, Tuple[int, int]]:
        """-> (features ``(rows * cols, 384)`` float32, C order, raster order; the grid ``(rows, cols)``)."""
        x = self.frame(image).to(self.vit.pos_embed.device)
        rows, cols = x.shape[-2] // PATCH, x.shape[-1] // PATCH
        tokens = self.vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.vit.cls_token.expand(1, -1, -1), tokens], 1) + self.position(rows, cols)
        tokens = self.vit.norm(self.vit.blocks(tokens))
        return np.ascontiguousarray(tokens[0, 1:].float().cpu().numpy()), (rows, cols)


# -- the region tree ---------------------------------------------------------------------------------------------
def merge_tree(features: np.ndarray, rows: int, cols: int) -> Tree:
    """Ward agglomeration of the grid's patches, each merge joining two 4-connected regions -> the ``n - 1``
    child pairs in merge order (MIS's layout)."""
    from sklearn.cluster import ward_tree
    from sklearn.feature_extraction.image import grid_to_graph

    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] != rows * cols:
        raise ValueError(f"features {features.shape} do not hold one row per patch of a {rows}x{cols} grid")
    if rows * cols < 2:
        return []
    children, *_ = ward_tree(features.astype(np.float64), connectivity=grid_to_graph(rows, cols))
    return [(int(a), int(b)) for a, b in children]


def leaves_under(tree: Sequence[Tuple[int, int]], node: int) -> List[int]:
    """The leaves under ``node``, breadth first (first child before second), as MIS lists them."""
    n = len(tree) + 1
    out, queue, head = [], [node], 0
    while head < len(queue):
        i = queue[head]
        head += 1
        if i < n:
            out.append(i)
        else:
            queue.extend(tree[i - n])
    return out


class MinstdUniform:
    """``std::uniform_real_distribution<double>(0, 1)`` on ``std::default_random_engine(seed)`` (libstdc++:
    minstd_rand0, x <- 16807 x mod 2^31 - 1; each double from two draws, ``generate_canonical<double, 53>``)."""

    M = 2147483647
    R = M - 1  # the engine's range: 1 .. M - 1

    def __init__(self, seed: int):
        x = int(seed) % self.M
        self.x = 1 if x == 0 else x

    def _draw(self) -> int:
        self.x = (16807 * self.x) % self.M
        return self.x

    def __call__(self) -> float:
        lo = float(self._draw() - 1)
        hi = float(self._draw() - 1)
        value = (lo + hi * float(self.R)) / (float(self.R) * float(self.R))
        return value if value < 1.0 else math.nextafter(1.0, 0.0)


def top_down_sample(tree: Sequence[Tuple[int, int]], decay: float = 0.9, seed: int = 0) -> List[int]:
    """MIS's top-down walk for ``seed`` -> the leaves of the region it stops at."""
    n = len(tree) + 1
    node = 2 * n - 2
    p = np.float32(1.0)
    decay = np.float32(decay)
    draw = MinstdUniform(seed)
    while draw() <= float(p):
        if node < n:
            break
        node = tree[node - n][0] if draw() <= 0.5 else tree[node - n][1]
        p = np.float32(p * decay)
    return leaves_under(tree, node)


def sample_mask(tree: Sequence[Tuple[int, int]], grid: Tuple[int, int], size: Tuple[int, int],
                rng: np.random.Generator, threshold: float = 0.05, decay: float = 0.9) -> np.ndarray:
    """A pseudo-object: the first of up to 100 sampled regions (seeds drawn from ``rng``) covering more than
    ``threshold`` of the grid, painted on the grid and resized (nearest) to ``size`` (h, w) -> bool mask."""
    import cv2

    rows, cols = grid
    leaves: List[int] = []
    for _ in range(100):
        leaves = top_down_sample(tree, decay, int(rng.integers(2 ** 31)))
        if len(leaves) / (rows * cols) > threshold:
            break
    cells = np.zeros(rows * cols, np.uint8)
    cells[leaves] = 1
    return cv2.resize(cells.reshape(rows, cols), (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0


def dino_features() -> Tuple[DinoFeatures, str]:
    """DINO ViT-S/8 with its published weights (``dino_vits8`` of the weights registry: from weights/, or
    downloaded once when online) -> (features, version); a clear error naming the file when it cannot be had."""
    from iseg_core import weights
    from iseg_core.models.checkpoint import load_checkpoint

    path, version = weights.resolve_checkpoint("dino_vits8", "hub")
    features = DinoFeatures().eval()
    features.load_dino(load_checkpoint(path)[0], str(path))
    return features, version or "dino_vits8"


class Proposals:
    """An image's region tree, built once (features + merging) and sampled as often as wanted."""

    def __init__(self, tree: Tree, grid: Tuple[int, int], size: Tuple[int, int]):
        self.tree, self.grid, self.size = tree, grid, size

    @classmethod
    def of(cls, image: np.ndarray, features: Optional[DinoFeatures] = None) -> "Proposals":
        feats, grid = (features or DinoFeatures().eval())(image)
        return cls(merge_tree(feats, *grid), grid, image.shape[:2])

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return sample_mask(self.tree, self.grid, self.size, rng)


def _tree_file(cache: Path, path: Path) -> Path:
    digest = hashlib.sha1(path.read_bytes()).hexdigest()[:16]
    return cache / f"{path.stem}-{digest}.npz"


def build_proposals(images: Sequence[Path], cache: Path, features: DinoFeatures, version: str,
                    progress: bool = True, report: Optional[Callable[[int, int], None]] = None) -> Dict[Path, Proposals]:
    """Each image's region tree, built with a progress bar (and ``report(done, total)``) and kept in ``cache`` (one
    file per image content and feature weights ``version``): a stopped run restarts where it was; an image that
    cannot be read is skipped with a message."""
    from tqdm import tqdm

    from iseg_core.image import load_image

    folder = cache / version.replace(":", "_").replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    out: Dict[Path, Proposals] = {}
    images = list(images)
    for done, path in enumerate(tqdm(images, desc="proposal trees", unit="image", disable=not progress)):
        if report is not None:
            report(done, len(images))
        try:
            file = _tree_file(folder, path)
            if file.is_file():
                data = np.load(file)
                out[path] = Proposals([tuple(p) for p in data["tree"].tolist()], tuple(data["grid"].tolist()),
                                      tuple(data["size"].tolist()))
                continue
            rgb = load_image(path).rgb
        except (OSError, ValueError, IsegError) as exc:
            print(f"skipped {path.name}: {exc}", flush=True)
            continue
        found = Proposals.of(rgb, features)
        tmp = file.with_suffix(".tmp.npz")
        np.savez(tmp, tree=np.asarray(found.tree, np.int64).reshape(-1, 2), grid=np.asarray(found.grid),
                 size=np.asarray(found.size))
        os.replace(tmp, file)
        out[path] = found
    return out


def proposal_objects(images, cache, features: Optional[DinoFeatures] = None, version: str = "random",
                     seed: int = 0, limit: Optional[int] = None, progress: bool = True,
                     report: Optional[Callable[[int, int], None]] = None):
    """Training objects from unlabelled images (a folder, or a list of image files): each draw of an object is a
    fresh pseudo-object of its image (its own seeded generator), with no other objects known (``others`` None)."""
    from iseg_core.eval.datasets import DatasetError
    from iseg_core.image import IMAGE_SUFFIXES

    from .data import TrainingObject

    if isinstance(images, (str, os.PathLike)):
        folder = Path(images)
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    else:
        folder, images = "the images given", [Path(p) for p in images]
    if not images:
        raise DatasetError(f"no images in {folder}")
    images = images[:limit] if limit else images
    trees = build_proposals(images, Path(cache), features or DinoFeatures().eval(), version, progress, report)
    objects = []
    for k, (path, proposals) in enumerate(trees.items()):
        rng = np.random.default_rng([seed, k])

        def load(path=path, proposals=proposals, rng=rng):
            from iseg_core.image import load_image

            return load_image(path).rgb, proposals.sample(rng), None

        objects.append(TrainingObject(f"{path.name}#proposal", load, image_key=path.name))
    if not objects:
        raise DatasetError(f"no readable images in {folder}")
    return objects


__all__ = ["DinoFeatures", "MinstdUniform", "Proposals", "build_proposals", "dino_features", "leaves_under", "merge_tree",
           "proposal_objects", "sample_mask", "top_down_sample"]
