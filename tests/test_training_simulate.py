"""Training-time interaction simulation on real masks (GrabCut ground truth) and hand-made cases."""
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from iseg_core import IsegError
from iseg_core.eval import open_dataset
from iseg_core.prompts import validate_prompts
from tests.conftest import data_dir
from training.simulate import (SamplerConfig, correction_click, deformed_contour, error_scribble, interior_scribble,
                               jittered_box, sample_clicks, sample_prompts)


@pytest.fixture(scope="module")
def masks():
    out = []
    for k, s in enumerate(open_dataset("grabcut", data_dir() / "GrabCut")):
        if k % 10 == 0:
            _, gt, ignore = s.load()
            out.append(gt)
    return out


def _at(mask, p):
    return bool(mask[int(p[1]), int(p[0])])


def test_clicks_fall_where_they_should(masks):
    rng = np.random.default_rng(0)
    cfg = SamplerConfig(max_positive=6, max_negative=6, negative_weights=(0.0, 1.0, 0.0))
    seen_neg = 0
    for gt in masks:
        for _ in range(5):
            clicks = sample_clicks(gt, rng, cfg)
            pos = [c for c in clicks if c.positive]
            neg = [c for c in clicks if not c.positive]
            assert 1 <= len(pos) <= 6 and len(neg) <= 6 and clicks[:len(pos)] == pos
            assert all(_at(gt, (c.x, c.y)) for c in pos) and not any(_at(gt, (c.x, c.y)) for c in neg)
            validate_prompts(clicks, gt.shape)
            # band negatives: near the object, not anywhere in the background
            diag = np.hypot(*gt.shape)
            ys, xs = np.nonzero(gt)
            for c in neg:
                assert np.min(np.hypot(xs - c.x, ys - c.y)) <= 0.15 * diag + 2
            seen_neg += len(neg)
    assert seen_neg > 0


def test_negatives_on_other_objects_and_determinism():
    gt = np.zeros((60, 80), bool)
    gt[10:30, 10:30] = True
    other = np.zeros_like(gt)
    other[40:55, 50:75] = True
    cfg = SamplerConfig(max_negative=5, negative_weights=(0.0, 0.0, 1.0))
    a = sample_clicks(gt, np.random.default_rng(3), cfg, others=other)
    b = sample_clicks(gt, np.random.default_rng(3), cfg, others=other)
    assert a == b
    assert all(_at(other, (c.x, c.y)) for c in a if not c.positive)
    assert sample_clicks(gt, np.random.default_rng(4), cfg, others=other) != a


def test_boxes_are_jittered_around_the_object(masks):
    rng = np.random.default_rng(1)
    for gt in masks:
        ys, xs = np.nonzero(gt)
        tight = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        boxes = [jittered_box(gt, rng, 0.1) for _ in range(10)]
        assert len({(b.x0, b.y0) for b in boxes}) > 1
        for b in boxes:
            validate_prompts([b], gt.shape)
            bw, bh = tight[2] - tight[0], tight[3] - tight[1]
            assert abs(b.x0 - tight[0]) <= 0.1 * bw + 1e-6 and abs(b.y1 - tight[3]) <= 0.1 * bh + 1e-6


def test_scribbles_and_contours(masks):
    rng = np.random.default_rng(2)
    for gt in masks:
        s = interior_scribble(gt, rng)
        assert s.positive and all(_at(gt, p) for p in s.points)
        c = deformed_contour(gt, rng, shift=0.02)
        validate_prompts([s, c], gt.shape)
        poly = [float(v) for p in c.points for v in p]
        raster = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], *gt.shape))).astype(bool)
        assert (raster & gt).sum() / (raster | gt).sum() > 0.6  # a trace of the object, not of something else


def test_error_scribbles_go_through_the_largest_error():
    gt = np.zeros((80, 100), bool)
    gt[10:70, 10:60] = True
    pred = gt.copy()
    pred[30:50, 20:50] = False  # a big miss inside
    pred[5:8, 80:90] = True  # a small false alarm
    s = error_scribble(gt, pred, np.random.default_rng(0))
    assert s.positive and all(gt[int(y), int(x)] and not pred[int(y), int(x)] for x, y in s.points)
    pred2 = gt.copy()
    pred2[20:60, 60:95] = True  # a big false alarm
    s2 = error_scribble(gt, pred2, np.random.default_rng(0))
    assert not s2.positive and all(pred2[int(y), int(x)] and not gt[int(y), int(x)] for x, y in s2.points)
    assert error_scribble(gt, gt, np.random.default_rng(0)) is None


def test_correction_click_is_the_evaluation_clicker():
    gt = np.zeros((50, 50), bool)
    gt[10:40, 10:40] = True
    pred = np.zeros_like(gt)
    c = correction_click(gt, pred)
    assert c.positive and gt[int(c.y), int(c.x)]
    assert abs(c.x - 25) <= 1 and abs(c.y - 25) <= 1  # the centre of the miss


def test_prompt_mix_and_bad_masks(masks):
    rng = np.random.default_rng(5)
    kinds = set()
    for _ in range(200):
        prompts = sample_prompts(masks[0], rng)
        validate_prompts(prompts, masks[0].shape)
        kinds.add(type(prompts[0]).__name__)
    assert kinds == {"Click", "Box", "Scribble", "Contour"}
    with pytest.raises(IsegError, match="empty"):
        sample_prompts(np.zeros((10, 10), bool), rng)
    with pytest.raises(IsegError, match="2-D"):
        jittered_box(np.ones((4, 4, 3), bool), rng)
