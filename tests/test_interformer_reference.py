"""iseg's InterFormer port against InterFormer's official code (../shared/reference/official/interformer).

The official network is built from its own configs with seeded random weights in every table (relative position
biases, layer scales, norms, BatchNorm statistics) in a subprocess (tests/reference/interformer_official.py,
which needs mmcv 1.x lite: .ci/run installs it), saved as mmcv's trainer saves it (config as Python text, an
optimizer state beside the weights), and loaded here with ``load_model``. CI size: each released configuration's
neck and heads (Light: no refine blocks; Tiny: refine blocks, so its ZoomIn matters) on a 2-block ViT of width
192; the full ViT-B / ViT-L networks run behind the ``large`` marker.
"""
from dataclasses import replace

import numpy as np
import pytest
import torch

from iseg_core.errors import CheckpointError, PromptError
from iseg_core.models import list_models, load_model, read_weights
from iseg_core.models.interformer import INTERFORMER_CONFIGS, InterFormerZoomIn, build_interformer
from iseg_core.models.interformer import labels
from iseg_core.predictor import Predictor
from iseg_core.prompts import Box, Click

from .official import assert_logits_equal, assert_truncated_refused, run_official

NAMES = {"light": "interformer_light_vitb_cocolvis", "tiny": "interformer_tiny_vitl_cocolvis"}
CLICKS = [(150, 240, True), (60, 420, False), (200, 110, True)]  # (row, col, positive), as in the script
CI = dict(dim=192, depth=2, heads=3)


def run_variant(variant, photo, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"interformer_{variant}")
    run_official("interformer_official.py", "interformer", photo, out, variant, timeout=1800)
    return out / f"interformer_{variant}.pth", dict(np.load(out / f"interformer_{variant}.npz"))


@pytest.fixture(scope="module", params=["light_ci", "tiny_ci"])
def official(request, photo, tmp_path_factory):
    return request.param, *run_variant(request.param, photo, tmp_path_factory)


def load(variant, path):
    """The file through the registry's reader, built at its size (the CI variants have a small ViT)."""
    name = NAMES[variant.split("_")[0]]
    config = INTERFORMER_CONFIGS[name]
    if variant.endswith("_ci"):
        config = replace(config, **CI)
    return build_interformer(name, read_weights(name, path), torch.device("cpu"), config=config)


def clicks(n):
    return [Click(float(c), float(r), positive=p) for r, c, p in CLICKS[:n]]


def padded_logits(model, emb, logits):
    """The stride-4 logit upsampled to the padded frame, as InterFormer's encode_decode returns it."""
    return torch.nn.functional.interpolate(logits.float()[None, None], size=emb.data.padded, mode="bilinear",
                                           align_corners=False)[0, 0].numpy()


def compare_network(variant, path, ref, photo):
    model = load(variant, path)
    emb = model.encode(photo)
    assert emb.data.padded == (352, 512) and emb.data.frame == photo.shape[:2]
    for i, m in enumerate(emb.data.maps):  # the four FPN maps of a non-square padded frame
        assert np.abs(m[0].numpy() - ref[f"fpn{i}"]).max() <= 1e-4 * max(1.0, np.abs(ref[f"fpn{i}"]).max())
    one = model.decode(emb, clicks(1))
    first = labels.new_map(emb.data.padded)
    labels.paint_click(first, (CLICKS[0][0], CLICKS[0][1], True))
    assert np.array_equal(first, ref["ref1"])  # the click's disk, exactly
    assert_logits_equal(padded_logits(model, emb, one.logits), ref["one"])
    # the label map after the prediction (hysteresis), exactly except where the logit sits on the threshold
    edge = np.abs(ref["one"]) <= 1e-3
    assert np.array_equal(model.label_map(one.logits)[~edge], ref["after1"][~edge])
    three = model.decode(emb, clicks(3), prev_logits=one.logits)  # continues the map: two more disks painted
    assert_logits_equal(padded_logits(model, emb, three.logits), ref["three"])
    assert np.abs(ref["one"] - ref["three"]).max() > 1.0  # the clicks matter: a wrong label map would show
    return model, emb, three


