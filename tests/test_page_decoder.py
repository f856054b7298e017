"""The page's decoder without a browser: each SAM family's exported graph against its PyTorch decoder (onnxruntime,
the same graph the page runs with onnxruntime-web), the mask output against the server's upsampling, the
session's deferred prompts, and the fetched runtime files against their recorded digests."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from iseg_core.errors import IsegError
from iseg_core.models import load_model
from iseg_core.models.sam import onnx_decoder as od
from iseg_core.predictor import Predictor
from iseg_core.prompts import Box, Click, Contour, Scribble, Stroke
from iseg_core.session import AnnotationSession

ort = pytest.importorskip("onnxruntime")
VENDOR = Path(__file__).resolve().parent.parent / "ui" / "vendor" / "onnxruntime-web"

SMALL = ["mobile_sam", "sam_vit_b", "sam_hq_vit_b", "sam2.1_hiera_tiny"]
LARGE = ["sam_vit_l", "sam_vit_h", "sam_hq_vit_l", "sam_hq_vit_h", "sam2.1_hiera_small", "sam2.1_hiera_base_plus",
         "sam2.1_hiera_large"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    made = {}

    def get(name):
        if name not in made:
            torch.manual_seed(0)
            model = load_model(name, device="cpu")
            made[name] = (model, od.export_decoder(model, folder))
        return made[name]

    return get


def _equal_to_pytorch(model, path):
    """Low-res logits of the graph vs ``SamSegmenter.decode`` on a random embedding: a click, a click and a
    negative click, a box, a box with a click, a scribble, and three clicks each fed the one before's logits."""
    emb = od.random_embedding(model, (600, 800), seed=1)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    cases = [[Click(400, 300)], [Click(400, 300), Click(100, 80, False)], [Box(120, 90, 610, 500)],
             [Box(120, 90, 610, 500), Click(300, 250)], [Scribble([(100, 100), (300, 180), (500, 140)])]]
    worst, chosen = 0.0, set()
    prev = None
    chain = [Click(350, 280), Click(500, 150, False), Click(420, 420)]
    runs = [(c, None) for c in cases] + [(chain[: k + 1], "chain") for k in range(3)]
    for prompts, mode in runs:
        p = prev if mode else None
        ref = model.decode(emb, prompts, p)
        feeds = od.graph_feeds(model, emb, prompts, p)
        low, score, mask = sess.run(["low_res", "score", "mask"], {k: v for k, v in feeds.items() if k in names})
        ref_low = ref.logits.detach().numpy().reshape(low.shape)
        worst = max(worst, float(np.abs(low - ref_low).max()))
        assert abs(float(score[0]) - ref.score) < 1e-4
        # the mask output: the server's upsampling (cv2, two bilinear steps) of the same logits, thresholded;
        # pixels may differ only where the logits sit within a hair of the threshold
        up = model.upsample_logits(emb, ref.logits, emb.original_size)
        differ = (mask > 0) != (up > model.default_threshold)
        assert mask.shape == emb.original_size
        assert np.all(np.abs(up[differ] - model.default_threshold) < 1e-3), np.abs(up[differ]).max()
        if mode:
            prev = ref.logits
        chosen.add(round(float(ref.score), 6))
    assert worst < 1e-4, worst
    return worst


@pytest.mark.parametrize("name", SMALL)
def test_the_exported_decoder_equals_pytorch(exports, name):
    model, path = exports(name)
    _equal_to_pytorch(model, path)
    info = json.loads(path.with_suffix(".json").read_text())  # checked at export too, recorded beside it
    assert info["check"]["max_abs_diff"] < 1e-4 and info["model"] == name


@pytest.mark.large
@pytest.mark.parametrize("name", LARGE)
def test_the_exported_decoder_of_a_large_variant_equals_pytorch(exports, name):
    model, path = exports(name)
    _equal_to_pytorch(model, path)


def test_an_export_is_made_once_per_model_version_and_refused_for_other_families(exports, tmp_path):
    model, path = exports("mobile_sam")
    stamp = path.stat().st_mtime_ns
    assert od.export_decoder(model, path.parent) == path and path.stat().st_mtime_ns == stamp  # reused
    other = load_model("mobile_sam", device="cpu")  # another random version: its own file
    assert od.model_key(other) != od.model_key(model)
    with pytest.raises(IsegError, match="only the SAM family"):
        od.export_decoder(load_model("classical", device="cpu"), tmp_path)
    assert not list(tmp_path.glob("*.partial"))


