"""Proposed objects (segment-everything): SAM's automatic mask generator's rules on our decoder (its grid and
stability score equal the official helpers; every kept proposal passes the filters; boxes thinned by NMS), the
batched candidates equal the single-click decoder, and the studio's accept / refine / reject: a proposal is no
accepted work until a person accepts it, and a refined one is the previous-mask input of the next click."""
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from iseg_core.everything import EverythingConfig, point_grid, segment_everything, stability_score
from iseg_core.prompts import Click
from storage import Store
from tests.conftest import tiny_segmenter

amg = pytest.importorskip("segment_anything.utils.amg")
# random weights give near-identical candidates: without NMS (IoU 1.0 never exceeded) they all stay
LOOSE = EverythingConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


def test_the_grid_and_the_stability_score_are_sams(photo):
    grid = np.array(point_grid(5, 300, 400))
    assert np.allclose(grid, amg.build_point_grid(5) * np.array([400, 300]))
    soft = torch.randn(1, 64, 80) * 3
    ours = stability_score(soft[0].numpy(), 0.0, 1.0)
    assert abs(ours - float(amg.calculate_stability_score(soft, 0.0, 1.0)[0])) < 1e-6


def _model():
    """A tiny SAM with fixed random weights (some random draws give only empty masks: nothing to propose)."""
    torch.manual_seed(0)
    return tiny_segmenter()


def test_batched_candidates_are_the_decoders_and_the_filters_hold(photo):
    model = _model()
    emb = model.encode(photo)
    pts = point_grid(3, *photo.shape[:2])
    logits, iou = model.decode_candidates(emb, pts)
    for i, (x, y) in enumerate(pts):
        d = model.decode(emb, [Click(x, y)], multimask=True)
        k = int(iou[i].argmax())
        assert torch.allclose(logits[i, k].reshape(d.logits.shape), d.logits, atol=1e-5)
        assert abs(float(iou[i, k]) - d.score) < 1e-5
    found = segment_everything(model, emb, LOOSE)
    assert len(found) > 3 and [p.score for p in found] == sorted((p.score for p in found), reverse=True)
    thinned = segment_everything(model, emb, EverythingConfig(points_per_side=4, pred_iou_thresh=0.0,
                                                              stability_score_thresh=0.0, box_nms_thresh=0.7))
    boxes = torch.tensor([p.box for p in thinned], dtype=torch.float32)
    overlap = box_iou(boxes, boxes) - torch.eye(len(thinned))
    assert len(thinned) < len(found) and float(overlap.max()) <= 0.7 + 1e-6  # no pair above NMS's threshold
    assert thinned[0].score == found[0].score  # the best one always stays
    cut = sorted(p.score for p in found)[len(found) // 2]  # a stricter predicted-IoU filter keeps the better half
    strict = segment_everything(model, emb, EverythingConfig(points_per_side=4, pred_iou_thresh=cut,
                                                             stability_score_thresh=0.0, box_nms_thresh=1.0))
    assert strict and all(p.score >= cut for p in strict) and len(strict) < len(found)
    stable = segment_everything(model, emb, EverythingConfig(points_per_side=4, pred_iou_thresh=0.0,
                                                             stability_score_thresh=0.9, box_nms_thresh=1.0))
    assert all(p.stability >= 0.9 for p in stable) and all(p.stability <= 1.0 for p in found)
    assert segment_everything(model, emb, EverythingConfig(points_per_side=4, pred_iou_thresh=1.01)) == []
    from iseg_core.errors import IsegError
    from iseg_core.models.classical import ClassicalSegmenter

    with pytest.raises(IsegError, match="needs a SAM-family model"):
        segment_everything(ClassicalSegmenter("classical"), emb)


def test_accept_refine_and_reject_in_the_studio(tmp_path):
    from ui import Studio

    model = _model()
    db = Store(f"sqlite:///{tmp_path / 'iseg.db'}", tmp_path / "images")
    studio = Studio(db, "p", "sam_tiny", loader=lambda name: model, export_dir=tmp_path / "ex")
    studio.ensure_samples()
    studio.open_index("a", 0)
    v = studio.propose("a", LOOSE)
    n = len(v.info["proposals"])
    assert n >= 3 and "proposed object(s)" in v.status, v.status
    image_id = v.info["image_id"]
    assert db.annotations(image_id) == [] and not db.image(image_id).done  # proposals are no accepted work
    first = db.proposals(image_id)[0]
    v = studio.accept_proposal("a", 1, "tree")
    [ann] = db.annotations(image_id)
    assert ann.category.name == "tree" and np.array_equal(ann.mask(), first.mask())
    assert "Accepted proposal 1 as object 1 (tree)" in v.status and len(v.info["proposals"]) == n - 1
    v = studio.reject_proposal("a", 1)
    assert len(v.info["proposals"]) == n - 2 and len(db.proposals(image_id, "rejected")) == 1
    target = db.proposals(image_id)[0]
    v = studio.refine_proposal("a", 1)
    s = studio._session("a")
    assert v.info["mask_area"] > 0 and s.seed_logits is not None  # shown at once; its mask feeds the next click
    x, y = np.argwhere(target.mask())[0][::-1]
    v = studio.add_click("a", float(x) + 0.5, float(y) + 0.5)
    seeded = s.steps[-1].logits
    plain = s.predictor.predict([Click(float(x) + 0.5, float(y) + 0.5)]).logits
    assert not torch.allclose(seeded, plain)  # the previous-mask input changed the answer
    assert torch.allclose(seeded, s.predictor.predict([Click(float(x) + 0.5, float(y) + 0.5)],
                                                      prev_logits=model.logits_from_mask(s.predictor._current(),
                                                                                        target.mask())).logits)
    studio.finish_object("a", "tree")
    assert len(db.proposals(image_id, "refined")) == 1 and len(db.annotations(image_id)) == 2
    v = studio.open_index("a", 0)  # reopened: the open proposals are still there, the others not
    assert len(v.info["proposals"]) == n - 3
    db.close()


def test_precompute_stores_each_images_proposals(tmp_path):
    """python -m iseg_core.precompute --propose, as a function: every image's proposals stored as open
    pre-annotations; run again, the stored embeddings are used (no encoder run) and the open proposals replaced."""
    from iseg_core.embedding_store import EmbeddingStore
    from iseg_core.precompute import precompute
    from ui import Studio

    model = _model()
    db = Store(f"sqlite:///{tmp_path / 'iseg.db'}", tmp_path / "images")
    Studio(db, "p", "sam_tiny", loader=lambda name: model, export_dir=tmp_path / "ex").ensure_samples()
    store = EmbeddingStore(tmp_path / "store")
    c = precompute(db, "p", model, store, limit=2, progress=False, propose=LOOSE)
    images = db.images_of(db.project("p"))[:2]
    per_image = [len(db.proposals(i.id)) for i in images]
    assert c["encoded"] == 2 and c["proposed"] == sum(per_image) and all(n > 0 for n in per_image)

    def no_encoder(image):
        raise AssertionError("the encoder ran")

    model.encode = no_encoder
    c = precompute(db, "p", model, store, limit=2, progress=False, propose=LOOSE)
    assert c["stored"] == 2 and c["encoded"] == 0 and [len(db.proposals(i.id)) for i in images] == per_image
    db.close()
