import numpy as np
import pytest

from iseg_core import Box, Click, Contour, PromptError, Scribble
from iseg_core.prompts import resample_polyline, validate_prompts


def test_click_outside_the_image_names_the_prompt_and_the_bounds():
    with pytest.raises(PromptError, match=r"prompt 1 \(Click\) has point \(640, 10\) outside the 640x480 image"):
        validate_prompts([Click(10, 10), Click(640, 10)], (480, 640))
    with pytest.raises(PromptError, match="outside"):
        validate_prompts([Click(-0.5, 10)], (480, 640))
    validate_prompts([Click(639.9, 479.9)], (480, 640))  # the last pixel is inside


def test_box_may_touch_the_far_edges_but_not_cross_them():
    validate_prompts([Box(0, 0, 640, 480)], (480, 640))
    with pytest.raises(PromptError, match="Box"):
        validate_prompts([Box(0, 0, 641, 480)], (480, 640))


def test_box_is_normalised_and_must_have_extent():
    b = Box(50, 60, 10, 20)
    assert (b.x0, b.y0, b.x1, b.y1) == (10, 20, 50, 60)
    with pytest.raises(PromptError, match="at least 1 pixel"):
        Box(5, 5, 5.5, 30)


def test_malformed_prompts_are_rejected():
    with pytest.raises(PromptError, match="finite"):
        Click(float("nan"), 3)
    with pytest.raises(PromptError, match="at least one point"):
        Scribble([])
    with pytest.raises(PromptError, match="at least 3 points"):
        Contour([(0, 0), (5, 5)])
    with pytest.raises(PromptError, match="encloses"):
        Contour([(0, 0), (5, 5), (10, 10)])  # collinear
    with pytest.raises(PromptError, match="not a Click"):
        validate_prompts([(3, 4)], (10, 10))
    with pytest.raises(PromptError, match="Scribble point 1"):
        Scribble([(1, 2), "x"])


def test_scribble_and_contour_points_are_range_checked():
    with pytest.raises(PromptError, match=r"prompt 0 \(Scribble\)"):
        validate_prompts([Scribble([(5, 5), (5, 500)])], (480, 640))
    with pytest.raises(PromptError, match=r"prompt 0 \(Contour\)"):
        validate_prompts([Contour([(5, 5), (700, 5), (5, 40)])], (480, 640))


def test_resample_polyline_spaces_points_by_arc_length():
    pts = resample_polyline([(0, 0), (10, 0), (10, 10)], 5)
    np.testing.assert_allclose(pts, [[0, 0], [5, 0], [10, 0], [10, 5], [10, 10]])
    np.testing.assert_allclose(resample_polyline([(0, 0), (10, 0)], 1), [[5, 0]])
    np.testing.assert_allclose(resample_polyline([(3, 4)], 3), [[3, 4]] * 3)
