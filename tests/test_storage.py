"""storage on real SQLite and a real PostgreSQL server: schema, images, masks, COCO round trip, bad input."""
import copy
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from storage import CocoFormatError, Database, StorageError, Store, export_coco, export_png, import_coco
from iseg_core.masks import counts_from_string
from storage.masks import encode_mask
from tests.conftest import ROOT, data_dir

DAVIS = data_dir() / "DAVIS"


def _davis_gt(name: str) -> np.ndarray:
    """DAVIS ground truth with all objects merged (the benchmark's convention), as a boolean mask."""
    return np.array(Image.open(DAVIS / "gt" / f"{name}.png")) > 0


def _holey_mask(h=60, w=80) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[5:40, 5:50] = True
    m[15:25, 15:30] = False  # a hole
    m[45:55, 60:75] = True  # a second part
    return m


def test_migrations_create_exactly_the_model_schema(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from storage.models import Base

    db = Database(db_url)
    Database(db_url)  # opening again is a no-op
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    if db.dialect == "sqlite":
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.close()


def test_images_are_stored_once_and_masks_kept_exactly(store):
    project = store.project("p")
    src = DAVIS / "img" / "000.jpg"
    first = store.add_image(project, src)
    again = store.add_image(project, src.read_bytes(), file_name="copy.jpg")
    assert first.added and not again.added and again.id == first.id
    assert (first.width, first.height) == Image.open(src).size
    assert first.path.read_bytes() == src.read_bytes()
    assert len(store.images_of(project)) == 1

    mask = np.zeros((first.height, first.width), bool)
    mask[100:200, 100:300] = True
    mask[130:160, 150:200] = False
    mask[300:310, 500:700] = True
    saved = store.save_annotation(first.id, mask, "dog", author="ann", model=("classical", "v1"),
                                  interactions=[{"type": "click", "x": 120, "y": 150, "positive": True}], seconds=4.5)
    got = store.annotations(first.id)
    assert len(got) == 1 and np.array_equal(got[0].mask(), mask)
    assert (got[0].category.name, got[0].author, got[0].model, got[0].n_interactions) == ("dog", "ann", "classical@v1", 1)
    assert got[0].area == mask.sum() and got[0].bbox == (100.0, 100.0, 600.0, 210.0)

    edited = mask.copy()
    edited[100:110] = False
    store.save_annotation(first.id, edited, "dog", replace_id=saved.id)
    assert [np.array_equal(a.mask(), edited) for a in store.annotations(first.id)] == [True]
    store.delete_annotation(saved.id)
    assert store.annotations(first.id) == []


def test_bad_saves_say_why_and_save_nothing(store, tmp_path):
    project = store.project("p")
    img = store.add_image(project, DAVIS / "img" / "001.jpg")
    good = np.zeros((img.height, img.width), bool)
    good[10:20, 10:20] = True
    with pytest.raises(StorageError, match="mask is 10x10, image"):
        store.save_annotations(img.id, [dict(mask=good, category="a"), dict(mask=np.ones((10, 10), bool), category="a")])
    with pytest.raises(StorageError, match="empty"):
        store.save_annotation(img.id, np.zeros_like(good), "a")
    assert store.annotations(img.id) == []
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes((DAVIS / "img" / "001.jpg").read_bytes()[:300])
    with pytest.raises(StorageError, match="broken.jpg is not a usable image"):
        store.add_image(project, corrupt)
    with pytest.raises(StorageError, match="no project named 'nope'"):
        store.project("nope", create=False)
    assert store.stats(project).images == 1


def test_a_conflict_is_retried_a_bounded_number_of_times(store, monkeypatch):
    """find-or-create: a unique-key conflict (another writer created the row meanwhile) is retried and then finds
    the row; one that keeps coming back ends in a clear StorageError, not endless recursion."""
    from sqlalchemy.exc import IntegrityError

    from storage import store as store_module

    project = store.project("p")
    real = store._category
    calls = []

    theirs = Store(store.db).category(project, "cat")  # another writer creates the row between our read and
    # our insert: our first attempt did not see it and its insert conflicts

    def racing(s, project_id, name, *a, **k):
        calls.append(name)
        if len(calls) == 1:
            raise IntegrityError("INSERT INTO categories", {}, Exception("UNIQUE constraint failed"))
        return real(s, project_id, name, *a, **k)

    monkeypatch.setattr(store, "_category", racing)
    cat = store.category(project, "cat")
    assert cat.id == theirs.id and len(calls) == 2

    def always(*a, **k):
        calls.append("x")
        raise IntegrityError("INSERT INTO categories", {}, Exception("UNIQUE constraint failed"))

    monkeypatch.setattr(store, "_category", always)
    calls.clear()
    with pytest.raises(StorageError, match="refused it 3 times as a duplicate .*UNIQUE constraint failed.*nothing"):
        store.category(project, "dog")
    assert len(calls) == store_module.CONFLICT_ATTEMPTS == 3
    assert [c.name for c in store.categories(project)] == ["cat"]


def test_unusable_database_url_is_a_clear_error():
    with pytest.raises(StorageError, match="not a database URL"):
        Database("not a url")


def _davis_coco(names):
    """A COCO file for DAVIS ground truth, built with pycocotools directly (independent of storage)."""
    images, anns = [], []
    for k, name in enumerate(names, start=1):
        gt = _davis_gt(name)
        h, w = gt.shape
        images.append({"id": k, "file_name": f"{name}.jpg", "width": w, "height": h})
        rle = mask_utils.encode(np.asfortranarray(gt.astype(np.uint8)))
        anns.append({"id": 1000 + k, "image_id": k, "category_id": 1, "iscrowd": 0,
                     "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}


def test_davis_ground_truth_round_trip_is_pixel_exact(db_url, tmp_path):
    names = sorted(p.stem for p in (DAVIS / "gt").glob("*.png"))
    assert len(names) == 345
    coco = _davis_coco(names)
    store = Store(db_url, tmp_path / "images")
    report = import_coco(store, store.project("davis"), coco, DAVIS / "img")
    assert (report.images_added, report.annotations_added) == (345, 345)
    again = import_coco(store, store.project("davis"), coco, DAVIS / "img")  # idempotent
    assert (again.images_added, again.annotations_added, again.annotations_existing) == (0, 0, 345)

    exported = export_coco(store, store.project("davis")).coco
    path = tmp_path / "davis.json"
    path.write_text(json.dumps(exported))
    second = Store(f"sqlite:///{tmp_path / 'second.db'}", tmp_path / "images2")
    import_coco(second, second.project("copy"), path, DAVIS / "img")
    final = export_coco(second, second.project("copy")).coco
    assert [a["id"] for a in final["annotations"]] == [1000 + k for k in range(1, 346)]
    by_image = {im["id"]: im["file_name"] for im in final["images"]}
    for ann in final["annotations"]:
        mask = mask_utils.decode({"size": ann["segmentation"]["size"],
                                  "counts": ann["segmentation"]["counts"].encode()}).astype(bool)
        assert np.array_equal(mask, _davis_gt(by_image[ann["image_id"]][:-4])), ann["id"]
    store.close()
    second.close()


def test_polygons_and_uncompressed_rle_import_and_polygon_export_warns(store, tmp_path):
    img = np.zeros((60, 80, 3), np.uint8)
    img[..., 1] = 90
    Image.fromarray(img).save(tmp_path / "a.png")
    holey = _holey_mask()
    rle = mask_utils.encode(np.asfortranarray(holey.astype(np.uint8)))
    runs = counts_from_string(rle["counts"].decode())
    coco = {"images": [{"id": 7, "file_name": "a.png", "width": 80, "height": 60}],
            "categories": [{"id": 3, "name": "thing"}],
            "annotations": [
                {"id": 1, "image_id": 7, "category_id": 3, "segmentation": {"size": [60, 80], "counts": runs}},
                {"id": 2, "image_id": 7, "category_id": 3, "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]}]}
    import_coco(store, store.project("p"), coco, tmp_path)
    anns = store.annotations(store.images_of(store.project("p"))[0].id)
    assert np.array_equal(anns[0].mask(), holey)
    ref = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([[10, 10, 30, 10, 30, 30, 10, 30]], 60, 80)))
    assert np.array_equal(anns[1].mask(), ref.astype(bool))

    rle_export = export_coco(store, store.project("p"))
    assert rle_export.warnings == [] and rle_export.coco["images"][0]["id"] == 7
    poly_export = export_coco(store, store.project("p"), polygons=True)
    assert len(poly_export.warnings) == 1 and "annotation 1" in poly_export.warnings[0]
    assert "1 hole(s) filled" in poly_export.warnings[0]
    assert len(poly_export.coco["annotations"][0]["segmentation"]) == 2  # two parts, two polygons


def test_png_export(store, tmp_path):
    project = store.project("p")
    img = store.add_image(project, DAVIS / "img" / "002.jpg")
    a = np.zeros((img.height, img.width), bool)
    a[10:100, 10:100] = True
    b = np.zeros_like(a)
    b[50:150, 50:150] = True
    store.save_annotations(img.id, [dict(mask=a, category="x"), dict(mask=b, category="y")])
    assert export_png(store, project, tmp_path / "png") == 3
    objects = sorted((tmp_path / "png" / "objects").glob("*.png"))
    assert [np.array_equal(np.array(Image.open(f)) == 255, m) for f, m in zip(objects, [a, b])] == [True, True]
    indexed = Image.open(next((tmp_path / "png" / "indexed").glob("*.png")))
    assert indexed.mode == "P"
    idx = np.array(indexed)
    assert (idx[b] == 2).all() and (idx[a & ~b] == 1).all() and (idx[~a & ~b] == 0).all()


def _bad_cocos(tmp_path):
    img = np.zeros((60, 80, 3), np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    good_rle = encode_mask(_holey_mask()).counts
    base = {"images": [{"id": 1, "file_name": "a.png", "width": 80, "height": 60}],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                             "segmentation": {"size": [60, 80], "counts": good_rle}}]}

    def variant(fn):
        c = copy.deepcopy(base)
        fn(c)
        return c

    return base, [
        (variant(lambda c: c.pop("categories")), "missing or not a list: 'categories'"),
        (variant(lambda c: c["annotations"][0].pop("segmentation")), r"annotations\[0\] \(id 1\): missing segmentation"),
        (variant(lambda c: c["annotations"][0].update(category_id=9)), "unknown category_id 9"),
        (variant(lambda c: c["annotations"][0].update(image_id=5)), "unknown image_id 5"),
        (variant(lambda c: c["annotations"].append(dict(c["annotations"][0]))), "duplicate annotation id 1"),
        (variant(lambda c: c["images"].append(dict(c["images"][0]))), "duplicate image id 1"),
        (variant(lambda c: c["images"][0].update(width=81)), "the file is 80x60, the record says 81x60"),
        (variant(lambda c: c["images"][0].update(file_name="gone.png")), "file not found"),
        (variant(lambda c: c["annotations"][0]["segmentation"].update(size=[61, 80])),
         r"RLE size \[61, 80\] does not match the image"),
        (variant(lambda c: c["annotations"][0]["segmentation"].update(counts=[100, 20])),
         "run lengths sum to 120, the image has 60 x 80 = 4800"),
        (variant(lambda c: c["annotations"][0]["segmentation"].update(counts=good_rle + "5")),
         "compressed RLE: run lengths sum to"),
        (variant(lambda c: c["annotations"][0].update(segmentation=[[1, 2, 3]])), "at least 3 x, y pairs"),
    ]


def test_malformed_coco_names_the_record_and_imports_nothing(store, tmp_path):
    base, cases = _bad_cocos(tmp_path)
    project = store.project("p")
    for coco, expected in cases:
        # a valid image and annotation ride along: they must not be imported either
        coco["images"].append({"id": 50, "file_name": "a.png", "width": 80, "height": 60})
        with pytest.raises(CocoFormatError, match=expected):
            import_coco(store, project, coco, tmp_path)
        stats = store.stats(project)
        assert (stats.images, stats.annotations, store.categories(project)) == (0, 0, [])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CocoFormatError, match="not valid JSON"):
        import_coco(store, project, tmp_path / "bad.json", tmp_path)
    assert import_coco(store, project, base, tmp_path).annotations_added == 1
    changed = copy.deepcopy(base)
    changed["annotations"][0]["segmentation"] = [[1, 1, 20, 1, 20, 20]]
    with pytest.raises(CocoFormatError, match="annotation id 1 was imported before with a different mask"):
        import_coco(store, project, changed, tmp_path)
    assert np.array_equal(store.annotations(store.images_of(project)[0].id)[0].mask(), _holey_mask())


def _cli(*args, env_home):
    import os

    env = dict(os.environ, ISEG_HOME=str(env_home))
    env.pop("ISEG_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "storage", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


def test_cli_import_export_stats(tmp_path):
    coco = _davis_coco(["000", "001", "002"])
    (tmp_path / "in.json").write_text(json.dumps(coco))
    home = tmp_path / "home"
    r = _cli("import-coco", "--project", "d", "--json", str(tmp_path / "in.json"), "--images", str(DAVIS / "img"),
             env_home=home)
    assert r.returncode == 0, r.stderr
    assert "images: 3 added, 0 already there; annotations: 3 added" in r.stdout
    assert (home / "iseg.db").is_file()
    r = _cli("import-images", "--project", "d", str(DAVIS / "img" / "000.jpg"), str(DAVIS / "img" / "010.jpg"),
             env_home=home)
    assert "images: 1 added, 1 already there, 0 skipped" in r.stdout, r.stdout + r.stderr
    r = _cli("stats", "--project", "d", env_home=home)
    assert "images 4 (done 0)  annotations 3" in r.stdout
    r = _cli("export-coco", "--project", "d", "--out", str(tmp_path / "out.json"), env_home=home)
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert [a["segmentation"]["counts"] for a in out["annotations"]] == [a["segmentation"]["counts"] for a in coco["annotations"]]
    r = _cli("export-coco", "--project", "nope", "--out", str(tmp_path / "x.json"), env_home=home)
    assert r.returncode == 2 and "no project named 'nope'" in r.stderr
    bad = dict(coco, annotations=[dict(coco["annotations"][0], category_id=4)])
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    r = _cli("import-coco", "--project", "d", "--json", str(tmp_path / "bad.json"), "--images", str(DAVIS / "img"),
             env_home=home)
    assert r.returncode == 2 and "unknown category_id 4" in r.stderr and "nothing was imported" in r.stderr