def test_the_page_arrays_are_what_the_graph_reads(exports):
    model, _ = exports("sam2.1_hiera_tiny")
    emb = od.random_embedding(model, (300, 400))
    arrays = od.page_arrays(model, emb)
    assert list(arrays) == ["image_tokens", "skip0", "skip1"]
    assert arrays["image_tokens"].shape == (1, 64 * 64, 256) and arrays["image_tokens"].dtype == np.float32
    sizes = {k: v.nbytes for k, v in arrays.items()}
    assert sum(sizes.values()) == 4 * (64 * 64 * 256 + 4 * 64 * 64 * 64 + 16 * 64 * 64 * 32)  # 16.8 MB an image


def _photo():
    rng = np.random.default_rng(3)
    img = np.full((240, 320, 3), 40, np.uint8)
    img[60:180, 80:240] = 200
    return (img + rng.integers(0, 20, img.shape)).astype(np.uint8)


def test_deferred_prompts_are_decoded_when_the_mask_is_needed_exactly_as_if_decoded_at_once():
    torch.manual_seed(0)
    model = load_model("mobile_sam", device="cpu")
    prompts = [Click(160, 120), Click(20, 20, False), Box(70, 50, 250, 190), Scribble([(100, 100), (200, 140)])]
    eager = AnnotationSession(Predictor(model))
    eager.open_image(_photo())
    for p in prompts:
        eager.add(p)
    lazy = AnnotationSession(Predictor(model))
    lazy.open_image(_photo())
    calls = []
    real = model.decode
    model.decode = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        for p in prompts:
            step = lazy.add(p, decode=False)
            assert step.deferred and step.mask is None
        assert lazy.deferred and not calls  # nothing decoded yet
        lazy.undo()
        lazy.redo()
        assert not calls
        assert np.array_equal(lazy.mask, eager.mask) and len(calls) == 4  # decoded in order, prev logits fed
        assert not lazy.deferred
        assert np.array_equal(lazy.steps[-1].logits, eager.steps[-1].logits)
        # a stroke or a contour is decoded on the server at once (the page does not draw those)
        assert not lazy.add(Stroke([(10, 10)], 5.0), decode=False).deferred
        assert not lazy.can_defer(Click(5, 5))  # an object with a stroke: the server draws it from now on
        assert not lazy.can_defer(Contour([(10, 10), (100, 10), (50, 80)]))
    finally:
        model.decode = real
    obj = lazy.finish_object("thing")
    assert obj.mask.any() and [d["type"] for d in obj.prompts] == ["click", "click", "box", "scribble", "brush"]


def test_a_deferred_object_finishes_with_the_server_decode():
    torch.manual_seed(0)
    model = load_model("mobile_sam", device="cpu")
    s = AnnotationSession(Predictor(model))
    s.open_image(_photo())
    s.add(Click(160, 120), decode=False)
    s.add(Click(30, 200, False), decode=False)
    ref = AnnotationSession(Predictor(model))
    ref.open_image(_photo())
    ref.add(Click(160, 120))
    ref.add(Click(30, 200, False))
    assert np.array_equal(s.finish_object("a").mask, ref.finish_object("a").mask)
    with pytest.raises(IsegError):
        s.add(Click(-1, 5), decode=False)  # outside the image: refused as ever, nothing kept
    assert not s.steps


def test_the_fetched_runtime_matches_its_recorded_digests():
    sums = dict(line.split()[::-1] for line in (VENDOR / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {"ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"}
    for name, digest in sums.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    version = (VENDOR / "VERSION").read_text().split()[1]
    assert f"ONNX Runtime Web v{version}" in (VENDOR / "ort.wasm.min.js").read_text()[:200]
    assert "MIT License" in (VENDOR / "LICENSE").read_text()
    assert (VENDOR / "ort-wasm-simd-threaded.wasm").read_bytes()[:4] == b"\0asm"
