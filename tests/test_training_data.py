"""Training data: ECSSD as a folder, COCO, accepted storage annotations, the split, augmentation, bad input."""
import json

import numpy as np
import pytest
from PIL import Image

from iseg_core.eval.datasets import DatasetError
from storage import Store
from tests.conftest import data_dir
from training.data import AugmentConfig, augment, coco_objects, folder_objects, split, store_objects

ECSSD = data_dir() / "ECSSD"


def test_ecssd_folder_split_is_stable_and_disjoint():
    objects = folder_objects(ECSSD, masks="ground_truth_mask")
    assert len(objects) == 1000
    train, held = split(objects, 0.1)
    again_train, again_held = split(list(reversed(objects)), 0.1)
    assert {o.name for o in held} == {o.name for o in again_held} and not {o.name for o in train} & {o.name for o in held}
    assert 60 <= len(held) <= 140
    image, mask, others = held[0].load()
    assert image.shape[:2] == mask.shape and mask.dtype == bool and mask.any() and others is None


def test_augmentation_keeps_image_and_masks_aligned():
    rng = np.random.default_rng(0)
    image = np.zeros((300, 400, 3), np.uint8)
    mask = np.zeros((300, 400), bool)
    mask[50:200, 100:250] = True
    others = np.zeros_like(mask)
    others[220:280, 300:380] = True
    image[mask] = (250, 10, 10)
    image[others] = (10, 250, 10)
    flips = 0
    for _ in range(30):
        img, m, o = augment(image, mask, others, rng, AugmentConfig(crop=160, colour=0.0))
        assert img.shape[:2] == m.shape == o.shape and max(m.shape) <= 160 and m.any()
        assert (img[m][:, 0] > 128).mean() > 0.9  # the object's pixels are still the red ones
        if o.any():
            assert (img[o][:, 1] > 128).mean() > 0.9
        ys, xs = np.nonzero(m)
        flips += xs.mean() > m.shape[1] / 2
    assert 0 < flips < 30  # flipped sometimes
    img, _, _ = augment(image, mask, None, np.random.default_rng(1), AugmentConfig(colour=0.3))
    assert img.dtype == np.uint8


def test_coco_and_store_objects(tmp_path):
    rgb = np.full((40, 60, 3), 120, np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    a = np.zeros((40, 60), bool)
    a[5:20, 5:25] = True
    b = np.zeros_like(a)
    b[25:35, 30:55] = True
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 60, "height": 40}],
            "categories": [{"id": 1, "name": "x"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "segmentation": [[5, 5, 25, 5, 25, 20, 5, 20]]}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    [obj] = coco_objects(tmp_path / "c.json", tmp_path)
    assert obj.load()[1].sum() > 200

    store = Store(f"sqlite:///{tmp_path / 'iseg.db'}", tmp_path / "images")
    project = store.project("p")
    img = store.add_image(project, tmp_path / "a.png")
    store.save_annotations(img.id, [dict(mask=a, category="x"), dict(mask=b, category="y")])
    with pytest.raises(DatasetError, match="no accepted annotations yet"):
        store_objects(store, project)  # saved, not accepted
    store.set_done(img.id)
    objs = store_objects(store, project)
    assert len(objs) == 2
    image, mask, others = objs[0].load()
    assert np.array_equal(mask, a) and np.array_equal(others, b) and image.shape == (40, 60, 3)
    store.close()


def test_bad_training_data_is_named(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        folder_objects(tmp_path)
    with pytest.raises(DatasetError, match="needs the folders"):
        folder_objects(tmp_path / "nope")
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "images" / "x.png")
    Image.fromarray(np.full((31, 40), 255, np.uint8)).save(tmp_path / "masks" / "x.png")
    [obj] = folder_objects(tmp_path)
    with pytest.raises(DatasetError, match="x"):
        obj.load()  # wrong-sized mask: the error names the files
    with pytest.raises(DatasetError, match="too few"):
        split([obj], 0.5)
