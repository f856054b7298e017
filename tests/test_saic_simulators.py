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


def test_saic_benchmark_cli_prints_its_rows(tmp_path):
    """``python -m iseg_core.eval --protocol saic-is`` on GrabCut with a random-weight SAIC-IS HRNet18: rows for
    click-first, contour-first and stroke-first orders and all 27, with IoU, bIoU and NoI; a click-only model is
    refused."""
    import subprocess
    import sys

    from .conftest import ROOT

    out = tmp_path / "saic.json"
    run = subprocess.run([sys.executable, "-m", "iseg_core.eval", "--protocol", "saic-is", "--model",
                          "saicis_hrnet18_multi_cocolvis", "--dataset", "grabcut", "--root",
                          str(data_dir() / "GrabCut"), "--limit", "1", "--max-clicks", "2", "--threads", "2",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "SAIC-IS's benchmark: 27 orders" in run.stdout and "| orders | n | objects | IoU | bIoU | NoI@85" in run.stdout
    for row in ("| click first | 9 | 1 |", "| contour first | 9 | 1 |", "| stroke first | 9 | 1 |", "| all orders | 27 | 1 |"):
        assert row in run.stdout
    result = json.loads(out.read_text())
    orders = [tuple(o["order"]) for o in result["objects"][0]]
    assert len(set(orders)) == 27 and all(len(o["ious"]) == 2 for o in result["objects"][0])
    firsts = {o["order"][0]: o["drawn"][0] for o in result["objects"][0]}
    assert firsts["click"] == "click" and firsts["contour"] in ("contour", "empty contour")
    run = subprocess.run([sys.executable, "-m", "iseg_core.eval", "--protocol", "saic-is", "--model",
                          "ritm_hrnet18s_cocolvis", "--dataset", "grabcut", "--root", str(data_dir() / "GrabCut"),
                          "--limit", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "takes clicks only" in run.stderr


def test_negative_contours_reach_the_negative_maps_and_nothing_else_takes_them():
    from iseg_core import load_model
    from iseg_core.errors import PromptError
    from iseg_core.models.clickmap.model import EmptyOutline
    from iseg_core.prompts import Contour, prompt_from_dict, prompt_to_dict

    neg = Contour([(10, 10), (40, 10), (40, 40)], positive=False)
    assert prompt_from_dict(prompt_to_dict(neg)) == neg and prompt_to_dict(neg)["positive"] is False
    assert "positive" not in prompt_to_dict(Contour([(10, 10), (40, 10), (40, 40)]))  # stored as before
    saic = load_model("saicis_hrnet18_multi_cocolvis", device="cpu")
    maps = saic.drawn_maps([neg], lambda r, c: (r, c), (64, 64))
    assert maps[0].sum() == 0 and maps[1].sum() > 0
    assert saic.drawn_maps([EmptyOutline("contour")], lambda r, c: (r, c), (64, 64)).sum() == 0
    image = np.zeros((64, 64, 3), np.uint8)
    for name in ("sam_mini", "classical"):
        model = load_model(name, device="cpu")
        with pytest.raises(PromptError, match="contours around the object only"):
            model.decode(model.encode(image), [neg])
