"""The label set (its migration on a database in use), the image browser's queries, and every export: YOLO
segmentation and VOC PNGs re-read by small readers written here from the formats' documentation, per-object
PNGs, COCO pre-annotation import with label clashes, a 10,000-object import in one transaction."""
import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageDraw
from sqlalchemy import func, select, text

from storage import Database, StorageError, Store
from storage import models as m
from storage.coco import export_coco, import_coco
from storage.errors import CocoFormatError, LabelClash
from storage.exports import export
from storage.masks import encode_mask
from tests.conftest import ROOT


def _png(h, w, value=0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_label_set_upgrade_of_a_database_in_use(db_url, tmp_path):
    """A database made by the first schema (revision 0001), with data in it, upgrades in place: its labels
    get colours and keys 1-9 in COCO id order (0002), its images lock and review columns (0003), every row is
    kept."""
    from alembic import command
    from alembic.config import Config

    from storage.database import MIGRATIONS

    old = Database(db_url, migrate=False)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with old.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    rle = encode_mask(np.eye(8, dtype=bool))
    with old.engine.begin() as conn:  # written as the old code wrote it (no colour, no key columns)
        conn.execute(text("INSERT INTO projects (id, name, created_at) VALUES (1, 'p', '2026-01-01'), (2, 'q', '2026-01-01')"))
        for cid, (project, coco, name) in enumerate([(1, 5, "dog"), (1, 2, "cat"), (2, 1, "car")] +
                                                    [(1, 10 + k, f"l{k}") for k in range(9)], start=1):
            conn.execute(text("INSERT INTO categories (id, project_id, coco_id, name, supercategory) "
                              "VALUES (:i, :p, :c, :n, '')"), dict(i=cid, p=project, c=coco, n=name))
        conn.execute(text("INSERT INTO images (id, project_id, coco_id, sha256, file_name, stored_path, width, height, "
                          "done, created_at) VALUES (1, 1, 1, 'ab', 'a.png', 'a.png', 8, 8, :t, '2026-01-01')"),
                     dict(t=True))
        conn.execute(text("INSERT INTO model_versions (id, name, version, created_at) VALUES (1, 'classical', 'v1', "
                          "'2026-01-01')"))
        conn.execute(text("INSERT INTO training_runs (base_version_id, status, message) VALUES (1, 'done', 'ok')"))
        conn.execute(text("INSERT INTO annotations (image_id, category_id, rle, area, bbox_x, bbox_y, bbox_w, bbox_h, "
                          "iscrowd, author, n_interactions, seconds, created_at) VALUES (1, 1, :r, 8, 0, 0, 8, 8, 0, "
                          "'ann', 0, 1.5, '2026-01-01')"), dict(r=rle.counts))
    old.close()
    store = Store(db_url, tmp_path / "images")  # opening migrates to the newest revision
    labels = store.categories(store.project("p"))
    assert [(c.name, c.key, c.color) for c in labels[:3]] == [("cat", 1, "#e6194b"), ("dog", 2, "#3cb44b"),
                                                              ("l0", 3, "#ffe119")]
    assert [c.key for c in labels] == [1, 2, 3, 4, 5, 6, 7, 8, 9, None, None]  # keys 1-9 only
    assert [(c.name, c.key) for c in store.categories(store.project("q"))] == [("car", 1)]  # per project
    [ann] = store.annotations(1)
    assert ann.category.name == "dog" and ann.author == "ann" and ann.seconds == 1.5 and ann.area == 8
    img = store.image(1)  # revision 0003: images start unlocked and unreviewed, still done
    assert (img.done, img.locked_by, img.review_state, img.review_comment) == (True, None, "", "")
    [run] = store.training_runs()  # revision 0004: runs recorded before it have no author
    assert (run["status"], run["base"], run["author"], run["message"]) == ("done", "classical@v1", "", "ok")
    with store.db.session() as s:
        assert s.scalar(select(func.count(m.Category.id))) == 12
    # the key index holds: a key moved to another label leaves the first without one
    car = store.set_label(store.project("p"), "cat", key=2, color="#00FF00")
    assert (car.key, car.color) == (2, "#00ff00")
    assert [(c.name, c.key) for c in store.categories(store.project("p"))][:2] == [("cat", 2), ("dog", None)]
    with pytest.raises(StorageError, match="1-9"):
        store.set_label(store.project("p"), "cat", key=12)
    with pytest.raises(StorageError, match="#rrggbb"):
        store.set_label(store.project("p"), "cat", color="green")
    with pytest.raises(StorageError, match="already a label called 'dog'"):
        store.set_label(store.project("p"), "cat", rename="dog")
    store.close()


def _shapes(h, w):
    """Three objects that do not overlap: a disc, a rectangle with a hole, an L."""
    yy, xx = np.mgrid[:h, :w]
    disc = (xx - 100) ** 2 + (yy - 90) ** 2 <= 50 ** 2
    ring = np.zeros((h, w), bool)
    ring[40:200, 200:330] = True
    ring[90:140, 240:290] = False
    ell = np.zeros((h, w), bool)
    ell[220:300, 30:60] = True
    ell[270:300, 30:200] = True
    return [disc, ring, ell]


@pytest.fixture
def labelled(store, photo):
    """A project with a photo holding three objects of three labels, and a second image without objects."""
    p = store.project("export")
    for name in ("car", "person", "tree"):
        store.category(p, name)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG")
    img = store.add_image(p, buf.getvalue(), file_name="scene 1.png")
    store.add_image(p, _png(30, 40), file_name="empty.png")
    masks = _shapes(*photo.shape[:2])
    store.save_annotations(img.id, [dict(mask=mk, category=c) for mk, c in zip(masks, ["tree", "car", "person"])])
    return store, p, img, masks


def _read_yolo(folder, names, width, height):
    """Per class, the union of a label file's polygons, drawn as the YOLO docs define them: one object per line,
    ``class x1 y1 x2 y2 ...`` with x divided by the image width and y by its height."""
    out = {}
    for line in (folder / "labels" / names).read_text().splitlines():
        cls, *xy = line.split()
        pts = np.round(np.array(xy, float).reshape(-1, 2) * (width, height))  # iseg's vertices sit on pixels
        canvas = Image.new("1", (width, height))
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in pts], fill=1, outline=1)
        out[int(cls)] = out.get(int(cls), np.zeros((height, width), bool)) | np.array(canvas)
    return out


