"""MobileSAM, SAM 2.1 and HQ-SAM against their official code on a real photo (GrabCut 124080).

Each official network is built with seeded random weights and saved as its publishers save it (SAM 2:
``{"model": state_dict}``; MobileSAM and HQ-SAM: a flat state dict); ``load_model(name, checkpoint=file)``
reads that file, and both predictors see the same prompts: one click (multimask), three clicks of both signs
with the previous low-res logits, a box, a box with clicks (and, for SAM 2.1, a mask input alone). Low-res
logits within 1e-3; full-resolution masks identical except at pixels whose logit is within 1e-3 of 0.

References: the PyPI packages ``sam2`` (1.1.0) and ``segment-anything-hq`` (0.3); MobileSAM's code in the shared
folder (``../shared/reference/official/mobile_sam``, imported by this test only).
"""
import importlib

import numpy as np
import pytest
import torch

from iseg_core import Box, Click, Predictor, load_model
from iseg_core.errors import CheckpointError

from .official import assert_truncated_refused, official_dir
from .reference.sam_family import build_official

LOGIT_TOL = 1e-3
SAM2_CLAMP = 32.0  # SAM 2's predictor hands back low-res logits clamped to +-32


def _compare(ref_low, ref_full, ours, what, clamp=None):
    low = ours.logits[0].cpu().numpy()
    if clamp is not None:
        low = np.clip(low, -clamp, clamp)
    diff = float(np.abs(ref_low - low).max())
    assert diff <= LOGIT_TOL, f"{what}: low-res logits differ by {diff}"
    ref_mask = ref_full > 0
    assert ref_mask.shape == ours.mask.shape
    flipped = ref_mask != ours.mask
    beyond = flipped & (np.abs(ref_full) > LOGIT_TOL)
    assert not beyond.any(), f"{what}: {int(beyond.sum())} mask pixels differ away from the threshold"
    # a vacuous pass is no pass: the compared masks have both classes
    assert 0.005 < ours.mask.mean() < 0.995, f"{what}: degenerate mask ({ours.mask.mean():.4f}), comparison proves nothing"
    return int(flipped.sum())


def _cases(ref_predict, ours: Predictor, image: np.ndarray, clamp=None, best_of_multimask=True):
    """The prompt cases of the issue. ``ref_predict(**kw)`` returns (full logits, scores, low-res logits) of the
    official predictor; ``best_of_multimask``: the official output is three masks to pick the best from (SAM 2,
    MobileSAM) rather than one (HQ-SAM picks inside its decoder)."""
    h, w = image.shape[:2]
    flips = {}

    def pick(m, s, lr):
        best = int(np.argmax(s)) if best_of_multimask else 0
        return m[best], float(s[best]), lr[best]

    # 1) one positive click, multimask (the ambiguous case)
    m, s, lr = pick(*ref_predict(point_coords=np.array([[w * 0.5, h * 0.5]]), point_labels=np.array([1]),
                                 multimask_output=True))
    p1 = ours.predict([Click(w * 0.5, h * 0.5)])
    flips["one click"] = _compare(lr, m, p1, "one click", clamp)
    assert p1.score == pytest.approx(s, abs=1e-4)

    # 2) three clicks of both signs and the previous low-res logits
    pts = np.array([[w * 0.5, h * 0.5], [w * 0.3, h * 0.6], [w * 0.7, h * 0.2]])
    labels = np.array([1, 0, 1])
    m2, s2, lr2 = ref_predict(point_coords=pts, point_labels=labels, mask_input=lr[None], multimask_output=False)
    p2 = ours.predict([Click(*pts[0]), Click(*pts[1], positive=False), Click(*pts[2])], prev_logits=p1.logits)
    flips["three clicks + previous logits"] = _compare(lr2[0], m2[0], p2, "three clicks + previous logits", clamp)
    assert p2.score == pytest.approx(float(s2[0]), abs=1e-4)

    # 3) a box
    box = np.array([w * 0.2, h * 0.2, w * 0.8, h * 0.9])
    m3, _, lr3 = ref_predict(box=box, multimask_output=False)
    flips["box"] = _compare(lr3[0], m3[0], ours.predict([Box(*box)]), "box", clamp)

    # 4) a box and clicks of both signs
    pts4 = np.array([[w * 0.4, h * 0.5], [w * 0.9, h * 0.1]])
    box4 = np.array([w * 0.1, h * 0.1, w * 0.7, h * 0.95])
    m4, _, lr4 = ref_predict(point_coords=pts4, point_labels=np.array([1, 0]), box=box4, multimask_output=False)
    p4 = ours.predict([Click(*pts4[0]), Click(*pts4[1], positive=False), Box(*box4)])
    flips["box + clicks"] = _compare(lr4[0], m4[0], p4, "box + clicks", clamp)
    return flips, p2


