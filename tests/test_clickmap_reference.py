"""iseg's RITM port against RITM's official code (../shared/reference/official/ritm), number for number.

The official HRNet18s "itermask" network is built with seeded random weights in a subprocess
(tests/reference/ritm_official.py), saved the way its trainer saves it, and loaded here with ``load_model``;
both sides then run on a real photo.
"""
import numpy as np
import pytest
import torch

from iseg_core.errors import CheckpointError, IsegError, PromptError
from iseg_core.models import load_model
from iseg_core.models.clickmap import RitmSession, RitmZoomIn
from iseg_core.predictor import Predictor
from iseg_core.prompts import Box, Click

from .conftest import data_dir
from .official import assert_logits_equal, assert_probs_equal, assert_truncated_refused, run_official

CLICKS = [(120, 200, True), (60, 40, False), (250, 300, True)]  # (row, col, positive), as in the script
NAME = "ritm_hrnet18s_cocolvis"


@pytest.fixture(scope="module")
def official(photo, tmp_path_factory):
    out = tmp_path_factory.mktemp("ritm")
    run_official("ritm_official.py", "ritm", photo, out)
    return out / "ritm_h18s.pth", dict(np.load(out / "ritm_h18s.npz"))


def clicks(n):
    return [Click(float(c), float(r), positive=p) for r, c, p in CLICKS[:n]]


def test_network_equals_official(official, photo):
    path, ref = official
    model = load_model(NAME, path, device="cpu")
    emb = model.encode(photo)
    one = model.decode(emb, clicks(1))
    assert_logits_equal(one.logits, ref["one"])
    three = model.decode(emb, clicks(3), prev_logits=torch.from_numpy(ref["one"]))
    assert_logits_equal(three.logits, ref["three"])
    # the clicks matter in this network (10x the tolerance), so a wrong click map would show
    assert np.abs(ref["one"] - ref["three"]).max() > 5e-3


def test_predictor_sequence_equals_official(official, photo):
    """Three clicks through iseg's Predictor (previous logits fed back) and RITM's NoBRS predictor."""
    path, ref = official
    predictor = Predictor(load_model(NAME, path, device="cpu"))
    predictor.set_image(photo)
    prev = None
    for k in range(3):
        pred = predictor.predict(clicks(k + 1), prev_logits=prev, soft=True)
        assert_logits_equal(pred.logits, ref[f"seq{k}"])
        probs = torch.sigmoid(torch.from_numpy(pred.soft)).numpy()  # soft = full-size logits
        assert np.abs(probs - ref[f"seq{k}_prob"]).max() < 1e-4  # what the official predictor returns
        assert np.array_equal(pred.mask, predictor.mask_from_logits(pred.logits))
        prev = pred.logits


@pytest.mark.parametrize("flip", [False, True], ids=["zoom", "zoom+flip"])
def test_zoom_in_sequence_equals_official(official, photo, flip):
    """Four clicks through RITM's ZoomIn (crop and previous map resized to long side 400, pasted back), and
    with its flip averaging (RITM's evaluation setting), ours (RitmSession) against the official predictor:
    the same crops, the same probabilities."""
    path, ref = official
    session = RitmSession(load_model(NAME, path, device="cpu"), RitmZoomIn(target_size=400), flip=flip)
    session.set_image(photo)
    zoom_clicks = [Click(240.0, 150.0), Click(420.0, 40.0, positive=False), Click(100.0, 200.0), Click(460.0, 300.0)]
    crops = []
    prefix = "flipzoom" if flip else "zoom"
    for k in range(len(zoom_clicks)):
        probs = session.predict(zoom_clicks[:k + 1])
        theirs = ref[f"{prefix}{k}_prob"]
        assert_probs_equal(probs, theirs)
        roi = tuple(int(v) for v in ref[f"{prefix}{k}_roi"])
        assert (session.box or (-1, -1, -1, -1)) == roi
        crops.append(roi)
    assert crops[0] == (-1, -1, -1, -1) and crops[1] != crops[0]  # click 1 on the whole image, then a crop
    if flip:  # averaging the mirrored view changes the answer: the comparison would see a wrong mirror
        assert np.abs(ref["flipzoom0_prob"] - ref["zoom0_prob"]).max() > 1e-3