def _unzip(path, to):
    with zipfile.ZipFile(path) as z:
        z.extractall(to)
    return to


def test_yolo_and_voc_round_trip(labelled, tmp_path):
    store, p, img, masks = labelled
    h, w = img.height, img.width
    path, warnings = export(store, p, "yolo", tmp_path / "yolo.zip")
    assert any("1 hole(s) filled" in x for x in warnings)  # the ring's hole: polygons cannot hold it
    y = _unzip(path, tmp_path / "yolo")
    yaml = (y / "data.yaml").read_text()
    assert "nc: 3" in yaml and '0: "car"' in yaml and '1: "person"' in yaml and '2: "tree"' in yaml
    stem = "000001_scene_1"
    assert (y / "labels" / "000002_empty.txt").read_text() == ""
    got = _read_yolo(y, f"{stem}.txt", w, h)
    filled_ring = masks[1].copy()
    filled_ring[90:140, 240:290] = True
    for cls, want in [(0, filled_ring), (1, masks[2]), (2, masks[0])]:  # car = ring, person = ell, tree = disc
        # the format's own loss: the hole is filled; vertices on boundary pixels rasterise back to the mask
        assert np.array_equal(got[cls], want)

    path, _ = export(store, p, "voc", tmp_path / "voc.zip")
    v = _unzip(path, tmp_path / "voc")
    cls_png = Image.open(v / "SegmentationClass" / f"{stem}.png")
    obj_png = Image.open(v / "SegmentationObject" / f"{stem}.png")
    assert cls_png.mode == "P" and obj_png.mode == "P"
    cls_idx, obj_idx = np.array(cls_png), np.array(obj_png)
    want_cls = np.zeros((h, w), np.uint8)
    want_obj = np.zeros((h, w), np.uint8)
    for k, (mk, label) in enumerate(zip(masks, [3, 1, 2]), start=1):  # tree 3, car 1, person 2 (1-based)
        want_cls[mk], want_obj[mk] = label, k
    assert np.array_equal(cls_idx, want_cls) and np.array_equal(obj_idx, want_obj)  # exact
    pal = cls_png.getpalette()
    labels = store.categories(p)
    assert [tuple(pal[3 * i:3 * i + 3]) for i in range(4)] == [(0, 0, 0)] + [c.rgb for c in labels]
    assert obj_png.getpalette()[3:6] == [128, 0, 0]  # the VOC colour map
    assert (v / "labelmap.txt").read_text().splitlines()[1:] == ["background:0,0,0::"] + [
        f"{c.name}:{','.join(map(str, c.rgb))}::" for c in labels]
    assert (v / "ImageSets" / "Segmentation" / "default.txt").read_text().split() == [stem, "000002_empty"]

    path, _ = export(store, p, "objects", tmp_path / "objects.zip")
    o = _unzip(path, tmp_path / "objects")
    files = sorted(f.name for f in (o / "objects").iterdir())
    assert files == [f"{stem}_001_tree.png", f"{stem}_002_car.png", f"{stem}_003_person.png"]
    for f, mk in zip(files, masks):
        assert np.array_equal(np.array(Image.open(o / "objects" / f)) == 255, mk)

    coco = json.loads(export(store, p, "coco", tmp_path / "c.json")[0].read_text())
    assert [(c["name"], c["color"], c["iseg"]["key"]) for c in coco["categories"]] == [
        (c.name, c.color, c.key) for c in labels]


