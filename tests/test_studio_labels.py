"""The studio's labelling actions below the page (what the page and the API twins call): label keys, changing
an object's label, the label set, brush strokes through a display frame, exports and COCO import from the
page, the paged image browser."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from storage import Store
from storage.coco import export_coco
from ui import Studio


def _png(h, w, value) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def studio(tmp_path, photo):
    store = Store(f"sqlite:///{tmp_path / 'iseg.db'}", tmp_path / "images")
    project = store.project("p")
    for name in ("car", "person", "tree"):
        store.category(project, name)
    big = np.ascontiguousarray(np.repeat(np.repeat(photo, 3, axis=0), 3, axis=1))  # shown through a display frame
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "JPEG", quality=90)
    store.add_image(project, buf.getvalue(), file_name="big.jpg")
    for k in range(3):
        store.add_image(project, _png(40, 60, 50 * k), file_name=f"small{k}.png")
    st = Studio(store, "p", "classical", export_dir=tmp_path / "exports")
    st.open_index("a", 0)
    yield st
    st.close()
    store.close()


def test_label_keys_strokes_and_relabel(studio):
    v = studio.label_key("a", 2)
    assert "No object to label 'person'" in v.status and v.info["objects"] == []
    assert "No label has key 7" in studio.label_key("a", 7).status
    studio.add_click("a", 700, 450)
    h, w = v.info["image_size"]
    v = studio.gesture("a", "brush", {"kind": "stroke", "points": [[20, 20], [60, 20]], "radius": 10, "erase": False})
    assert "Painted a 14 px stroke" in v.status  # 10 display px = 14.1 image px (1443 px shown as 1024)
    v = studio.add_stroke("a", [(700, 450)], 30, erase=True)
    assert "Erased" in v.status
    v = studio.label_key("a", 2)
    assert "Saved object 1 (person)" in v.status
    [ann] = studio.store.annotations(v.info["image_id"])
    mask = ann.mask()
    assert mask.shape == (h, w) and mask[28, 60] and not mask[450, 700] and ann.category.name == "person"
    assert [p["type"] for p in ann.interactions] == ["click", "brush", "eraser"]
    assert ann.interactions[1]["radius"] == pytest.approx(10 * 1443 / 1024, rel=1e-3)
    v = studio.set_object_label("a", 1, "car")
    assert "Object 1: person -> car" in v.status
    assert studio.store.annotations(v.info["image_id"])[0].category.name == "car"
    assert "No object 5" in studio.set_object_label("a", 5, "car").status
    v = studio.set_label("a", "tree", "#00ff00", 1, "forest")
    assert "Label 'forest': #00ff00, key 1." in v.status
    assert [(c.name, c.key) for c in studio.labels()] == [("car", None), ("person", 2), ("forest", 1)]
    assert "colour is #rrggbb" in studio.set_label("a", "car", "red").status


def test_exports_imports_and_the_browser_from_the_page(studio, tmp_path):
    v, path = studio.export("a", fmt="yolo")
    assert path is None and "nothing to export: project 'p' has 4 image(s) and no saved object yet" in v.status
    studio.add_click("a", 700, 450)
    studio.label_key("a", 1)
    for fmt, suffix in [("yolo", ".zip"), ("voc", ".zip"), ("objects", ".zip"), ("coco-polygons", ".json")]:
        seen = []
        v, path = studio.export("a", fmt=fmt, progress=lambda d, t: seen.append((d, t)))
        assert path.endswith(suffix) and "Exported 1 annotation(s)" in v.status
        assert fmt.startswith("coco") or seen[-1] == (4, 4)
    # pre-annotations of the small images from another tool: 'tree' and a label this set lacks
    coco = export_coco(studio.store, studio.project).coco
    coco["categories"].append({"id": 9, "name": "bus"})
    small = next(i for i in coco["images"] if i["file_name"] == "small1.png")
    seg = {"size": [40, 60], "counts": None}
    from storage.masks import encode_mask
    m = np.zeros((40, 60), bool)
    m[5:20, 10:30] = True
    seg["counts"] = encode_mask(m).counts
    coco["annotations"].append({"id": 77, "image_id": small["id"], "category_id": 9, "segmentation": seg})
    (tmp_path / "pre.json").write_text(json.dumps(coco))
    v = studio.import_coco("a", str(tmp_path / "pre.json"), "refuse")
    assert "Not imported" in v.status and "'bus' is not in the label set" in v.status
    assert studio.store.stats(studio.project).annotations == 1
    v = studio.import_coco("a", str(tmp_path / "pre.json"), "map")
    assert "Imported 1 object(s)" in v.status and "1 new label(s)" in v.status
    assert [c.name for c in studio.labels()][-1] == "bus" and studio.labels()[-1].key == 4

    v = studio.open_index("a", 2)  # the imported object arrives finished and editable
    assert v.info["objects"][0]["category"] == "bus" and v.info["file_name"] == "small1.png"
    studio.edit_object("a", 1)
    v = studio.add_stroke("a", [(10, 5)], 3, erase=True)
    v = studio.finish_object("a", "bus")
    [ann] = studio.store.annotations(v.info["image_id"])
    assert not ann.mask()[5, 10] and ann.mask()[15, 25] and ann.area < m.sum()

    page = studio.browse("in progress")
    assert [(r.position, r.image.file_name, r.objects) for r in page.rows] == [(0, "big.jpg", 1), (2, "small1.png", 1)]
    assert studio.browse("to do", "SMALL").total == 2 and studio.browse("all", "", 2, per_page=3).rows[0].position == 3
    assert studio.thumbnail(page.rows[0].image).endswith("-160.jpg")
    with Image.open(studio.thumbnail(page.rows[0].image)) as t:
        assert max(t.size) == 160
