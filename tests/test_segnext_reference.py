"""iseg's SegNext port against SegNext's official code (../shared/reference/official/segnext).

The official ViT-B "sax2" network (SegNext's smallest: its only backbone) is built with seeded random
weights in a subprocess (tests/reference/segnext_official.py), saved the way its trainer saves it, and loaded
here with ``load_model``; both sides then run on a real photo. The image is encoded once per side.
"""
import numpy as np
import pytest
import torch

from iseg_core.errors import CheckpointError, PromptError
from iseg_core.models import load_model
from iseg_core.predictor import Predictor
from iseg_core.prompts import Box, Click

from .official import assert_logits_equal, assert_probs_equal, assert_truncated_refused, run_official

NAME = "segnext_vit_b1024_sax2_cocolvis"
CLICKS = [(120, 200, True), (60, 40, False), (250, 300, True)]  # (row, col, positive), as in the script


@pytest.fixture(scope="module")
def official(photo, tmp_path_factory):
    out = tmp_path_factory.mktemp("segnext")
    run_official("segnext_official.py", "segnext", photo, out)
    return out / "segnext_sax2.pth", dict(np.load(out / "segnext_sax2.npz"))


@pytest.fixture(scope="module")
def model(official):
    return load_model(NAME, official[0], device="cpu")


def clicks(n):
    return [Click(float(c), float(r), positive=p) for r, c, p in CLICKS[:n]]


def test_network_and_predictor_equal_official(official, model, photo):
    """One click, three clicks with the previous mask (the encoder once, the fusion per click), then three
    clicks through iseg's Predictor against SegNext's predictor."""
    _, ref = official
    predictor = Predictor(model)
    predictor.set_image(photo)
    emb = predictor._current()
    assert tuple(emb.data.shape) == (1, 64 * 64, 768)  # the cached image features
    assert_logits_equal(model.decode(emb, clicks(1)).logits, ref["one"])
    assert_logits_equal(model.decode(emb, clicks(3), prev_logits=torch.from_numpy(ref["one"])).logits, ref["three"])
    assert np.abs(ref["one"] - ref["three"]).max() > 5e-3  # the clicks matter: a wrong click map would show
    prev = None
    for k in range(3):
        pred = predictor.predict(clicks(k + 1), prev_logits=prev, soft=True)
        assert_probs_equal(torch.sigmoid(torch.from_numpy(pred.soft)).numpy(), ref[f"seq{k}_prob"], threshold=0.5)
        assert np.array_equal(pred.mask, predictor.mask_from_logits(pred.logits))
        prev = pred.logits


def test_segnext_checkpoint_checked(official, tmp_path):
    path, _ = official
    with pytest.raises(CheckpointError, match=r"does not fit segnext_vit_b1024_sax1_cocolvis .*its config says "
                                              r"SegNext PlainVitModel\(.*fusion_depth=2"):
        load_model("segnext_vit_b1024_sax1_cocolvis", path, device="cpu")
    with pytest.raises(CheckpointError, match=r"does not fit simpleclick_vit_b448_cocolvis .*SegNext PlainVitModel"):
        load_model("simpleclick_vit_b448_cocolvis", path, device="cpu")
    assert_truncated_refused(path, NAME, tmp_path)


def test_segnext_prompts_and_frames(model, photo):
    with pytest.raises(PromptError, match="takes clicks only, not a box"):
        model.decode(model.encode(photo), [Box(10, 10, 200, 200)])
    # above 2048 px the logits are kept at a long side of 2048 and come back at the image's size
    big = np.zeros((1300, 2600, 3), np.uint8)
    big[300:900, 600:1800] = 200
    emb = model.encode(big)
    dec = model.decode(emb, [Click(1000.0, 600.0)])
    assert tuple(dec.logits.shape) == (1024, 2048)
    assert model.upsample_logits(emb, dec.logits).shape == big.shape[:2]
    with pytest.raises(PromptError, match="frame is"):
        model.decode(emb, [Click(1000.0, 600.0)], prev_logits=torch.zeros(1300, 2600))