def test_empty_project_export_is_refused_and_writes_nothing(store, tmp_path):
    p = store.project("empty")
    store.add_image(p, _png(10, 10), file_name="a.png")
    for fmt in ("coco", "yolo", "voc", "objects"):
        with pytest.raises(StorageError, match="nothing to export: project 'empty' has 1 image"):
            export(store, p, fmt, tmp_path / f"out-{fmt}")
    assert not list(tmp_path.glob("out-*")) and not list(tmp_path.glob(".out*"))


def test_coco_pre_annotations_with_label_clashes(labelled, tmp_path):
    store, p, img, masks = labelled
    other = store.project("other")  # the same images in another project with its own label set
    for name in ("car", "person"):
        store.category(other, name)
    store.add_image(other, img.path, file_name="scene 1.png")
    store.add_image(other, _png(30, 40), file_name="empty.png")
    coco = export_coco(store, p).coco  # car 1, person 2, tree 3: 'tree' is not in other's label set
    with store.db.session() as s:
        before = s.scalar(select(func.count(m.Annotation.id)))
    with pytest.raises(LabelClash, match="nothing was imported: 'tree' is not in the label set"):
        import_coco(store, other, coco, on_clash="refuse")
    swapped = json.loads(json.dumps(coco))
    for c in swapped["categories"]:
        c["id"] = {1: 2, 2: 1, 3: 3}[c["id"]]
    for a in swapped["annotations"]:
        a["category_id"] = {1: 2, 2: 1, 3: 3}[a["category_id"]]
    with pytest.raises(LabelClash, match="'car' has id 2 in the file and 1 in the label set"):
        import_coco(store, other, swapped, on_clash="refuse")
    with store.db.session() as s:
        assert s.scalar(select(func.count(m.Annotation.id))) == before  # nothing half-imported
    r = import_coco(store, other, swapped, on_clash="map")  # by name: the masks keep their labels
    assert (r.annotations_added, r.categories_added, r.images_added, r.images_existing) == (3, 1, 0, 2)
    oimg = store.images_of(other)[0]
    got = {a.category.name: a.mask() for a in store.annotations(oimg.id)}
    assert np.array_equal(got["tree"], masks[0]) and np.array_equal(got["car"], masks[1])
    assert [c.name for c in store.categories(other)] == ["car", "person", "tree"]
    missing = dict(coco, images=[dict(coco["images"][0], file_name="nope.png")])
    with pytest.raises(CocoFormatError, match="no image of this name in the project"):
        import_coco(store, other, missing)


def test_ten_thousand_objects_import_in_one_transaction_with_progress(store, tmp_path):
    p = store.project("big")
    images, anns = [], []
    for i in range(100):
        store.add_image(p, _png(24, 32, i), file_name=f"im{i:03d}.png")
        images.append({"id": i + 1, "file_name": f"im{i:03d}.png", "width": 32, "height": 24})
        for k in range(100):
            y, x = divmod(k, 10)
            anns.append({"id": i * 100 + k + 1, "image_id": i + 1, "category_id": 1 + k % 3, "iscrowd": 0,
                         "segmentation": [[3.0 * x, 2.0 * y, 3.0 * x + 2, 2.0 * y, 3.0 * x + 2, 2.0 * y + 1]]})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]}
    seen = []
    statements = []
    from sqlalchemy import event

    @event.listens_for(store.db.engine, "commit")
    def on_commit(conn):
        statements.append("commit")

    r = import_coco(store, p, coco, progress=lambda done, total: seen.append((done, total)))
    assert r.annotations_added == 10_000 and statements == ["commit"]  # one transaction
    assert seen[-1] == (20_000, 20_000) and len(seen) == 40 and seen == sorted(seen)
    assert store.stats(p).annotations == 10_000
    r = import_coco(store, p, coco)  # again: nothing changes
    assert (r.annotations_added, r.annotations_existing) == (0, 10_000)


def test_cli_labels_and_exports(labelled, tmp_path, db_url):
    store, p, img, masks = labelled

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "storage", "--database", db_url, "--images-dir",
                               str(store.images.root), *args], capture_output=True, text=True, cwd=ROOT, timeout=300)

    r = cli("labels", "--project", "export", "--set", "tree", "--key", "1", "--color", "#123456")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split() == ["-", "#e6194b", "1", "car"]
    assert r.stdout.splitlines()[2].split() == ["1", "#123456", "3", "tree"]
    r = cli("export", "--project", "export", "--format", "voc", "--out", str(tmp_path / "voc"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "voc" / "SegmentationClass" / "000001_scene_1.png").is_file()
    r = cli("export", "--project", "export", "--format", "yolo", "--out", str(tmp_path / "y.zip"))
    assert r.returncode == 0 and zipfile.is_zipfile(tmp_path / "y.zip"), r.stderr
    r = cli("import-coco", "--project", "export", "--json", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "cannot read" in r.stderr
