"""iseg's port of SAIC-IS's benchmark simulators (iseg_core/eval/saic_simulators.py) against SAIC-IS's own
generators and aggregators (../shared/reference/official/saic_is_protocol + saic_is, run in a subprocess by
tests/reference/saic_simulators_official.py with albumentations 1.3.1 installed for it): the same click, contour
and stroke for the same mask, prediction and seed, and the generator left at the same place."""
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from iseg_core.eval.saic_simulators import elastic, next_click, next_contour, next_stroke

from .conftest import data_dir
from .official import run_official


def cases():
    """The GrabCut photo's object; predictions: none yet, a shrunken one with a false blob (both errors), a grown
    one (false positives dominate); two seeds each."""
    m = np.array(Image.open(data_dir() / "GrabCut" / "boundary_GT" / "124080.bmp").convert("L"))
    gt = m > 128
    kernel = np.ones((15, 15), np.uint8)
    shrunk = cv2.erode(gt.astype(np.uint8), kernel) > 0
    shrunk[20:60, 30:90] = True
    grown = cv2.dilate(gt.astype(np.uint8), kernel, iterations=2) > 0
    return [(gt, pred, seed) for pred in (np.zeros_like(gt), shrunk, grown) for seed in (0, 7)]


@pytest.fixture(scope="module")
def official(photo, tmp_path_factory):
    out = tmp_path_factory.mktemp("saic_sim")
    arrays = {"count": len(cases())}
    for k, (gt, pred, seed) in enumerate(cases()):
        arrays.update({f"gt{k}": gt, f"pred{k}": pred, f"seed{k}": seed})
    np.savez(out / "cases.npz", **arrays)
    run_official("saic_simulators_official.py", "saic_is_protocol", photo, out, str(out / "cases.npz"), timeout=1800)
    return json.loads((out / "saic_simulators.json").read_text())


def test_same_clicks_contours_and_strokes(official):
    kinds = set()
    for (gt, pred, seed), ref in zip(cases(), official):
        valid = np.ones_like(gt)
        rng = np.random.RandomState(seed)
        not_clicked = np.ones_like(gt)
        clicks = []
        for _ in range(3):
            r, c, positive = next_click(pred, gt, not_clicked, valid, rng)
            not_clicked[r, c] = False
            clicks.append([r, c, positive])
        assert clicks == ref["clicks"]
        rng = np.random.RandomState(seed)
        outline, positive = next_contour(pred, gt, valid, rng)
        assert [positive, [list(p) for p in outline or []]] == ref["contour"]
        rng = np.random.RandomState(seed)
        points, positive = next_stroke(pred, gt, valid, rng)
        assert [positive, [list(p) for p in points or []]] == ref["stroke"]
        assert rng.random_sample() == ref["after"]  # as many draws as SAIC-IS's, in the same order
        kinds.add((ref["contour"][0], ref["stroke"][0], bool(ref["contour"][1]), bool(ref["stroke"][1])))
    assert (True, True, True, True) in kinds and any(not k[0] for k in kinds)  # positive and negative ones drawn


def test_simulators_are_random_but_repeatable():
    gt, pred, _ = cases()[2]
    valid = np.ones_like(gt)
    a = next_contour(pred, gt, valid, np.random.RandomState(3))[0]
    b = next_contour(pred, gt, valid, np.random.RandomState(3))[0]
    c = next_contour(pred, gt, valid, np.random.RandomState(4))[0]
    assert a == b and a != c


def test_elastic_keeps_shape_and_moves_pixels():
    mask = np.zeros((60, 80), np.uint8)
    mask[10:50, 20:60] = 1
    out = elastic(mask, 50.0, 5.0, 3.0, np.random.RandomState(0))
    assert out.shape == mask.shape and out.dtype == np.uint8 and 0 < out.sum() and not np.array_equal(out, mask)
