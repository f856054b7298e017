"""A day's labelling in a real browser (chromium): two clicks, the brush and the eraser, key 3 for the third
label, Edit replays the strokes, accept, YOLO and VOC exports from the page; labels drawn in their colours,
and the image browser. Screenshots go to artifacts/ui/."""
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import serve_studio
from tests.test_ui_browser import _click_image, _drag, _shot, _shown, _tab, _wait_status, open_page


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from storage import Store

    tmp = tmp_path_factory.mktemp("workflow")
    store = Store(f"sqlite:///{tmp / 'iseg.db'}", tmp / "images")
    project = store.project("workflow")
    for name in ("car", "person", "tree"):  # keys 1, 2, 3
        store.category(project, name)
    url, studio, store, demo = serve_studio(tmp, "workflow", store=store)
    yield url, store, studio
    demo.close()
    store.close()


@pytest.fixture(scope="module")
def page(app):
    yield from open_page(app[0])


def _objects(store, file_name):
    img = next(i for i in store.images_of(store.project("workflow")) if i.file_name == file_name)
    return img, store.annotations(img.id)


def _export(page, fmt_label, suffix):
    _tab(page, "Project")
    page.locator("#export_format input").click()
    page.get_by_role("option", name=fmt_label).click()
    page.locator("#export_btn").click()
    status = _wait_status(page, rf"Exported \d+ annotation\(s\) as {re.escape(fmt_label)}")
    _tab(page, "Annotate")
    return Path(re.search(rf"to `?(\S+\{suffix})", status).group(1).strip("`"))


def test_brush_eraser_label_key_edit_accept_and_exports(page, app, tmp_path):
    _, store, studio = app
    _wait_status(page, r"astronaut\.jpg")
    legend = page.inner_text("#labels")
    assert all(f"{k}\n{name}" in legend or f"{k}{name}" in legend.replace("\n", "")
               for k, name in [(1, "car"), (2, "person"), (3, "tree")]), legend
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("3")  # a label key with no object: a message, nothing saved
    _wait_status(page, r"No object to label 'tree': draw one first")
    page.keyboard.press("q")
    _click_image(page, 250, 250)
    _wait_status(page, r"1 prompt\(s\) · mask \d+ px")
    _click_image(page, 260, 330)
    _wait_status(page, r"2 prompt\(s\) · mask \d+ px")
    page.keyboard.press("d")  # the brush: paint a band in the top-left corner, outside the object
    _drag(page, [(20, 30), (60, 32), (110, 34)])
    _wait_status(page, r"3 prompt\(s\) · Painted a \d+ px stroke")
    _shot(page, "16-brush-stroke")
    page.keyboard.press("e")  # the eraser: a bite out of the clicked object
    page.keyboard.press("]")  # a larger brush
    _drag(page, [(250, 245), (252, 250), (255, 255)])
    _wait_status(page, r"4 prompt\(s\) · Erased a \d+ px stroke")
    _shot(page, "17-eraser-stroke")
    page.keyboard.press("3")  # the third label finishes the object
    _wait_status(page, r"Saved object 1 \(tree\)")
    img, [ann] = _objects(store, "astronaut.jpg")
    kinds = [p["type"] for p in ann.interactions]
    assert kinds == ["click", "click", "brush", "eraser"] and ann.category.name == "tree"
    assert ann.interactions[3]["radius"] > ann.interactions[2]["radius"]  # "]" made the brush larger
    mask = ann.mask()
    assert mask[32, 60] and not mask[250, 250] and mask[330, 260]  # painted in, erased out, the model's own

    page.fill("#obj_num input", "1")
    page.locator("#edit_btn").click()  # the log replays: clicks, then the strokes, to the same mask
    _wait_status(page, r"Editing object 1")
    info = studio.view(next(iter(studio._tabs))).info
    assert [p["type"] for p in info["prompts"]] == kinds
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("3")
    _wait_status(page, r"Saved object 1 \(tree\)")
    _, [again] = _objects(store, "astronaut.jpg")
    assert again.id == ann.id and np.array_equal(again.mask(), mask)
    page.keyboard.press("a")
    _wait_status(page, r"Saved image 1 with 1 object\(s\)")
    _wait_status(page, r"1 / 4 images done")

    yolo = _export(page, "YOLO segmentation", ".zip")
    with zipfile.ZipFile(yolo) as z:
        names = z.namelist()
        assert "data.yaml" in names and '2: "tree"' in z.read("data.yaml").decode()
        lines = z.read("labels/000001_astronaut.txt").decode().splitlines()
    assert lines and all(line.split()[0] == "2" for line in lines)  # tree: class 2 (0-based)
    xy = np.array(lines[0].split()[1:], float).reshape(-1, 2)
    assert ((0 <= xy) & (xy <= 1)).all() and len(xy) >= 3
    voc = _export(page, "Pascal VOC PNGs", ".zip")
    with zipfile.ZipFile(voc) as z:
        z.extractall(tmp_path / "voc")
    cls = Image.open(tmp_path / "voc" / "SegmentationClass" / "000001_astronaut.png")
    obj = np.array(Image.open(tmp_path / "voc" / "SegmentationObject" / "000001_astronaut.png"))
    assert cls.mode == "P" and np.array_equal(np.array(cls) == 3, mask) and np.array_equal(obj == 1, mask)
    assert tuple(cls.getpalette()[9:12]) == store.categories(store.project("workflow"))[2].rgb
    _shot(page, "18-exported-yolo-voc")


