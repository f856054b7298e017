"""iseg's label-free proposals (training/proposals.py) against MIS's compiled op: its C++ merging and sampling
sources (../shared/reference/official/mis/mis/ops/src) built here with cmake, Eigen and pybind11
(tests/reference/mis_op.py), then called on the same features and seeds."""
from pathlib import Path

import numpy as np
import pytest
import torch

from iseg_core.errors import CheckpointError
from training.proposals import (DinoFeatures, MinstdUniform, Proposals, leaves_under, merge_tree, sample_mask,
                                top_down_sample)

from .official import official_dir
from .reference.mis_op import build


@pytest.fixture(scope="module")
def op():
    try:
        return build(official_dir("mis") / "mis" / "mis" / "ops" / "src")
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def photo_tree(photo):
    """The real photo's tree from DINO ViT-S/8 features (seeded random weights: the path is real, the regions are
    not meaningful)."""
    torch.manual_seed(0)
    features, grid = DinoFeatures().eval()(photo)
    return features, grid


@pytest.mark.parametrize("rows,cols,dim", [(13, 17, 384), (31, 23, 64)])
def test_tree_equals_mis_op_on_random_features(op, rows, cols, dim):
    """Tie-free features (random normal, float32): the same merges in the same order, each pair in MIS's order."""
    features = np.random.default_rng(0).standard_normal((rows * cols, dim)).astype(np.float32)
    ours = merge_tree(features, rows, cols)
    assert ours == [tuple(p) for p in op.bottom_up_merging(features, rows, cols)]
    assert len(ours) == rows * cols - 1 and ours[-1][1] == 2 * rows * cols - 3  # the last merge makes the root
    sizes = np.ones(2 * rows * cols - 1, int)  # region sizes grow by merging neighbours
    for k, (a, b) in enumerate(ours):
        sizes[rows * cols + k] = sizes[a] + sizes[b]
    assert sizes[-1] == rows * cols


def test_tie_rule(op):
    """Where two candidate merges cost the same to float32 precision, MIS's float32 heap and scikit-learn's float64
    one may pick differently: here, at merge 102, region 737 takes leaf 213 in MIS's op and leaf 211 in ours,
    whose Ward costs differ by 2.5e-8 relative (float32 resolves 6e-8). Up to there the trees agree."""
    rows, cols = 31, 23
    features = np.random.default_rng(31).standard_normal((rows * cols, 64)).astype(np.float32)
    ours, theirs = merge_tree(features, rows, cols), [tuple(p) for p in op.bottom_up_merging(features, rows, cols)]
    first = next(k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b)
    assert first == 102 and ours[first] == (211, 737) and theirs[first] == (213, 737)

    def cost(a, b):
        ca, cb = (features[leaves_under(ours, x)].astype(np.float64) for x in (a, b))
        return len(ca) * len(cb) / (len(ca) + len(cb)) * ((ca.mean(0) - cb.mean(0)) ** 2).sum()

    assert abs(cost(211, 737) - cost(213, 737)) / cost(211, 737) < np.finfo(np.float32).eps


def test_photo_tree_and_samples_equal_mis_op(op, photo_tree):
    features, (rows, cols) = photo_tree
    assert (rows, cols) == (41, 61) and features.shape == (rows * cols, 384) and features.dtype == np.float32
    tree = merge_tree(features, rows, cols)
    assert tree == [tuple(p) for p in op.bottom_up_merging(features, rows, cols)]
    seeds = list(range(300)) + [2 ** 31 - 1, 2 ** 31 - 2, 987654321]
    sizes = set()
    for seed in seeds:
        ours = top_down_sample(tree, 0.9, seed)
        assert ours == list(op.top_down_sampling(tree, 0.9, seed))
        sizes.add(len(ours))
    assert len(sizes) > 20  # regions of many granularities, from single patches to the whole image
    for node in (0, rows * cols, rows * cols + 500, 2 * rows * cols - 2):
        assert leaves_under(tree, node) == list(op.get_leaf_descendents(tree, node))


