"""iseg's SAIC-IS multi-input HRNet18 and SegFormer (MiT-B4) against SAIC-IS's official model code
(../shared/reference/official/saic_is), number for number: clicks, and a contour and a stroke as the first
interaction, each drawn into its own maps as SAIC-IS draws them.

Each official network is built with seeded random weights in a subprocess (tests/reference/saicis_official.py;
the folder lacks SAIC-IS's ``isegm.data``, so the script gives the one enum the model imports), saved the way
its trainer saves it (the pickled config carries SAIC-IS's enum members), and loaded here with ``load_model``.
The network is compared on the photo squashed to the 448 frame both sides use, and SAIC-IS's own predictor with
its evaluation transforms against iseg's SaicSession (the script gives the predictor stand-ins for the parts of
``isegm.data`` it reads).
"""
import numpy as np
import pytest
import torch

from iseg_core.errors import CheckpointError, PromptError
from iseg_core.models import load_model
from iseg_core.models.clickmap.zoom import SaicSession, SaicZoomIn
from iseg_core.predictor import Predictor
from iseg_core.prompts import Box, Click, Contour, Scribble

from .official import assert_logits_equal, assert_probs_equal, assert_truncated_refused, run_official

NAME = "saicis_hrnet18_multi_cocolvis"
CLICKS = [(120, 200, True), (60, 40, False), (250, 300, True)]  # (row, col, positive) in the 448 frame
CONTOUR = [(70, 110), (60, 210), (190, 230), (200, 100)]  # (row, col) in image pixels, as in the script
STROKE = [(140, 90), (130, 150), (150, 200), (135, 240)]


FILES = {NAME: "saicis_h18_multi", "saicis_segformer_b4_multi_cocolvis": "saicis_segformer_multi"}


@pytest.fixture(scope="module")
def built(photo, tmp_path_factory):
    out = tmp_path_factory.mktemp("saicis")
    run_official("saicis_official.py", "saic_is", photo, out)
    return {name: (out / f"{stem}.pth", dict(np.load(out / f"{stem}.npz"))) for name, stem in FILES.items()}


@pytest.fixture(scope="module")
def official(built):
    return built[NAME]


def clicks(n, shape):
    h, w = shape[:2]
    return [Click(c * w / 448, r * h / 448, positive=p) for r, c, p in CLICKS[:n]]


def xy(rows_cols):
    return [(float(c), float(r)) for r, c in rows_cols]


@pytest.mark.parametrize("name", list(FILES), ids=["hrnet18", "segformer_b4"])
def test_clicks_contour_and_stroke_equal_official(built, photo, name):
    path, ref = built[name]
    model = load_model(name, path, device="cpu")
    assert not model.config.accumulate and model.prompt_kinds == ("click", "scribble", "contour")
    emb = model.encode(photo)
    assert tuple(emb.data.shape[-2:]) == (448, 448)
    assert_logits_equal(model.decode(emb, clicks(1, photo.shape)).logits, ref["one"])
    assert_logits_equal(model.decode(emb, clicks(3, photo.shape), prev_logits=torch.from_numpy(ref["one"])).logits,
                        ref["three"])
    assert_logits_equal(model.decode(emb, [Contour(xy(CONTOUR))]).logits, ref["contour"])
    assert_logits_equal(model.decode(emb, [Scribble(xy(STROKE))]).logits, ref["stroke"])
    # each kind of input reaches the network: a wrong or missing map would show
    for key in ("three", "contour", "stroke"):
        assert np.abs(ref[key] - ref["one"]).max() > 5e-3, key