def _pair(tmp_path_factory, photo, name, seed):
    """The official network of ``name`` with seeded random weights, saved as its publisher saves it, loaded into
    ours by ``name``; both predictors given the photo: (official predictor, ours, file)."""
    torch.manual_seed(seed)
    ref, predictor_class, wrap = build_official(name, str(official_dir("mobile_sam")))
    path = tmp_path_factory.mktemp("ckpt") / f"{name}.pt"
    torch.save(wrap(ref.state_dict()), path)
    ref_pred = predictor_class(ref)
    ref_pred.set_image(photo)
    ours = Predictor(load_model(name, checkpoint=path, device="cpu"))
    ours.set_image(photo)
    return ref_pred, ours, path


# -- MobileSAM --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mobile_pair(tmp_path_factory, photo):
    return _pair(tmp_path_factory, photo, "mobile_sam", seed=7)


def test_mobile_sam_matches_official(mobile_pair, photo):
    ref_pred, ours, _ = mobile_pair
    emb_diff = float((ref_pred.features - ours._current().data).abs().max())
    assert emb_diff < 1e-3, f"image embeddings differ by {emb_diff}"
    flips, _ = _cases(lambda **kw: ref_pred.predict(return_logits=True, **kw), ours, photo)
    print(f"MobileSAM: embedding max |diff| {emb_diff:.2e}; pixels at the threshold that differ: {flips}")


def test_mobile_sam_file_keeps_its_names(mobile_pair, tmp_path):
    """What we save is what MobileSAM's loader reads: the same keys and shapes (its ImageNet head aside)."""
    _, ours, path = mobile_pair
    official = torch.load(path, map_location="cpu")
    ours_state = ours.model.checkpoint_state()
    unused = {k for k in official if k.startswith(("image_encoder.norm_head.", "image_encoder.head."))}
    assert set(ours_state) == set(official) - unused
    assert all(ours_state[k].shape == official[k].shape for k in ours_state)
    assert_truncated_refused(path, "mobile_sam", tmp_path)


# -- SAM 2.1 ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sam2_pair(tmp_path_factory, photo):
    return _pair(tmp_path_factory, photo, "sam2.1_hiera_tiny", seed=11)


def test_sam2_hiera_tiny_matches_official(sam2_pair, photo):
    ref_pred, ours, _ = sam2_pair
    emb = ours._current()
    emb_diff = float((ref_pred._features["image_embed"] - emb.data).abs().max())
    assert emb_diff < 1e-3, f"image embeddings differ by {emb_diff}"

    def ref_predict(**kw):
        return ref_pred.predict(return_logits=True, **kw)

    flips, p2 = _cases(ref_predict, ours, photo, clamp=SAM2_CLAMP)
    # 5) a mask input alone (the previous prediction's logits, as SAM 2's predictor returns them)
    low = np.clip(p2.logits[0].numpy(), -SAM2_CLAMP, SAM2_CLAMP)
    m5, _, lr5 = ref_predict(mask_input=low[None], multimask_output=False)
    flips["mask input"] = _compare(lr5[0], m5[0], ours.predict([], prev_logits=p2.logits), "mask input", SAM2_CLAMP)
    print(f"SAM 2.1 tiny: embedding max |diff| {emb_diff:.2e}; pixels at the threshold that differ: {flips}")


def test_sam2_single_mask_falls_back_when_unstable(sam2_pair, photo):
    """With multimask off, SAM 2 replaces an unstable single mask by the best of its three (its predictor's
    dynamic fallback). The random network's single masks are all unstable at SAM 2's threshold (0.98); with the
    threshold at 0 on both sides every one is stable: both branches give the official answer."""
    ref_pred, ours, _ = sam2_pair
    h, w = photo.shape[:2]
    ref_dec, dec = ref_pred.model.sam_mask_decoder, ours.model.network.mask_decoder
    seen = set()
    try:
        for thresh in (dec.stability_thresh, 0.0):
            ref_dec.dynamic_multimask_stability_thresh = dec.stability_thresh = thresh
            for fx, fy in [(0.5, 0.5), (0.2, 0.8), (0.8, 0.3)]:
                _, s, lr = ref_pred.predict(point_coords=np.array([[w * fx, h * fy]]), point_labels=np.array([1]),
                                            multimask_output=False, return_logits=True)
                p = ours.predict([Click(w * fx, h * fy)], multimask=False)
                low = np.clip(p.logits[0].numpy(), -SAM2_CLAMP, SAM2_CLAMP)
                assert np.abs(lr[0] - low).max() <= LOGIT_TOL
                assert p.score == pytest.approx(float(s[0]), abs=1e-4)
                seen.add(bool(dec.stable(p.logits)))
    finally:
        ref_dec.dynamic_multimask_stability_thresh = dec.stability_thresh = 0.98
    assert seen == {False, True}, "both branches (token 0 kept, best of three taken) must be exercised"


