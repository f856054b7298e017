"""Dataset readers on the real benchmark data, the loop with the classical engine, and the CLI end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import pytest

from iseg_core import Box, Click, Predictor, load_model
from iseg_core.eval import (DatasetError, ObjectEvaluator, ZoomIn, open_dataset, simulate_box, simulate_contour,
                            simulate_scribble)

from .conftest import data_dir

DATA = data_dir()

ROOT = Path(__file__).resolve().parent.parent


def test_grabcut_reader_pairs_50_objects_with_their_ignore_band():
    samples = list(open_dataset("grabcut", DATA / "GrabCut"))
    assert len(samples) == 50 and len({s.name for s in samples}) == 50
    image, gt, ignore = samples[1].load()  # 124080: 0 / 128 / 255 (106024, the first, has no 128 band)
    assert image.dtype == np.uint8 and image.shape[:2] == gt.shape == ignore.shape
    assert gt.any() and ignore.any() and not (gt & ignore).any()


def test_davis_reader_merges_objects():
    samples = list(open_dataset("davis", DATA / "DAVIS"))
    assert len(samples) == 345
    raw = np.array(cv2.imread(str(DATA / "DAVIS" / "gt" / "000.png"), cv2.IMREAD_UNCHANGED))
    _, gt, ignore = samples[0].load()
    assert ignore is None and gt.sum() == np.count_nonzero(raw.max(axis=2) if raw.ndim == 3 else raw)


def test_reader_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="missing folder"):
        list(open_dataset("grabcut", tmp_path))
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((20, 30, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "images" / "b.png"), np.zeros((20, 30, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "masks" / "a.png"), np.full((10, 30), 255, np.uint8))
    with pytest.raises(DatasetError, match=r"1 image\(s\).*'b'"):
        list(open_dataset("folder", tmp_path))
    cv2.imwrite(str(tmp_path / "masks" / "b_mask.png"), np.zeros((20, 30), np.uint8))
    samples = list(open_dataset("folder", tmp_path))
    with pytest.raises(DatasetError, match="mask is 30x10 but image a.png is 30x20"):
        samples[0].load()
    with pytest.raises(DatasetError, match="unknown dataset"):
        open_dataset("imagenet", tmp_path)


def test_coco_reader_decodes_polygons_and_rejects_unknown_images(tmp_path):
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((40, 50, 3), np.uint8))
    data = {"images": [{"id": 1, "file_name": "x.png", "height": 40, "width": 50}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "segmentation": [[10, 10, 30, 10, 30, 20, 10, 20]]}],
            "categories": [{"id": 1, "name": "thing"}]}
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps(data))
    (sample,) = list(open_dataset("coco", tmp_path, ann))
    _, gt, _ = sample.load()
    assert sample.name == "x#7" and gt[15, 20] and not gt[5, 5] and 180 <= gt.sum() <= 231
    data["annotations"][0]["image_id"] = 9
    ann.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="annotation 7 names unknown image_id 9"):
        list(open_dataset("coco", tmp_path, ann))
    ann.write_text("{not json")
    with pytest.raises(DatasetError, match="not a COCO instances file"):
        list(open_dataset("coco", tmp_path, ann))
    # run lengths are checked before pycocotools decodes them (the same check as storage's import)
    data["annotations"][0].update(image_id=1, segmentation={"size": [40, 50], "counts": [100, 50]})
    ann.write_text(json.dumps(data))
    (sample,) = list(open_dataset("coco", tmp_path, ann))
    with pytest.raises(DatasetError, match="annotation 7: uncompressed RLE: run lengths sum to 150"):
        sample.load()


def test_simulated_first_interactions_fit_the_object():
    _, gt, ignore = list(open_dataset("grabcut", DATA / "GrabCut"))[0].load()
    box = simulate_box(gt)
    ys, xs = np.nonzero(gt)
    assert (box.x0, box.y0, box.x1, box.y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    contour = simulate_contour(gt)
    poly = np.zeros(gt.shape, np.uint8)
    cv2.fillPoly(poly, [np.array(contour.points, np.int32)], 1)
    assert (poly.astype(bool) & gt).sum() > 0.97 * gt.sum()  # traced around, not through, the object
    scribble = simulate_scribble(gt)
    assert len(scribble.points) >= 2 and all(gt[int(y), int(x)] for x, y in scribble.points)


@pytest.mark.parametrize("first", ["click", "box", "contour", "scribble"])
def test_classical_engine_improves_with_clicks(first):
    sample = list(open_dataset("grabcut", DATA / "GrabCut"))[3]
    image, gt, ignore = sample.load()
    evaluator = ObjectEvaluator(Predictor(load_model("classical")))
    run = evaluator.run(sample.name, image, gt, ignore, max_clicks=12, target_iou=1.01, first=first)
    assert len(run.ious) == 12 and run.prompts[0]["type"] == first
    assert all(p["type"] == "click" for p in run.prompts[1:])
    assert max(run.ious) > 0.8 and max(run.ious) > run.ious[0] - 1e-9


def test_classical_engine_is_deterministic_and_handles_one_sided_labels():
    """The same prompts give the same mask whatever was segmented before (GrabCut's k-means is seeded), and
    labels with too few pixels of one kind for a colour model keep the prior instead of failing."""
    samples = list(open_dataset("grabcut", DATA / "GrabCut"))
    image, gt, _ = samples[5].load()
    other, _, _ = samples[6].load()
    seg = load_model("classical")
    emb, emb_other = seg.encode(image), seg.encode(other)
    ys, xs = np.nonzero(gt)
    clicks = [Click(float(xs.mean()), float(ys.mean())), Click(2.0, 2.0, False)]
    first = seg.decode(emb, clicks).logits
    for k in range(3):  # other work in between moves OpenCV's random state
        seg.decode(emb_other, [Click(40.0 + k, 50.0)])
    assert torch.equal(seg.decode(emb, clicks).logits, first)
    h, w = image.shape[:2]
    whole = seg.decode(emb, [Box(0, 0, w, h)])  # no hard label of either kind, nothing outside the box
    tiny = seg.decode(emb, [Box(10, 10, 13, 13)])  # 3x3 px: too few pixels for a colour model
    assert whole.logits.shape == first.shape and tiny.logits.shape == first.shape
    assert (seg.upsample_logits(emb, tiny.logits) > 0).sum() < 0.01 * h * w


def test_zoom_in_and_flip_paths_give_valid_runs():
    sample = list(open_dataset("grabcut", DATA / "GrabCut"))[5]
    image, gt, ignore = sample.load()
    evaluator = ObjectEvaluator(Predictor(load_model("classical")), flip=True, zoom_in=ZoomIn(), boundary_ratio=0.02)
    run = evaluator.run(sample.name, image, gt, ignore, max_clicks=5, target_iou=1.01)
    assert len(run.ious) == 5 == len(run.boundary_ious)
    assert all(0 <= v <= 1 for v in run.ious + run.boundary_ious) and max(run.ious) > 0.7


def _cli(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "iseg_core.eval", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def test_cli_classical_writes_table_and_json(tmp_path):
    out = tmp_path / "r.json"
    res = _cli("--model", "classical", "--dataset", "grabcut", "--root", str(DATA / "GrabCut"), "--limit", "3",
               "--out", str(out), "--sat")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "NoC@90" in res.stdout and "long side 320" in res.stdout and "SAT latency" in res.stdout
    data = json.loads(out.read_text())
    assert len(data["objects"]) == 3 and data["summary"]["objects"] == 3
    obj = data["objects"][0]
    assert len(obj["ious"]) == len(obj["prompts"]) == len(obj["seconds"]) and obj["prompts"][0]["type"] == "click"
    assert data["sat_latency"]["clicks"] == 256


def test_cli_runs_random_sam_vit_b_end_to_end(tmp_path):
    out = tmp_path / "sam.json"
    res = _cli("--model", "sam_vit_b", "--dataset", "davis", "--root", str(DATA / "DAVIS"), "--limit", "2",
               "--max-clicks", "3", "--out", str(out), "--threads", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(out.read_text())
    assert len(data["objects"]) == 2 and all(1 <= len(o["ious"]) <= 3 for o in data["objects"])
    assert data["model_version"].startswith("random-") and "long side 1024" in data["preprocessing"]
    assert "prob threshold 0.50" in data["preprocessing"]  # SAM's own threshold, logit 0 (tests/test_thresholds.py)


def test_cli_says_what_is_wrong():
    res = _cli("--model", "nope", "--dataset", "grabcut", "--root", str(DATA / "GrabCut"))
    assert res.returncode == 2 and "unknown model 'nope'" in res.stderr
    res = _cli("--model", "classical", "--dataset", "grabcut", "--root", "/nonexistent")
    assert res.returncode == 2 and "not a folder" in res.stderr