def test_official_checkpoint_checked(official, tmp_path):
    path, _ = official
    with pytest.raises(CheckpointError, match=r"does not fit ritm_hrnet18_cocolvis .*HRNetModel\(width=18, ocr_width=48, small=True"):
        load_model("ritm_hrnet18_cocolvis", path, device="cpu")
    obj = torch.load(path, weights_only=True)
    # a state dict without its config: shapes are checked and the first wrong keys named
    del obj["config"]
    obj["state_dict"] = {k: v for k, v in obj["state_dict"].items() if not k.startswith("feature_extractor.cls_head")}
    torch.save(obj, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"2 missing keys: .*feature_extractor.cls_head.bias"):
        load_model(NAME, tmp_path / "partial.pth", device="cpu")
    assert_truncated_refused(path, NAME, tmp_path)


def test_clickmap_prompts_and_frames(photo):
    model = load_model(NAME, device="cpu")
    emb = model.encode(photo)
    with pytest.raises(PromptError, match="takes clicks only, not a box"):
        model.decode(emb, [Box(10, 10, 200, 200)])
    with pytest.raises(PromptError, match="frame is"):
        model.decode(emb, clicks(1), prev_logits=torch.zeros(10, 10))
    # a large image is resized to the frame's long side (800) and the logits come back at its full size
    big = np.ascontiguousarray(np.repeat(np.repeat(photo, 3, 0), 3, 1))  # 1443x963
    emb = model.encode(big)
    assert tuple(emb.data.shape[-2:]) == (round(963 * 800 / 1443), 800)
    dec = model.decode(emb, [Click(600.0, 360.0)])
    assert model.upsample_logits(emb, dec.logits).shape == big.shape[:2]


def test_protocol_loop_runs_the_ritm_session(official, photo):
    """The evaluation loop hands click-map models to their own RITM session: replaying its prompt log through
    a fresh session gives the IoUs it recorded (threshold 0.49, growing prompt list, crops from click 2)."""
    from iseg_core.eval.datasets import grabcut
    from iseg_core.eval.loop import ObjectEvaluator
    from iseg_core.eval.metrics import iou
    from iseg_core.prompts import prompt_from_dict

    path, _ = official
    model = load_model(NAME, path, device="cpu")
    sample = next(s for s in grabcut(data_dir() / "GrabCut") if s.name == "124080")
    image, gt, ignore = sample.load()
    run = ObjectEvaluator(Predictor(model), session=RitmSession(model, RitmZoomIn())).run(
        sample.name, image, gt, ignore, max_clicks=3, target_iou=1.01)
    assert len(run.ious) == 3
    replay = RitmSession(model, RitmZoomIn())
    replay.set_image(image)
    prompts = [prompt_from_dict(d) for d in run.prompts]
    for k in range(3):
        assert iou(gt, replay.predict(prompts[:k + 1]) > 0.49, ignore) == run.ious[k]
    assert replay.box is not None
    with pytest.raises(IsegError, match="without the generic ZoomIn and flip"):
        ObjectEvaluator(Predictor(model), flip=True, session=replay)
    # the CLI's choice: RITM's setting for click-map models (600 px crops on DAVIS, flip in the session)
    from argparse import Namespace

    from iseg_core.eval.__main__ import native_session

    chosen = native_session(Namespace(zoom_in=True, zoom_target=None, dataset="davis", flip=True), model)
    assert chosen.flip and chosen.zoom.target_size == 600
    assert native_session(Namespace(zoom_in=True, zoom_target=None, dataset="grabcut", flip=False), model).zoom.target_size == 400
    assert native_session(Namespace(zoom_in=False, zoom_target=None, dataset="davis", flip=True), model) is None
