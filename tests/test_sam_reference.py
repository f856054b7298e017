"""Our SAM port against the official implementation (PyPI segment-anything) on a real photo.

The full ViT-B comparison is the acceptance test of checkpoint compatibility: the official architecture
is built with seeded random weights, saved as an official checkpoint file, loaded through
``load_model("sam_vit_b", checkpoint=path)``, and both predictors see the same prompts.
"""
import importlib

import numpy as np
import pytest
import torch

from iseg_core import Box, Click, Contour, Predictor, Scribble, load_model

from .conftest import official_tiny_sam, tiny_segmenter

LOGIT_TOL = 1e-3
# Full-resolution logits this close to the threshold are float noise: the official code itself gives
# either sign there depending on the CPU's SIMD path. Everywhere else the masks must be identical.
NOISE_BAND = 1e-5


def _reference_predictor(sam):
    return importlib.import_module("segment_anything").SamPredictor(sam)


def _ref_predict(ref_pred, **kwargs):
    """The official prediction: full-res logits (thresholded by us at 0, as SAM does) and low-res logits."""
    logits, scores, low = ref_pred.predict(return_logits=True, **kwargs)
    return logits, scores, low


def _compare(ref_low, ref_full, ours, what):
    diff = float(np.abs(ref_low - ours.logits[0].cpu().numpy()).max())
    assert diff <= LOGIT_TOL, f"{what}: low-res logits differ by {diff}"
    ref_mask = ref_full > 0
    assert ref_mask.shape == ours.mask.shape
    flipped = ref_mask != ours.mask
    outside_noise = flipped & (np.abs(ref_full) >= NOISE_BAND)
    assert not outside_noise.any(), f"{what}: {int(outside_noise.sum())} mask pixels differ beyond float noise"
    assert flipped.sum() <= 10, f"{what}: {int(flipped.sum())} pixels at the threshold differ"
    # Guard against a vacuous pass: the compared masks must have both classes.
    assert 0.01 < ours.mask.mean() < 0.99, f"{what}: degenerate mask, comparison proves nothing"
    return int(flipped.sum())


def _three_cases(ref_pred, ours, image):
    h, w = image.shape[:2]
    # 1) one positive click: SAM's multimask output, best-scored mask kept.
    m, s, lr = _ref_predict(ref_pred, point_coords=np.array([[w * 0.5, h * 0.5]]), point_labels=np.array([1]), multimask_output=True)
    best = int(np.argmax(s))
    p1 = ours.predict([Click(w * 0.5, h * 0.5)])
    flips = [_compare(lr[best], m[best], p1, "one click")]
    assert p1.score == pytest.approx(float(s[best]), abs=1e-4)

    # 2) three clicks of both signs and the previous low-res logits.
    pts = np.array([[w * 0.5, h * 0.5], [w * 0.3, h * 0.6], [w * 0.7, h * 0.2]])
    labels = np.array([1, 0, 1])
    m2, s2, lr2 = _ref_predict(ref_pred, point_coords=pts, point_labels=labels, mask_input=lr[best][None], multimask_output=False)
    p2 = ours.predict([Click(*pts[0]), Click(*pts[1], positive=False), Click(*pts[2])], prev_logits=p1.logits)
    flips.append(_compare(lr2[0], m2[0], p2, "three clicks + previous logits"))

    # 3) a box.
    box = np.array([w * 0.2, h * 0.2, w * 0.8, h * 0.9])
    m3, s3, lr3 = _ref_predict(ref_pred, box=box, multimask_output=False)
    p3 = ours.predict([Box(*box)])
    flips.append(_compare(lr3[0], m3[0], p3, "box"))
    return flips


@pytest.fixture(scope="module")
def vit_b_pair(tmp_path_factory, photo):
    build = importlib.import_module("segment_anything.build_sam")
    torch.manual_seed(1234)
    ref = build.sam_model_registry["vit_b"](checkpoint=None).eval()
    path = tmp_path_factory.mktemp("ckpt") / "sam_vit_b_random.pth"
    torch.save(ref.state_dict(), path)
    ours = Predictor(load_model("sam_vit_b", checkpoint=path, device="cpu"))
    ours.set_image(photo)
    ref_pred = _reference_predictor(ref)
    ref_pred.set_image(photo)
    return ref_pred, ours