def test_engine_draws_as_libstdcpp():
    """minstd_rand0's first outputs for seed 1 (16807, 282475249, ...) and the canonical double of two draws."""
    u = MinstdUniform(1)
    assert [u._draw() for _ in range(3)] == [16807, 282475249, 1622650073]
    v = MinstdUniform(1)()
    r = 2147483646.0
    assert v == (16806 + 282475248 * r) / (r * r) and 0 <= v < 1
    assert MinstdUniform(0).x == 1 and MinstdUniform(2 ** 31 - 1).x == 1  # a zero state is replaced by 1


def test_pseudo_objects(photo, photo_tree):
    features, grid = photo_tree
    proposals = Proposals(merge_tree(features, *grid), grid, photo.shape[:2])
    rng = np.random.default_rng(0)
    masks = [proposals.sample(rng) for _ in range(20)]
    for m in masks:
        assert m.shape == photo.shape[:2] and m.dtype == bool
        assert m.mean() > 0.04  # more than 5 % of the grid (the last rows / columns are resized away)
    assert len({m.tobytes() for m in masks}) > 5  # different objects
    # a grid region painted as 8 px cells, resized to the image (nearest)
    direct = sample_mask(proposals.tree, grid, (grid[0] * 8, grid[1] * 8), np.random.default_rng(0))
    blocks = direct.reshape(grid[0], 8, grid[1], 8)
    assert (blocks.all(axis=(1, 3)) | ~blocks.any(axis=(1, 3))).all()


def test_dino_features_position_and_weights(tmp_path):
    torch.manual_seed(0)
    dino = DinoFeatures().eval()
    assert dino.position(28, 28) is dino.vit.pos_embed  # its training grid: the table itself
    table = dino.position(41, 61)
    assert table.shape == (1, 41 * 61 + 1, 384) and torch.equal(table[:, 0], dino.vit.pos_embed[:, 0])
    by_size = torch.nn.functional.interpolate(dino.vit.pos_embed[:, 1:].reshape(1, 28, 28, -1).permute(0, 3, 1, 2),
                                              size=(41, 61), mode="bicubic").permute(0, 2, 3, 1).reshape(1, -1, 384)
    assert (table[:, 1:] - by_size).abs().max() > 1e-3  # DINO's scale-factor resize is not a size-based one
    state = dict(dino.vit.state_dict())
    state["head.weight"] = torch.zeros(1)  # DINO's files may carry a head: left out
    other = DinoFeatures()
    other.load_dino(state, "dino.pth")
    assert all(torch.equal(v, other.vit.state_dict()[k]) for k, v in dino.vit.state_dict().items())
    state["pos_embed"] = state["pos_embed"][:, :100]
    with pytest.raises(CheckpointError, match="pos_embed"):
        other.load_dino(state, "dino.pth")


def test_dino_weights_download_once_and_load(online, monkeypatch):
    """DINO's file through the weights registry: downloaded from its address (a local server here) into weights/,
    then read from there; its keys loaded strictly into the feature extractor."""
    import io
    from dataclasses import replace

    from iseg_core import weights
    from training.proposals import dino_features

    from .hub_server import HubServer

    torch.manual_seed(1)
    ref = DinoFeatures()
    buf = io.BytesIO()
    torch.save(ref.vit.state_dict(), buf)
    key = "dino/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth"
    with HubServer({key: buf.getvalue()}) as srv:
        spec = weights.KNOWN_CHECKPOINTS["dino_vits8"]
        assert spec.licence == "Apache-2.0" and spec.url.endswith("/" + key)
        monkeypatch.setitem(weights.KNOWN_CHECKPOINTS, "dino_vits8", replace(spec, url=f"{srv.url}/{key}"))
        features, version = dino_features()
        assert [r for r in srv.requests if r[0] == "GET"] == [("GET", key)]
        dino_features()  # now on disk: no second download
        assert len([r for r in srv.requests if r[0] == "GET"]) == 1
    assert (online / "weights" / "dino_deitsmall8_pretrain.pth").is_file() and version.startswith("dino_vits8:")
    assert all(torch.equal(v, features.vit.state_dict()[k]) for k, v in ref.vit.state_dict().items())