def test_objects_in_their_label_colours_and_the_image_browser(page, app):
    _, store, studio = app
    _wait_status(page, r"chelsea\.jpg")  # accepting the first image opened the next
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("q")
    before = _shown(page)
    for x, y, key, label in [(120, 200, "1", "car"), (330, 120, "2", "person")]:
        _click_image(page, x, y)
        _wait_status(page, r"1 prompt\(s\)")
        page.keyboard.press(key)
        _wait_status(page, rf"Saved object \d \({label}\)")
    labels = {c.name: c.rgb for c in store.categories(store.project("workflow"))}
    _, anns = _objects(store, "chelsea.jpg")
    shown = _shown(page).astype(int)
    for ann in anns:  # each object tinted towards its label's colour
        m = ann.mask()
        shift = (shown[m] - before[m].astype(int)).mean(axis=0)
        want = np.array(labels[ann.category.name]) - before[m].mean(axis=0)
        assert np.dot(shift, want) > 0 and np.corrcoef(shift, want)[0, 1] > 0.8
    _shot(page, "19-coloured-objects")

    page.get_by_role("tab", name="Images").click()
    page.wait_for_selector("#browser img", timeout=30000)
    # the page is read again on every visit: wait for this visit's answer
    page.wait_for_function("() => /chelsea\\.jpg · in progress/.test(document.querySelector('#browser').innerText)",
                           timeout=30000)
    assert "4 image(s) · page 1 of 1" in page.inner_text("#browse_info")
    captions = page.inner_text("#browser")
    assert "astronaut.jpg · done · 1 object(s)" in captions and "chelsea.jpg · in progress · 2 object(s)" in captions
    _shot(page, "20-image-browser")
    page.locator("#browse_state label", has_text="done").first.click()
    page.wait_for_function("() => /1 image\\(s\\)/.test(document.querySelector('#browse_info').innerText)",
                           timeout=30000)
    page.locator("#browse_state label", has_text="all").first.click()
    page.wait_for_function("() => /4 image\\(s\\)/.test(document.querySelector('#browse_info').innerText)",
                           timeout=30000)
    page.locator("#browser img").nth(3).click()  # the fourth thumbnail opens image 4 in the Annotate tab
    _wait_status(page, r"image 4: rocket\.jpg")
    page.wait_for_selector("#canvas img", state="visible", timeout=30000)  # back in the Annotate tab
    page.get_by_role("tab", name="Images").click()
    page.fill("#goto_num input", "2")
    page.locator("#goto_btn").click()  # "go to": any image by number
    _wait_status(page, r"image 2: chelsea\.jpg")
    page.wait_for_selector("#canvas img", state="visible", timeout=30000)