def test_vit_b_checkpoint_matches_official_on_a_photo(vit_b_pair, photo):
    ref_pred, ours = vit_b_pair
    emb_diff = float((ref_pred.features - ours._current().data).abs().max())
    assert emb_diff < 1e-3, f"image embeddings differ by {emb_diff}"
    flips = _three_cases(ref_pred, ours, photo)
    print(f"ViT-B: embedding max |diff| {emb_diff:.2e}; pixels at the threshold that differ: {flips}")


def test_tiny_architecture_matches_official_for_more_prompt_mixes(tiny_pair, photo):
    ref, seg = tiny_pair
    ref_pred = _reference_predictor(ref)
    ref_pred.set_image(photo)
    ours = Predictor(seg)
    ours.set_image(photo)
    _three_cases(ref_pred, ours, photo)
    h, w = photo.shape[:2]
    # Box and points together (no padding point is added when a box is present), multimask forced on.
    pts = np.array([[w * 0.4, h * 0.5], [w * 0.9, h * 0.1]])
    box = np.array([w * 0.1, h * 0.1, w * 0.7, h * 0.95])
    m, s, lr = _ref_predict(ref_pred, point_coords=pts, point_labels=np.array([1, 0]), box=box, multimask_output=True)
    best = int(np.argmax(s))
    p = ours.predict([Click(*pts[0]), Click(*pts[1], positive=False), Box(*box)], multimask=True)
    _compare(lr[best], m[best], p, "box + clicks, multimask")


def test_scribble_and_contour_reach_sam_as_points_box_and_mask(tiny_pair, photo):
    """A scribble equals the clicks it is sampled into; a contour equals its box + interior points + mask."""
    from iseg_core.models.sam.prompting import to_sam_inputs

    ref, seg = tiny_pair
    ours = Predictor(seg)
    ours.set_image(photo)
    h, w = photo.shape[:2]
    stroke = Scribble([(w * 0.3, h * 0.5), (w * 0.5, h * 0.45), (w * 0.7, h * 0.6)])
    emb = ours._current()
    sam_in = to_sam_inputs([stroke], emb.original_size, emb.extra["input_size"], (256, 256), 1024)
    assert sam_in.points is not None and 2 <= len(sam_in.points) <= 6 and sam_in.labels.tolist() == [1] * len(sam_in.points)
    scale = np.array([emb.extra["input_size"][1] / w, emb.extra["input_size"][0] / h])  # per axis, as SAM
    as_clicks = [Click(*(q / scale)) for q in sam_in.points]
    np.testing.assert_allclose(
        ours.predict([stroke]).logits.numpy(), ours.predict(as_clicks).logits.numpy(), atol=1e-5
    )

    poly = [(w * 0.3, h * 0.2), (w * 0.7, h * 0.25), (w * 0.65, h * 0.9), (w * 0.35, h * 0.85)]
    contour_in = to_sam_inputs([Contour(poly)], emb.original_size, emb.extra["input_size"], (256, 256), 1024)
    xs, ys = (np.array(poly) * scale).T
    np.testing.assert_allclose(contour_in.box, [xs.min(), ys.min(), xs.max(), ys.max()], atol=1e-3)
    assert contour_in.mask_logits.shape == (256, 256)
    inside = contour_in.mask_logits > 0
    assert 0.05 < inside.mean() < 0.5
    for x, y in contour_in.points:  # interior points lie inside the polygon's raster
        assert inside[int(y // 4), int(x // 4)]
    ref_pred = _reference_predictor(ref)
    ref_pred.set_image(photo)
    m, s, lr = _ref_predict(
        ref_pred, point_coords=contour_in.points / scale, point_labels=contour_in.labels,
        box=contour_in.box / np.tile(scale, 2), mask_input=contour_in.mask_logits[None], multimask_output=False,
    )
    _compare(lr[0], m[0], ours.predict([Contour(poly)]), "contour")