@pytest.mark.parametrize("prefix", ["seq", "contourseq"])
def test_evaluation_sequences_equal_official_predictor(built, photo, prefix):
    """Through SAIC-IS's own predictor with its evaluation transforms (ZoomIn, crops to long side 400,
    ResizeToFixedSize 448, flip averaging) and through iseg's SaicSession: three clicks (the crop from the
    second), and a contour followed by two clicks (the crop from the contour): the same crops and
    probabilities."""
    path, _ = built[NAME]
    ref = dict(np.load(path.parent / "saicis_h18_multi_seq.npz"))
    session = SaicSession(load_model(NAME, path, device="cpu"), SaicZoomIn(target_size=400))
    session.set_image(photo)
    prompts = {"seq": [Click(240.0, 150.0), Click(420.0, 40.0, positive=False), Click(100.0, 200.0)],
               "contourseq": [Contour(xy(CONTOUR)), Click(160.0, 150.0), Click(420.0, 40.0, positive=False)]}[prefix]
    for k in range(3):
        probs = session.predict(prompts[:k + 1])
        assert_probs_equal(probs, ref[f"{prefix}{k}_prob"])
        assert (session.box or (-1, -1, -1, -1)) == tuple(int(v) for v in ref[f"{prefix}{k}_roi"])
        assert 0 < (probs > 0.49).mean() < 1
    if prefix == "contourseq":  # a real crop: the contour's box, grown
        assert session.box == (30, 230, 65, 265)


def test_a_stroke_after_clicks_shows_only_the_stroke(official, photo):
    """SAIC-IS's inference, for a model that does not accumulate its kinds of input: a stroke step sees that
    stroke alone (and the previous mask); the next click step sees every click again."""
    path, ref = official
    predictor = Predictor(load_model(NAME, path, device="cpu"))
    predictor.set_image(photo)
    stroke_only = predictor.predict([Scribble(xy(STROKE))], soft=True).logits
    after_clicks = predictor.predict(clicks(2, photo.shape) + [Scribble(xy(STROKE))], soft=True).logits
    assert torch.equal(stroke_only, after_clicks)
    with_click = predictor.predict([Scribble(xy(STROKE))] + clicks(1, photo.shape), soft=True).logits
    assert_logits_equal(with_click, ref["one"])


def test_saicis_checkpoint_checked(built, official, tmp_path):
    path, _ = official
    with pytest.raises(CheckpointError, match=r"does not fit saicis_segformer_b4_multi_cocolvis .*its config says "
                                              r"HRNetModel"):
        load_model("saicis_segformer_b4_multi_cocolvis", path, device="cpu")
    segformer = built["saicis_segformer_b4_multi_cocolvis"][0]
    with pytest.raises(CheckpointError, match=r"does not fit saicis_hrnet18_multi_cocolvis .*its config says "
                                              r"SAIC-IS SegFormerModel"):
        load_model(NAME, segformer, device="cpu")
    assert load_model("saicis_segformer_b4_multi_cocolvis", segformer, device="cpu").config.aux_head
    with pytest.raises(CheckpointError, match=r"does not fit ritm_hrnet18_cocolvis .*its config says SAIC-IS "
                                              r"HRNetModel\(.*norm_radius=3.*inputs=\('point', 'contour', 'stroke'\)"):
        load_model("ritm_hrnet18_cocolvis", path, device="cpu")
    assert_truncated_refused(path, NAME, tmp_path)
    model = load_model(NAME, path, device="cpu")
    with pytest.raises(PromptError, match="takes clicks, contours and strokes only, not a box"):
        model.decode(model.encode(np.zeros((64, 64, 3), np.uint8)), [Box(1, 1, 30, 30)])


def test_eval_cli_runs_saicis_setting(official, photo):
    """``python -m iseg_core.eval --zoom-in --flip`` evaluates SAIC-IS models as SAIC-IS does (its session:
    crops to 400 px, 600 on DAVIS, squashed to 448; contours and strokes may come first); a large image is
    first limited to long side 1000 and the probabilities come back at its size."""
    from argparse import Namespace

    from iseg_core.eval.__main__ import native_session

    model = load_model(NAME, official[0], device="cpu")
    davis = native_session(Namespace(zoom_in=True, zoom_target=None, dataset="davis", flip=True), model)
    assert isinstance(davis, SaicSession) and davis.zoom.target_size == 600 and davis.flip
    assert "contour" in davis.first_interactions
    big = np.ascontiguousarray(np.repeat(np.repeat(photo, 3, 0), 3, 1))  # 1443x963
    davis.set_image(big)
    assert tuple(davis.image.shape[-2:]) == (int(963 / 1443 * 1000 + 0.5), 1000)
    probs = davis.predict([Contour([(x * 3, y * 3) for x, y in xy(CONTOUR)])])
    assert probs.shape == big.shape[:2] and 0 < (probs > 0.49).mean() < 1
