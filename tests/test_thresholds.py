"""Each model family decides at its own threshold by default: RITM and its lineage at probability 0.49 (their
predictors' and evaluations' pred_thr), SAM's family at logit 0. The Predictor, the studio (and its slider) and
the evaluation CLI use it alike; the studio's slider is a probability."""
import json
import math

import numpy as np
import pytest
import torch

from iseg_core import Predictor, load_model
from iseg_core.models.base import RITM_LOGIT_THRESHOLD
from iseg_core.prompts import Click
from storage import Store
from tests.conftest import tiny_segmenter
from tests.test_eval_run import DATA, _cli
from ui import Studio

RITM = "ritm_hrnet18s_cocolvis"


@pytest.fixture(scope="module")
def ritm():
    return load_model(RITM, device="cpu")


def _between(predictor, prompts):
    """The mask of logits all at -0.02: inside at probability 0.49 (logit -0.04), outside at logit 0."""
    pred = predictor.predict(prompts)
    return predictor.mask_from_logits(torch.full_like(pred.logits, -0.02))


def test_the_predictor_thresholds_each_family_its_own_way(ritm, photo):
    sam = tiny_segmenter()
    assert math.isclose(ritm.default_threshold, math.log(0.49 / 0.51)) and sam.default_threshold == 0.0
    clicks = [Click(120, 90)]
    for model, inside in [(ritm, True), (sam, False)]:
        p = Predictor(model)
        p.set_image(photo)
        assert _between(p, clicks).all() == inside and _between(p, clicks).any() == inside
        pred = p.predict(clicks, soft=True)  # the returned mask is the default's, unless one is given
        assert np.array_equal(pred.mask, pred.soft > model.default_threshold)
        assert np.array_equal(p.predict(clicks, threshold=0.5).mask, pred.soft > 0.5)


def test_the_studio_starts_at_the_family_threshold_and_the_slider_is_a_probability(ritm, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'iseg.db'}", tmp_path / "images")
    sam = tiny_segmenter()
    studio = Studio(store, "t", RITM, loader=lambda name: ritm if name == RITM else sam, export_dir=tmp_path / "ex")
    studio.ensure_samples()
    v = studio.open_index("a", 0)
    assert v.info["threshold"] == 0.49 and studio.threshold_probability("a") == 0.49
    v = studio.add_click("a", 250, 200)
    s = studio._session("a")
    assert s.effective_threshold == RITM_LOGIT_THRESHOLD
    v = studio.set_threshold("a", 0.7)  # the slider: re-thresholds the object, shown in probability and logit
    assert "probability 0.70 (logit +0.85)" in v.status and v.info["threshold"] == 0.7
    assert "between 0 and 1" in studio.set_threshold("a", 1.5).status and studio.threshold_probability("a") == 0.7
    studio._loader = lambda name: sam  # another family: the tab starts at its threshold
    studio.set_model("a", "sam_vit_b")
    assert studio.threshold_probability("a") == 0.5 and studio.view("a").info["threshold"] == 0.5
    store.close()


def test_the_evaluation_cli_uses_the_family_threshold(tmp_path):
    """RITM's here; SAM's (0.50) is asserted by test_eval_run's SAM ViT-B run."""
    out = tmp_path / "ritm.json"
    res = _cli("--model", RITM, "--dataset", "grabcut", "--root", str(DATA / "GrabCut"), "--limit", "1",
               "--max-clicks", "2", "--out", str(out), "--threads", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "prob threshold 0.49" in json.loads(out.read_text())["preprocessing"]
