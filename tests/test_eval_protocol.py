"""The click simulator and the metrics on hand-made cases whose answers are worked out by hand."""
import numpy as np
import pytest

from iseg_core import Click
from iseg_core.eval import boundary_band, boundary_iou, iou, next_click, noc, summarize


def blank(h=10, w=12):
    return np.zeros((h, w), bool)


def test_first_click_goes_to_the_interior_most_object_pixel():
    gt = blank()
    gt[2:7, 3:8] = True  # 5x5 square, centre (x=5, y=4)
    assert next_click(gt, blank()) == Click(5, 4, True)


def test_tie_between_missed_and_extra_regions_gives_a_negative_click():
    gt, pred = blank(), blank()
    gt[1:4, 1:4] = True  # missed 3x3 block (FN), max distance 2
    pred[5:8, 6:9] = True  # extra 3x3 block (FP), max distance 2
    assert next_click(gt, pred) == Click(7, 6, False)
    pred[5:8, 6:9] = False
    pred[5:7, 6:8] = True  # FP now 2x2: distance 1 < 2, so the click is positive
    assert next_click(gt, pred) == Click(2, 2, True)


def test_first_maximum_in_raster_order():
    gt = blank()
    gt[4:6, 2:8] = True  # a 2-row bar: every pixel is at distance 1 from outside
    assert next_click(gt, blank()) == Click(2, 4, True)


def test_image_border_counts_as_outside():
    gt = blank(10, 20)
    gt[:, :6] = True  # object touching the left, top and bottom borders
    # distance to the border padding is x + 1 and y + 1: the first pixel at the maximum (3) is (2, 2),
    # not column 0 as it would be if the border were object
    assert next_click(gt, blank(10, 20)) == Click(2, 2, True)


def test_ignore_pixels_are_in_neither_error_map():
    gt, pred, ignore = blank(), blank(), blank()
    gt[1:8, 1:8] = True
    pred[1:8, 1:8] = True
    gt[2:6, 9:12] = True  # missed region, but all of it ignored
    ignore[2:6, 9:12] = True
    assert next_click(gt, pred, ignore) is None
    pred[0, 0] = True  # a one-pixel false positive is now the only error
    assert next_click(gt, pred, ignore) == Click(0, 0, False)


def test_already_clicked_pixels_are_never_chosen_again():
    gt = blank()
    gt[3:6, 3:6] = True  # 3x3: the centre (4, 4) is the unique maximum
    assert next_click(gt, blank()) == Click(4, 4, True)
    # the centre is excluded: the next best pixels have distance 1, the first in raster order is (3, 3)
    assert next_click(gt, blank(), clicked=[Click(4, 4, True)]) == Click(3, 3, True)


def test_no_error_no_click_and_shape_mismatch_is_an_error():
    gt = blank()
    gt[2:5, 2:5] = True
    assert next_click(gt, gt.copy()) is None
    with pytest.raises(Exception, match="one shape"):
        next_click(gt, blank(5, 5))


def test_iou_excludes_ignore_pixels_from_both_sets():
    gt, pred, ignore = blank(), blank(), blank()
    gt[0:4, 0:4] = True  # 16 px
    pred[0:4, 0:6] = True  # 24 px
    assert iou(gt, pred) == pytest.approx(16 / 24)
    ignore[:, 4:6] = True  # the 8 extra pixels are unknown: perfect
    assert iou(gt, pred, ignore) == 1.0
    assert iou(blank(), blank()) == 1.0


def test_boundary_band_width_follows_the_diagonal_ratio():
    mask = np.zeros((100, 100), bool)
    mask[20:80, 20:80] = True
    # d = round(0.02 * 141.4) = 3: a 3-pixel ring
    band = boundary_band(mask, 0.02)
    assert band[20:23, 50].all() and not band[23, 50] and not band[50, 50]
    assert band.sum() == 60 * 60 - 54 * 54
    # touching the border: the border side counts as boundary too
    edge = np.zeros((100, 100), bool)
    edge[:, :50] = True
    assert boundary_band(edge, 0.02)[50, 0]
    shifted = np.roll(mask, 2, axis=1)
    assert 0 < boundary_iou(mask, shifted, ratio=0.02) < iou(mask, shifted)


def test_noc_nof_and_miou_follow_the_protocol():
    reach_at_3 = [0.5, 0.8, 0.91, 0.96]
    never = [0.3] * 20
    at_last = [0.5] * 19 + [0.97]  # reaches the target only at click 20: a failure by the protocol's count
    assert noc(reach_at_3, 0.90) == 3 and noc(reach_at_3, 0.95) == 4 and noc(never, 0.85) == 20
    s = summarize([reach_at_3, never, at_last])
    assert s["NoC@90"] == pytest.approx((3 + 20 + 20) / 3)
    assert s["NoF@90"] == 2 and s["NoF@85"] == 2
    assert s["mIoU@1"] == pytest.approx((0.5 + 0.3 + 0.5) / 3)
    assert s["mIoU@5"] == pytest.approx((0.96 + 0.3 + 0.5) / 3)  # a stopped run keeps its last IoU