def test_network_equals_official(official, photo):
    """The encoder's four maps, the label map of a click and after a prediction, the logits of one click and of
    three clicks of both signs with the previous prediction merged in; then InterFormer's ROI: Tiny's refine
    blocks inside it give the official numbers, Light has none, so a ROI changes nothing."""
    variant, path, ref = official
    model, emb, three = compare_network(variant, path, ref, photo)
    one = model.decode(emb, clicks(1))
    label3 = model.label_before(emb.data, model.frame_clicks(clicks(3), photo.shape[:2], emb.data.frame), one.logits)
    assert np.array_equal(label3, ref["ref3"])
    roi = labels.zoom_roi(np.zeros(emb.data.padded, bool), label3, InterFormerZoomIn())  # the clicks' box
    assert roi == tuple(int(v) for v in ref["roi3"]) and roi != (0, 0, 512, 352)
    with torch.no_grad():
        zoomed = model.network.click_logits(emb.data.maps, [label3], roi)[0][0, 0]
    assert_logits_equal(padded_logits(model, emb, zoomed), ref["three_roi"])
    if variant.startswith("light"):
        assert np.array_equal(ref["three_roi"], ref["three"])
        assert torch.equal(zoomed, three.logits)
    else:
        assert np.abs(ref["three_roi"] - ref["three"]).max() > 1e-2


def test_predictor_sequence_equals_official_predictor(official, photo):
    """Three clicks through iseg's Predictor (the encoder once, the label map carried from click to click)
    against the demo's own Predictor, with InterFormer's ZoomIn from the third click where it has refine blocks."""
    variant, path, ref = official
    model = load(variant, path)
    model.zoom = InterFormerZoomIn() if model.config.refines else None
    predictor = Predictor(model)
    predictor.set_image(photo)
    prev = None
    for k in range(3):
        pred = predictor.predict(clicks(k + 1), prev_logits=prev, soft=True)
        emb = predictor._current()
        assert_logits_equal(padded_logits(model, emb, pred.logits), ref[f"seq{k}_logits"])
        theirs = ref[f"seq{k}_mask"].astype(bool)
        near = np.abs(ref[f"seq{k}_logits"][:photo.shape[0], :photo.shape[1]]) <= 1e-3
        assert np.array_equal(pred.mask[~near], theirs[~near])
        edge = np.abs(ref[f"seq{k}_logits"]) <= 1e-3
        assert np.array_equal(model.label_map(pred.logits)[~edge], ref[f"seq{k}_ref"][~edge])
        prev = pred.logits
    if model.config.refines:  # the third click was zoomed, the first two were not
        assert [int(v) for v in ref["seq1_roi"]] == [-1] * 4 and ref["seq2_roi"][0] >= 0
    assert not np.array_equal(ref["seq0_mask"], ref["seq2_mask"])


def test_checkpoint_checked(official, tmp_path):
    """A file of the other configuration is refused naming both; mis-shaped and missing keys are named; a
    truncated file is a clear error; the optimizer state is skipped; the config text is read, never run."""
    variant, path, _ = official
    other = "tiny" if variant.startswith("light") else "light"
    with pytest.raises(CheckpointError, match=rf"does not fit {NAMES[other]} .*its config says embed_dims=192"):
        load_model(NAMES[other], path, device="cpu")
    with pytest.raises(CheckpointError, match=r"does not fit simpleclick_vit_b448_cocolvis"):
        load_model("simpleclick_vit_b448_cocolvis", path, device="cpu")
    obj = torch.load(path, weights_only=True)
    assert "optimizer" in obj and "config" in obj["meta"]
    # a config that would run code if executed: it is read as text, the file's weights still load
    marker = tmp_path / "ran"
    obj["meta"]["config"] = obj["meta"]["config"] + f"\nhook = __import__('os').mkdir({str(marker)!r})\n"
    torch.save(obj, tmp_path / "hooked.pth")
    assert load(variant, tmp_path / "hooked.pth").config.dim == CI["dim"]
    assert not marker.exists()
    # keys: a wrong shape and a missing table are named
    obj["state_dict"]["neck.patch_embed"] = obj["state_dict"]["neck.patch_embed"][:4]
    del obj["state_dict"]["decode_head.conv_seg.bias"]
    torch.save(obj, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"(?s)1 missing keys: .*decode_head.conv_seg.bias.*wrongly shaped "
                                              r"keys: neck.patch_embed \(4, 32\) \(expected \(5, 32\)\)"):
        load(variant, tmp_path / "bad.pth")
    obj = torch.load(path, weights_only=True)
    obj["state_dict"]["backbone.layers.0.attn.relative_position_index"][0, 1] += 1
    torch.save(obj, tmp_path / "index.pth")
    with pytest.raises(CheckpointError, match="relative_position_index .* is not the relative index of a 32x32"):
        load(variant, tmp_path / "index.pth")
    assert_truncated_refused(path, NAMES[variant.split("_")[0]], tmp_path)


