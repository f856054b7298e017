"""iseg's MST port against MST's official code (../shared/reference/official/mst: branch main, the slim model its
README evaluates; ../shared/reference/official/mst_448: branch mst-448, a different architecture).

Each branch's ``AdaptiveVitModel`` is built with seeded random weights (every norm, the fusion gates) in a
subprocess (tests/reference/mst_official.py, with stand-ins for mmengine / flash_attn), saved as its trainer
saves it, and loaded here through the registry's reader. CI size: width 192, 3 heads, depth 12 (so the score
blocks stay at 3, 7, 11, on the same code paths); the ViT-B 448 networks run behind the ``large`` marker.
"""
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from iseg_core.errors import CheckpointError
from iseg_core.models import list_models, load_model, read_weights
from iseg_core.models.checkpoint import read_checkpoint_object
from iseg_core.models.clickmap import RitmSession, RitmZoomIn, build_clickmap
from iseg_core.models.clickmap.maps import points_tensor
from iseg_core.models.clickmap.mst import MST_CONFIGS, patch_loss, score_loss, token_losses
from iseg_core.prompts import Click

from .official import assert_logits_equal, assert_probs_equal, assert_truncated_refused, run_official

NAMES = {"main": "mst_vit_b448_slim_cocolvis", "448": "mst_vit_b448_cocolvis"}
CLICKS = [(120, 200, True), (60, 40, False), (250, 300, True)]  # (row, col, positive) in the 448 frame
CI = dict(dim=192, heads=3, fpn=(48, 96, 192, 384), head_channels=64)


def run_variant(variant, photo, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"mst_{variant}")
    run_official("mst_official.py", "mst", photo, out, variant, timeout=1800)
    return out / f"mst_{variant}.pth", dict(np.load(out / f"mst_{variant}.npz"))


@pytest.fixture(scope="module", params=["main_ci", "448_ci"])
def official(request, photo, tmp_path_factory):
    return request.param, *run_variant(request.param, photo, tmp_path_factory)


def config_of(variant):
    config = MST_CONFIGS[NAMES[variant.split("_")[0]]]
    return replace(config, **CI) if variant.endswith("_ci") else config


def load(variant, path, as_variant=None):
    """The file through the registry's reader, built at its size as ``as_variant``'s architecture."""
    as_variant = as_variant or variant
    name = NAMES[as_variant.split("_")[0]]
    return build_clickmap(name, read_weights(name, path), torch.device("cpu"), config=config_of(as_variant))


def clicks(n, shape):
    """The script's clicks, given in the squashed 448 frame, as image pixels."""
    h, w = shape[:2]
    return [Click(c * w / 448, r * h / 448, positive=p) for r, c, p in CLICKS[:n]]


def compare_network(variant, path, ref, photo):
    model = load(variant, path)
    emb = model.encode(photo)
    one = model.decode(emb, clicks(1, photo.shape))
    assert_logits_equal(one.logits, ref["one"])
    three = model.decode(emb, clicks(3, photo.shape), prev_logits=torch.from_numpy(ref["one"]))
    assert_logits_equal(three.logits, ref["three"])
    assert np.abs(ref["one"] - ref["three"]).max() > 1.0  # the clicks matter
    h, w = photo.shape[:2]
    negative = model.decode(emb, [Click(150 * w / 448, 200 * h / 448, positive=False)])
    # without a positive click no token is selected: the answer still comes, from the base tokens alone
    assert np.abs(negative.logits.numpy() - ref["negative"]).max() <= 1e-3
    # each score block selects the same tokens with the same scores (what the kernel at the click chose)
    chosen = []
    with torch.no_grad():
        logits, _ = model.network(emb.data, torch.zeros(1, 1, 448, 448), points_tensor([CLICKS[0]], "cpu"),
                                  chosen=chosen)
    assert len(chosen) == 3 and np.abs(logits[0, 0].numpy() - ref["one"]).max() <= 1e-3
    for b, sel in enumerate(chosen):
        for s in "sl":
            scores, index = ref[f"block{b}_pos_scores_{s}"], ref[f"block{b}_idx_tokens_{s}"]
            ours = sel[f"index_{s}"][0].numpy()
            assert np.abs(sel[f"scores_{s}"][0].numpy() - scores).max() <= 1e-5
            # the same ranking, except that tokens whose scores tie to float precision may swap places
            assert np.abs(scores[ours] - scores[index]).max() <= 1e-6
            kept = int((np.abs(ref[f"block{b}_sel_tokens_{s}"]).sum(1) > 0).sum())
            mine, theirs = np.argsort(ours[:kept]), np.argsort(index[:kept])
            assert np.array_equal(ours[:kept][mine], index[:kept][theirs])  # the same tokens kept
            assert np.abs(sel[f"tokens_{s}"][0].numpy()[:kept][mine] - ref[f"block{b}_sel_tokens_{s}"][:kept][theirs]).max() <= 1e-4
        kept = np.abs(ref[f"block{b}_sel_tokens_s"]).sum(1) > 0
        assert 0 < kept.sum() < kept.size  # some rows zeroed by valid_k: that rule is exercised
    return model, chosen