def test_sam2_file_of_another_model_names_both(sam2_pair, tmp_path):
    """A SAM v1 file given to SAM 2.1 (and the reverse) is refused naming what the file looks like."""
    _, _, path = sam2_pair
    v1 = importlib.import_module("tests.conftest").official_tiny_sam()
    v1_path = tmp_path / "sam_vit_b.pth"
    torch.save(v1.state_dict(), v1_path)
    with pytest.raises(CheckpointError) as err:
        load_model("sam2.1_hiera_tiny", v1_path, device="cpu")
    assert "sam2.1_hiera_tiny" in str(err.value) and "it looks like" in str(err.value)
    with pytest.raises(CheckpointError, match=r"it looks like sam2\.1_hiera_tiny"):
        load_model("sam2.1_hiera_small", path, device="cpu")
    assert_truncated_refused(path, "sam2.1_hiera_tiny", tmp_path)


# -- HQ-SAM -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hq_pair(tmp_path_factory, photo):
    return _pair(tmp_path_factory, photo, "sam_hq_vit_b", seed=5)


@pytest.mark.parametrize("hq_token_only", [False, True])
def test_sam_hq_vit_b_matches_official(hq_pair, photo, hq_token_only):
    ref_pred, ours, _ = hq_pair
    emb_diff = float((ref_pred.features - ours._current().data).abs().max())
    assert emb_diff < 1e-3, f"image embeddings differ by {emb_diff}"
    ours.model.hq_token_only = hq_token_only
    try:
        flips, _ = _cases(lambda **kw: ref_pred.predict(return_logits=True, hq_token_only=hq_token_only, **kw),
                          ours, photo, best_of_multimask=False)
    finally:
        ours.model.hq_token_only = False
    print(f"HQ-SAM ViT-B (hq_token_only={hq_token_only}): embedding max |diff| {emb_diff:.2e}; "
          f"pixels at the threshold that differ: {flips}")


def test_hq_file_given_to_plain_sam_names_both(hq_pair, tmp_path):
    _, _, path = hq_pair
    with pytest.raises(CheckpointError, match="it looks like sam_hq_vit_b") as err:
        load_model("sam_vit_b", path, device="cpu")
    assert "unexpected keys" in str(err.value) and "mask_decoder.compress_vit_feat" in str(err.value)


# -- the other variants: the publishers' files load key for key --------------------------------------------------
def _loads_as_published(name, tmp_path):
    """The official network's file (seeded random weights) loads into ``name`` key for key: (ours, theirs)."""
    torch.manual_seed(2)
    ref, _, wrap = build_official(name, "")
    path = tmp_path / f"{name}.pt"
    torch.save(wrap(ref.state_dict()), path)
    ours = load_model(name, path, device="cpu").checkpoint_state()
    flat = ref.state_dict()
    for key, value in ours.items():
        assert torch.equal(value, flat[key]), key
    return ours, flat


@pytest.mark.parametrize("name", ["sam2.1_hiera_small", "sam2.1_hiera_base_plus",
                                  pytest.param("sam2.1_hiera_large", marks=pytest.mark.large)])
def test_sam2_variants_load_the_official_layout(name, tmp_path):
    ours, flat = _loads_as_published(name, tmp_path)
    image_path = {k for k in flat if k.startswith(("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.",
                                                    "no_mem_embed"))}
    assert set(ours) == image_path  # every image-path key read, the video parts left


@pytest.mark.large
@pytest.mark.parametrize("name", ["sam_hq_vit_l", "sam_hq_vit_h"])
def test_hq_large_variants_load_the_official_layout(name, tmp_path):
    ours, flat = _loads_as_published(name, tmp_path)
    assert set(ours) == set(flat)
