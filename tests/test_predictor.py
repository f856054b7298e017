"""Predictor and EmbeddingCache behaviour, on a SAM with a tiny encoder (same decoder as ViT-B)."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from iseg_core import Click, EmbeddingCache, ImageError, IsegError, Predictor, PromptError, Scribble
from iseg_core.models.base import ImageEmbedding
from iseg_core.runtime import bf16_is_fast

from .conftest import tiny_segmenter


@pytest.fixture(scope="module")
def seg(tiny_pair):
    return tiny_pair[1]


def test_an_image_is_encoded_once_and_shared_between_predictors(seg, photo):
    cache = EmbeddingCache()
    calls = []
    hook = seg.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        a, b = Predictor(seg, cache), Predictor(seg, cache)
        emb = a.set_image(photo)
        assert len(calls) == 1 and len(cache) == 1
        assert a.set_image(photo.copy()) is emb  # same pixels, another array: same content hash
        assert b.set_image(photo) is emb
        assert len(calls) == 1 and len(cache) == 1
    finally:
        hook.remove()
    assert cache.nbytes == emb.nbytes == 256 * 64 * 64 * 4


def test_different_weights_never_share_embeddings(seg, photo):
    cache = EmbeddingCache()
    other = tiny_segmenter()  # random weights of its own
    assert other.cache_key != seg.cache_key
    e1 = Predictor(seg, cache).set_image(photo)
    e2 = Predictor(other, cache).set_image(photo)
    assert e1 is not e2 and len(cache) == 2


def test_cache_evicts_least_recently_used_by_bytes():
    def emb(n):
        return ImageEmbedding("m", (8, 8), None, nbytes=n)

    cache = EmbeddingCache(max_bytes=250)
    cache.put("a", emb(100))
    cache.put("b", emb(100))
    cache.get("a")  # a is now the most recently used
    cache.put("c", emb(100))
    assert "b" not in cache and "a" in cache and "c" in cache and cache.nbytes == 200
    cache.put("huge", emb(1000))  # larger than the whole budget: not kept, nothing else dropped
    assert "huge" not in cache and len(cache) == 2
    cache.put("a", emb(50))  # replacing an entry updates the byte count
    assert cache.nbytes == 150


def test_predict_returns_mask_at_image_or_display_size(seg, photo):
    p = Predictor(seg)
    p.set_image(photo)
    h, w = photo.shape[:2]
    full = p.predict([Click(w / 2, h / 2)])
    assert full.mask.shape == (h, w) and full.mask.dtype == bool
    assert full.logits.shape == (1, 256, 256) and isinstance(full.score, float)
    small = p.predict([Click(w / 2, h / 2)], mask_size=(h // 2, w // 2))
    assert small.mask.shape == (h // 2, w // 2)
    # Same as SAM's own postprocessing (bilinear to 1024, crop the padding, bilinear to the size asked for).
    nh, nw = p._current().extra["input_size"]
    up = F.interpolate(small.logits[None], (1024, 1024), mode="bilinear", align_corners=False)[..., :nh, :nw]
    expected = F.interpolate(up, (h // 2, w // 2), mode="bilinear", align_corners=False)[0, 0].numpy()
    differ = small.mask != (expected > 0)
    assert not (differ & (np.abs(expected) > 1e-5)).any()
    again = p.predict([Click(w / 2, h / 2)])
    assert torch.equal(again.logits, full.logits)


def test_previous_logits_change_the_result_and_bad_ones_are_refused(seg, photo):
    p = Predictor(seg)
    p.set_image(photo)
    first = p.predict([Click(100, 100)])
    with_prev = p.predict([Click(100, 100)], prev_logits=first.logits, multimask=False)
    without = p.predict([Click(100, 100)], multimask=False)
    assert not torch.equal(with_prev.logits, without.logits)
    only_prev = p.predict([], prev_logits=first.logits)
    assert only_prev.mask.shape == photo.shape[:2]
    with pytest.raises(PromptError, match="256x256 low-res logits"):
        p.predict([Click(100, 100)], prev_logits=torch.zeros(1, 128, 128))
    with pytest.raises(PromptError, match="at least one prompt"):
        p.predict([])


def test_bad_images_and_prompts_are_clear_errors_and_keep_the_predictor_usable(seg, photo):
    p = Predictor(seg)
    with pytest.raises(IsegError, match="call set_image"):
        p.predict([Click(1, 1)])
    with pytest.raises(ImageError, match="RGB"):
        p.set_image(np.zeros((64, 64, 4), np.uint8))
    with pytest.raises(ImageError, match="at least 8 pixels"):
        p.set_image(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageError, match="20000x20000"):
        p.set_image(np.zeros((20000, 20000, 3), np.uint8))
    p.set_image(photo)
    h, w = photo.shape[:2]
    with pytest.raises(PromptError, match="outside"):
        p.predict([Click(w + 5, 10)])
    with pytest.raises(PromptError, match="outside"):
        p.predict([Scribble([(10, 10), (10, h + 100)])])
    assert p.predict([Click(w - 1, h - 1)]).mask.shape == (h, w)


def test_bfloat16_encoder_is_a_separate_cache_entry_close_to_float32(tiny_pair, photo):
    ref, seg32 = tiny_pair
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seg16 = tiny_segmenter(ref, encoder_dtype=torch.bfloat16)
    slow = [w for w in caught if "no native bfloat16" in str(w.message)]
    assert len(slow) == (0 if bf16_is_fast("cpu") else 1)  # the user hears when bf16 would be emulated
    assert seg16.cache_key != seg32.cache_key and seg16.cache_key.endswith("-bfloat16")
    cache = EmbeddingCache()
    e32 = Predictor(seg32, cache).set_image(photo).data
    e16 = Predictor(seg16, cache).set_image(photo).data
    assert e16.dtype == torch.float32  # decoded in float32 whatever the encoder ran in
    rel = float((e16 - e32).norm() / e32.norm())
    assert 0 < rel < 0.05, rel