def test_network_equals_official(official, photo):
    variant, path, ref = official
    compare_network(variant, path, ref, photo)


def test_token_losses_equal_official(official, photo):
    """MST's PatchLoss and ScoreLoss on the first click's selection, against its own loss modules."""
    variant, path, ref = official
    model = load(variant, path)
    chosen = []
    with torch.no_grad():
        model.network(model.encode(photo).data, torch.zeros(1, 1, 448, 448), points_tensor([CLICKS[0]], "cpu"),
                      chosen=chosen)
    gt = torch.from_numpy(ref["gt"])[None]
    valid = torch.ones_like(gt)
    total = float(token_losses(chosen, gt, valid, (448, 448)))
    assert float(ref["patch_loss"]) > 0.05 and float(ref["score_loss"]) > 0.01  # both losses are at work
    assert abs(total - float(ref["patch_loss"]) - float(ref["score_loss"])) <= 1e-5
    cells = {"s": torch.nn.functional.interpolate(gt[:, None], size=(56, 56)).flatten(1),
             "l": torch.nn.functional.interpolate(gt[:, None], size=(14, 14)).flatten(1)}
    assert abs(float(patch_loss(chosen, {k: v.bool() for k, v in cells.items()})) - float(ref["patch_loss"])) <= 1e-5
    ones = {k: torch.ones_like(v) for k, v in cells.items()}
    assert abs(float(score_loss(chosen, cells, ones)) - float(ref["score_loss"])) <= 1e-5


def test_evaluation_sequence_equals_official(official, photo):
    """Four clicks through MST's evaluation: ZoomIn on every click (crops squashed to 448, down to 20 px, the
    clicks outside a crop dropped), flip averaging; ours (RitmSession) against its own NoBRS predictor."""
    variant, path, ref = official
    zoom = RitmZoomIn(target_size=448, skip_clicks=-1, square=True, min_crop=20, drop_outside=True)
    session = RitmSession(load(variant, path), zoom, flip=True)
    session.set_image(photo)
    zoom_clicks = [Click(240.0, 150.0), Click(420.0, 40.0, positive=False), Click(100.0, 200.0), Click(460.0, 300.0)]
    boxes = []
    for k in range(len(zoom_clicks)):
        probs = session.predict(zoom_clicks[:k + 1])
        assert_probs_equal(probs, ref[f"zoom{k}_prob"])
        assert session.box == tuple(int(v) for v in ref[f"zoom{k}_roi"])
        boxes.append(session.box)
        assert probs.max() > 0.3 and (k == 1 or 0 < (probs > 0.49).mean() < 1)  # (the negative click empties it)
    # the crop moved, and a click fell outside one (the negative click at (40, 420)), which MST drops
    r0, r1, c0, c1 = boxes[1]
    assert (r1 - r0 + 1, c1 - c0 + 1) != photo.shape[:2] and not (r0 <= 40 <= r1 and c0 <= 420 <= c1)


def test_clicks_outside_the_crop_dropped(official, photo):
    """A negative second click just beyond the crop the sequence above takes (1.5 px right of it, 5 px in its
    448 frame: its disk would reach in): kept, it changes the answer; MST drops it."""
    variant, path, ref = official
    model = load(variant, path)
    r0, r1, c0, c1 = (int(v) for v in ref["zoom1_roi"])
    edge = Click(c1 + 1.5, 0.5 * (r0 + r1), positive=False)
    zoom = RitmZoomIn(target_size=448, skip_clicks=-1, square=True, min_crop=20, drop_outside=True)
    answers = []
    for z in (zoom, replace(zoom, drop_outside=False)):
        session = RitmSession(model, z, flip=True)
        session.set_image(photo)
        session.predict([Click(240.0, 150.0)])
        answers.append(session.predict([Click(240.0, 150.0), edge]))
        assert session.box == (r0, r1, c0, c1)
    assert np.abs(answers[0] - answers[1]).max() > 1e-3


