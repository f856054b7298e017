"""iseg's SimpleClick port against SimpleClick's official code (../shared/reference/official/simpleclick).

The official plain-ViT network (its xTiny configuration: the same code path as ViT-B/L/H, small enough for
CI) is built with seeded random weights in a subprocess (tests/reference/simpleclick_official.py), saved the
way its trainer saves it (the pickled config carries the head's loss module), and loaded here with
``load_model``; both sides then run on a real photo.
"""
import numpy as np
import pytest
import torch

from iseg_core.errors import CheckpointError, PromptError
from iseg_core.models import load_model
from iseg_core.models.checkpoint import read_checkpoint_object
from iseg_core.models.clickmap import RitmSession, RitmZoomIn
from iseg_core.predictor import Predictor
from iseg_core.prompts import Click, Scribble

from .official import assert_logits_equal, assert_probs_equal, assert_truncated_refused, run_official

NAME = "simpleclick_vit_xtiny448_cocolvis"
CLICKS = [(120, 200, True), (60, 40, False), (250, 300, True)]  # (row, col, positive) in the 448 frame


@pytest.fixture(scope="module")
def official(photo, tmp_path_factory):
    out = tmp_path_factory.mktemp("simpleclick")
    run_official("simpleclick_official.py", "simpleclick", photo, out)
    return out / "simpleclick_xtiny.pth", dict(np.load(out / "simpleclick_xtiny.npz"))


def clicks(n, shape):
    """The script's clicks, given in the squashed 448 frame, as image pixels."""
    h, w = shape[:2]
    return [Click(c * w / 448, r * h / 448, positive=p) for r, c, p in CLICKS[:n]]


def test_network_equals_official(official, photo):
    path, ref = official
    model = load_model(NAME, path, device="cpu")
    emb = model.encode(photo)  # the whole image squashed to the 448 x 448 frame
    assert tuple(emb.data.shape[-2:]) == (448, 448)
    one = model.decode(emb, clicks(1, photo.shape))
    assert_logits_equal(one.logits, ref["one"])
    three = model.decode(emb, clicks(3, photo.shape), prev_logits=torch.from_numpy(ref["one"]))
    assert_logits_equal(three.logits, ref["three"])
    assert np.abs(ref["one"] - ref["three"]).max() > 5e-3  # the clicks matter: a wrong click map would show
    # through the Predictor, the logits come back at the image's size (bilinear, corners aligned)
    predictor = Predictor(model)
    predictor.set_image(photo)
    pred = predictor.predict(clicks(1, photo.shape), soft=True)
    assert pred.soft.shape == photo.shape[:2]
    up = torch.nn.functional.interpolate(torch.from_numpy(ref["one"])[None, None], size=photo.shape[:2],
                                         mode="bilinear", align_corners=True)[0, 0].numpy()
    assert np.abs(pred.soft - up).max() <= 1e-3


@pytest.mark.parametrize("prefix,size,flip", [("zoom", 448, False), ("flipzoom", 448, True), ("zoom672", 672, True)])
def test_evaluation_sequence_equals_official(official, photo, prefix, size, flip):
    """Four clicks through SimpleClick's evaluation setting: ZoomIn from the first click (the whole image is the
    first crop), crops squashed to size x size (672: the position embedding resized bicubically, as its script
    does), flip averaging; ours (RitmSession) against the official predictor. The random network's masks
    spread over the photo, so every crop here is the whole image; crops that move are tested with RITM."""
    path, ref = official
    session = RitmSession(load_model(NAME, path, device="cpu"), RitmZoomIn(target_size=size, skip_clicks=-1, square=True),
                          flip=flip)
    session.set_image(photo)
    zoom_clicks = [Click(240.0, 150.0), Click(420.0, 40.0, positive=False), Click(100.0, 200.0), Click(460.0, 300.0)]
    for k in range(len(zoom_clicks)):
        probs = session.predict(zoom_clicks[:k + 1])
        assert_probs_equal(probs, ref[f"{prefix}{k}_prob"])
        assert session.box == tuple(int(v) for v in ref[f"{prefix}{k}_roi"])
        assert 0 < (probs > 0.49).mean() < 1
    if prefix == "zoom672":  # a different frame gives a different answer: the resized embedding is in use
        assert np.abs(ref["zoom6723_prob"] - ref["flipzoom3_prob"]).max() > 1e-3


def test_simpleclick_checkpoint_checked(official, tmp_path):
    path, _ = official
    with pytest.raises(CheckpointError, match=r"does not fit simpleclick_vit_b448_cocolvis .*its config says "
                                              r"SimpleClick PlainVitModel\(embed_dim=160, depth=8"):
        load_model("simpleclick_vit_b448_cocolvis", path, device="cpu")
    with pytest.raises(CheckpointError, match=r"does not fit ritm_hrnet18s_cocolvis .*PlainVitModel"):
        load_model("ritm_hrnet18s_cocolvis", path, device="cpu")
    obj = read_checkpoint_object(path)  # the pickled loss module comes back as an inert stand-in
    assert type(obj["config"]["params"]["head_params"]["value"]["loss_decode"]).__name__ == "CrossEntropyLoss"
    del obj["config"]
    obj["state_dict"]["backbone.pos_embed"] = obj["state_dict"]["backbone.pos_embed"][:, :100]
    torch.save(obj, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"1 wrongly shaped keys: backbone.pos_embed \(1, 100, 160\)"):
        load_model(NAME, tmp_path / "bad.pth", device="cpu")
    assert_truncated_refused(path, NAME, tmp_path)
    model = load_model(NAME, path, device="cpu")
    with pytest.raises(PromptError, match="takes clicks only, not a scribble"):
        model.decode(model.encode(np.zeros((64, 64, 3), np.uint8)), [Scribble([(1, 1), (5, 5)])])


def test_eval_cli_runs_simpleclicks_setting(official):
    """``python -m iseg_core.eval --zoom-in --flip`` evaluates SimpleClick models as SimpleClick's script does:
    every click zoomed, square crops of 448 px (672 on DAVIS), flip averaging in the session."""
    from argparse import Namespace

    from iseg_core.eval.__main__ import native_session

    model = load_model(NAME, official[0], device="cpu")
    davis = native_session(Namespace(zoom_in=True, zoom_target=None, dataset="davis", flip=True), model)
    assert davis.flip and davis.zoom.square and davis.zoom.skip_clicks == -1 and davis.zoom.target_size == 672
    assert native_session(Namespace(zoom_in=True, zoom_target=None, dataset="grabcut", flip=False), model).zoom.target_size == 448