def test_prompts_frames_and_registry(official, photo):
    variant, path, _ = official
    assert {"interformer_light_vitb_cocolvis", "interformer_tiny_vitl_cocolvis"} <= set(list_models())
    model = load(variant, path)
    emb = model.encode(photo)
    with pytest.raises(PromptError, match="takes clicks only, not a box"):
        model.decode(emb, [Box(10, 10, 200, 200)])
    with pytest.raises(PromptError, match=r"this image's .* logits are \(88, 128\)"):
        model.decode(emb, clicks(1), prev_logits=torch.zeros(80, 120))
    # logits that did not come from this process (an array) start a fresh map from their prediction
    one = model.decode(emb, clicks(1))
    foreign = model.decode(emb, clicks(2), prev_logits=one.logits.clone())
    carried = model.decode(emb, clicks(2), prev_logits=one.logits)
    assert torch.equal(foreign.logits, carried.logits)  # after one click, both maps are the same
    # above the long-side cap the image is resized into the cap, and the answer comes back at its size
    big = np.zeros((700, 1400, 3), np.uint8)
    big[200:500, 300:900] = 200
    capped = replace(model.config, max_side=512)
    model.config = capped
    emb = model.encode(big)
    assert emb.data.frame == (256, 512) and emb.data.padded == (256, 512)
    dec = model.decode(emb, [Click(600.0, 350.0)])
    assert tuple(dec.logits.shape) == (64, 128)
    assert model.upsample_logits(emb, dec.logits).shape == big.shape[:2]


@pytest.mark.large
@pytest.mark.parametrize("variant", ["light", "tiny"])
def test_released_sizes_equal_official(variant, photo, tmp_path_factory):
    """The released ViT-B (Light) and ViT-L (Tiny) networks, as the CI-sized test above."""
    path, ref = run_variant(variant, photo, tmp_path_factory)
    name = NAMES[variant]
    model = load_model(name, path, device="cpu")
    assert model.config == INTERFORMER_CONFIGS[name]
    compare_network(variant, path, ref, photo)


def test_published_files_are_named_with_their_page_and_folder(official, monkeypatch, tmp_path):
    """InterFormer's files live on Google Drive, both named iter_320000.pth in their config's folder: asking for
    one names that folder and file, the page and the weights folder; a file put there is the one that loads."""
    variant, path, _ = official
    from iseg_core import weights
    from iseg_core.errors import WeightsUnavailableError

    monkeypatch.setenv("ISEG_WEIGHTS_DIR", str(tmp_path))
    name = NAMES[variant.split("_")[0]]
    folder = f"interformer_{variant.split('_')[0]}_coco_lvis_320k"
    spec = weights.KNOWN_CHECKPOINTS[name]
    assert spec.licence == "MIT" and spec.url is None and spec.repo_id is None
    with pytest.raises(WeightsUnavailableError) as err:
        load_model(name, checkpoint="hub", device="cpu")
    msg = str(err.value)
    assert f"Put {folder}/iter_320000.pth (unknown size) into {tmp_path}/" in msg
    assert "drive.google.com/drive/folders/1517mfRoEHtbfnN83JuNWuQT6fSiZ8my3" in msg and "no automatic download" in msg
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "iter_320000.pth").write_bytes(path.read_bytes())
    assert weights.on_disk(name) == tmp_path / folder / "iter_320000.pth"
    # found and read: this CI-sized file is then refused by its config, naming the file
    with pytest.raises(CheckpointError, match=rf"{folder}/iter_320000.pth does not fit {name} .*embed_dims=192"):
        load_model(name, checkpoint="hub", device="cpu")