def test_branches_told_apart(official, photo, tmp_path):
    """A file of the other branch is refused naming both (the official loader half-loads it silently); a
    SimpleClick file is not MST, an MST file not SimpleClick; wrong keys are named; a cut file is refused."""
    variant, path, _ = official
    other = "448_ci" if variant == "main_ci" else "main_ci"
    this_name, other_name = NAMES[variant.split("_")[0]], NAMES[other.split("_")[0]]
    with pytest.raises(CheckpointError, match=rf"is an MST .*-branch model, not the .* branch that {other_name} is .*"
                                              rf"load it as {this_name}"):
        load(variant, path, as_variant=other)
    with pytest.raises(CheckpointError, match=r"does not fit simpleclick_vit_b448_cocolvis .*its config says "
                                              r"AdaptiveVitModel\(embed_dim=192"):
        load_model("simpleclick_vit_b448_cocolvis", path, device="cpu")
    with pytest.raises(CheckpointError, match=rf"does not fit {this_name} .*its config says AdaptiveVitModel\(embed_dim=192"):
        load_model(this_name, path, device="cpu")  # the registry's ViT-B: the file's config says its width
    obj = read_checkpoint_object(path)
    del obj["config"]
    state = obj["state_dict"]
    plain = {k: v for k, v in state.items() if ".score" not in k and not k.split(".")[-1].startswith(
        ("gamma", "norm3", "norm4", "norm5", "norm6", "norm7")) and "score_mlp" not in k}
    torch.save({"state_dict": plain}, tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match="has no MST score blocks"):
        load(variant, tmp_path / "plain.pth")
    state["backbone.blocks.7.score.cross_attn.sr.weight"] = state["backbone.blocks.7.score.cross_attn.sr.weight"][:, :, :2]
    state.pop("head.conv_seg.bias")
    torch.save(obj, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"head\.conv_seg\.bias.*|backbone\.blocks\.7\.score\.cross_attn\.sr\.weight"):
        load(variant, tmp_path / "bad.pth")
    assert_truncated_refused(path, this_name, tmp_path)


def test_registry_and_eval_cli(official):
    from argparse import Namespace

    from iseg_core.eval.__main__ import native_session, preprocessing

    assert {"mst_vit_b448_slim_cocolvis", "mst_vit_b448_cocolvis"} <= set(list_models())
    variant, path, _ = official
    model = load(variant, path)
    args = Namespace(zoom_in=True, zoom_target=None, dataset="davis", flip=True, first="click", max_clicks=20,
                     target_iou=0.9)
    session = native_session(args, model)
    assert session.flip and session.zoom.square and session.zoom.target_size == 672
    assert session.zoom.min_crop == 20 and session.zoom.drop_outside
    line = preprocessing(args, model)
    assert "MST (" in line and "clicks outside the crop dropped" in line and "min 20 px" in line


@pytest.mark.large
@pytest.mark.parametrize("variant", ["main", "448"])
def test_vit_b_equals_official(variant, photo, tmp_path_factory):
    """The published size: ViT-B 448 (155.5M parameters on main, 201.6M on mst-448)."""
    path, ref = run_variant(variant, photo, tmp_path_factory)
    model, _ = compare_network(variant, path, ref, photo)
    sizes = {"main": 155_523_521, "448": 201_564_353}
    assert sum(p.numel() for p in model.network.parameters()) == sizes[variant]
    fresh = load_model(NAMES[variant], path, device="cpu")  # the registry's own configuration loads it
    assert fresh.config == model.config


def test_weights_entry_names_file_page_and_folder(official, monkeypatch, tmp_path):
    """MST's files live on SharePoint (links that expire): asking for one names the file, the page that links it
    and the weights folder; a file put there is the one that loads (this CI-sized one then refused by its config)."""
    from iseg_core import weights
    from iseg_core.errors import WeightsUnavailableError

    variant, path, _ = official
    monkeypatch.setenv("ISEG_WEIGHTS_DIR", str(tmp_path))
    name = NAMES[variant.split("_")[0]]
    spec = weights.KNOWN_CHECKPOINTS[name]
    assert spec.licence == "Apache-2.0" and spec.url is None and spec.repo_id is None
    with pytest.raises(WeightsUnavailableError) as err:
        load_model(name, checkpoint="hub", device="cpu")
    msg = str(err.value)
    assert f"Put {spec.filename} (unknown size) into {tmp_path}/" in msg and "no automatic download" in msg
    assert ("sharepoint.com" if variant.startswith("main") else "github.com/hahamyt/mst/tree/mst-448") in msg
    (tmp_path / spec.filename).write_bytes(path.read_bytes())
    assert weights.on_disk(name) == tmp_path / spec.filename
    with pytest.raises(CheckpointError, match=rf"{re.escape(spec.filename)} does not fit {name} .*embed_dim=192"):
        load_model(name, checkpoint="hub", device="cpu")
