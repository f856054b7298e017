"""The studio in a real browser: Debian's chromium driven by Playwright against the app served in-process.
Screenshots of every step go to artifacts/ui/ (kept as test artifacts)."""
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from tests.conftest import ROOT, serve_studio

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts" / "ui"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]

playwright_api = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM):
    if os.environ.get("ISEG_REQUIRE_BROWSER") == "1":
        raise RuntimeError("chromium not found at /usr/bin/chromium (Debian package 'chromium')")
    pytest.skip("chromium not installed: browser tests SKIPPED (Debian package 'chromium')", allow_module_level=True)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    url, _, store, demo = serve_studio(tmp_path_factory.mktemp("browser"), "browser")
    yield url, store
    demo.close()
    store.close()


def open_page(url):
    """A chromium page on the studio at ``url``, its first image shown (a generator for module fixtures)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.goto(url, wait_until="load")
        pg.wait_for_selector("#canvas img", timeout=60000)
        yield pg
        browser.close()


@pytest.fixture(scope="module")
def page(app):
    yield from open_page(app[0])


def _status(page) -> str:
    return page.inner_text("#status")


def _wait_status(page, pattern: str, timeout: float = 60000):
    page.wait_for_function("p => new RegExp(p).test(document.querySelector('#status').innerText)", arg=pattern,
                           timeout=timeout)
    return _status(page)


def _to_page(page):
    """A function from natural pixels of the displayed image to page coordinates."""
    # a new frame re-renders the canvas: wait for an image that is loaded *and* laid out, then read its box and
    # natural size in one step (a frame swapped between two reads once gave a 0-wide box)
    ready = ("() => { const e = document.querySelector('#canvas img'); "
             "return e && e.complete && e.naturalWidth > 0 && e.getBoundingClientRect().width > 0; }")
    page.wait_for_function(ready, timeout=30000)
    page.locator("#canvas img").scroll_into_view_if_needed()  # buttons further down (Export) scroll the page
    page.wait_for_function(ready, timeout=30000)
    x, y, w, h, nw, nh = page.evaluate("() => { const e = document.querySelector('#canvas img'); "
                                       "const r = e.getBoundingClientRect(); "
                                       "return [r.x, r.y, r.width, r.height, e.naturalWidth, e.naturalHeight]; }")
    # the canvas sizes the frame's box to the frame (fit, then the view's zoom): box and picture coincide
    return lambda px, py: (x + px * w / nw, y + py * h / nh)


def _click_image(page, x, y, **kw):
    """Click natural pixel (x, y) of the displayed image."""
    page.mouse.click(*_to_page(page)(x + 0.5, y + 0.5), **kw)


def _pick_model_on_coffee(page, name):
    """Open coffee.jpg, choose model ``name`` in the picker, wait until it serves the image, leave the keyboard
    to the canvas."""
    _go_to(page, "coffee.jpg")
    page.locator("#model input").click()
    page.get_by_role("option", name=name).click()
    page.wait_for_function("n => document.querySelector('#model input').value.includes(n)", arg=name, timeout=120000)
    _wait_status(page, r"coffee\.jpg")
    page.evaluate("document.activeElement.blur()")


def _pick_click_twice_and_finish(page, store, name, shot, timeout=60000):
    """Model ``name`` picked on coffee.jpg, a positive and a negative click, each answered with a mask, then the
    object finished; it is stored with both clicks, a mask and the model's name."""
    _pick_model_on_coffee(page, name)
    page.keyboard.press("q")
    _click_image(page, 200, 150)
    _wait_status(page, r"1 prompt\(s\) · mask \d+ px", timeout=timeout)
    _click_image(page, 60, 40, button="right")
    _wait_status(page, r"2 prompt\(s\) · mask \d+ px", timeout=timeout)
    _shot(page, shot)
    page.keyboard.press("n")
    _wait_status(page, r"Saved object \d+")
    img = next(i for i in store.images_of(store.project("browser")) if i.file_name == "coffee.jpg")
    ann = store.annotations(img.id)[-1]
    assert [(p["type"], p["positive"]) for p in ann.interactions] == [("click", True), ("click", False)]
    assert ann.area > 0 and ann.model.startswith(name + "@")


def _finish_and_read(page, store, file_name):
    """Finish the (first) object with the N key, wait for the save, and return the stored annotations of the image."""
    page.keyboard.press("n")
    _wait_status(page, r"Saved object 1")  # each of these tests saves its image's first object
    img = next(i for i in store.images_of(store.project("browser")) if i.file_name == file_name)
    return store.annotations(img.id)


def _go_to(page, file_name):
    """Page through the queue with the arrow key until ``file_name`` is shown."""
    for _ in range(4):
        if file_name in _status(page):
            break
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(500)
    _wait_status(page, re.escape(file_name))


def _shown(page) -> np.ndarray:
    """The image as displayed now (the served PNG, decoded)."""
    data = page.locator("#canvas img").evaluate("""async e => {
        const r = await fetch(e.src); const b = new Uint8Array(await r.arrayBuffer()); return Array.from(b); }""")
    return np.array(Image.open(io.BytesIO(bytes(data))).convert("RGB"))


def _tab(page, name):
    """Open the page's tab ``name`` (Annotate, Images, Project, Training)."""
    page.get_by_role("tab", name=name).click()
    page.wait_for_selector(f"[role=tab][aria-selected=true]:has-text('{name}')", timeout=10000)


def _shot(page, name):
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_click_correct_undo_finish_accept_export_in_the_browser(page, app):
    _, store = app
    _wait_status(page, r"astronaut\.jpg")
    before = _shown(page)
    _shot(page, "01-opened")
    _click_image(page, 250, 250)
    _wait_status(page, r"1 prompt\(s\) · mask \d+ px")
    after = _shown(page)
    assert after.shape == before.shape
    changed = np.abs(after.astype(int) - before.astype(int)).sum(axis=2) > 30
    assert changed[250, 250] and changed.mean() > 0.02  # the mask overlay appeared around the click
    _shot(page, "02-first-click")

    page.keyboard.down("Shift")  # Shift+click = negative
    _click_image(page, 30, 30)
    page.keyboard.up("Shift")
    status = _wait_status(page, r"2 prompt\(s\)")
    _shot(page, "03-negative-click")
    page.keyboard.press("Control+z")
    _wait_status(page, "Undone")
    page.locator("#undo_btn").click()  # the button does the same
    _wait_status(page, "Undone|Nothing to undo")
    page.keyboard.press("Control+y")
    _wait_status(page, "Redone")
    _shot(page, "04-undo-redo")

    page.keyboard.press("Escape")  # clear the object, start again from a box
    _wait_status(page, "Cleared the current object")
    page.keyboard.press("b")  # box tool by keyboard: two clicks make a box
    _click_image(page, 15, 5)
    _wait_status(page, "opposite corner")
    _click_image(page, 500, 510)
    _wait_status(page, r"1 prompt\(s\)")
    page.keyboard.press("q")  # back to positive clicks
    _click_image(page, 250, 250)
    _wait_status(page, r"2 prompt\(s\)")
    _shot(page, "05-box-then-click")

    page.fill("#category textarea, #category input", "astronaut")
    page.evaluate("document.activeElement.blur()")  # shortcuts are ignored while typing in a field
    page.keyboard.press("n")
    _wait_status(page, r"Saved object 1 \(astronaut\)")
    assert "astronaut" in page.inner_text("#objects")
    _shot(page, "06-finished")

    page.locator("#accept_btn").click()
    _wait_status(page, r"Saved image 1 with 1 object\(s\)")
    _wait_status(page, r"1 / 4 images done")
    _shot(page, "07-accepted")

    _tab(page, "Project")  # export is project work: its own tab
    page.locator("#export_btn").click()
    status = _wait_status(page, r"Exported \d+ annotation")
    _shot(page, "08-exported")
    _tab(page, "Annotate")
    path = re.search(r"to (\S+\.json)", status).group(1).strip("`")
    coco = json.loads(Path(path).read_text())
    cat = next(c["id"] for c in coco["categories"] if c["name"] == "astronaut")
    anns = [a for a in coco["annotations"] if a["category_id"] == cat]
    assert len(anns) == 1 and [p["type"] for p in anns[0]["iseg"]["interactions"]] == ["box", "click"]
    img = store.images_of(store.project("browser"))[0]
    exported = mask_utils.decode({"size": anns[0]["segmentation"]["size"],
                                  "counts": anns[0]["segmentation"]["counts"].encode()}).astype(bool)
    assert np.array_equal(exported, store.annotations(img.id)[0].mask()) and exported.sum() > 5000


def test_scribble_and_contour_tools_in_the_browser(page, app):
    _, store = app
    _go_to(page, "chelsea.jpg")
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("s")  # scribble: click its points, Enter ends it
    _click_image(page, 200, 150)
    _wait_status(page, r"Scribble: 1 point")
    _click_image(page, 260, 170)
    _wait_status(page, r"Scribble: 2 point")
    page.keyboard.press("Enter")
    _wait_status(page, r"1 prompt\(s\) · mask \d+ px")
    page.keyboard.press("c")  # contour: three or more points, Enter closes it
    for k, (x, y) in enumerate([(60, 40), (420, 40), (420, 290), (60, 290)], start=1):
        _click_image(page, x, y)  # one at a time: a click made while the last one is handled is dropped
        _wait_status(page, f"Contour: {k} point")
    _shot(page, "09-contour-points")
    page.keyboard.press("Enter")
    _wait_status(page, r"2 prompt\(s\)")
    _shot(page, "10-scribble-and-contour")
    [ann] = _finish_and_read(page, store, "chelsea.jpg")
    assert [p["type"] for p in ann.interactions] == ["scribble", "contour"] and ann.interactions[0]["positive"]
    assert ann.area > 1000


def _drag(page, points, button="left"):
    """Press at the first natural pixel, move through the others, release at the last."""
    at = _to_page(page)
    page.mouse.move(*at(*points[0]))
    page.mouse.down(button=button)
    for x, y in points[1:]:
        page.mouse.move(*at(x, y), steps=4)
    page.mouse.up(button=button)


def test_drag_box_right_click_and_brush_stroke(page, app):
    _, store = app
    _go_to(page, "rocket.jpg")
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("q")
    _drag(page, [(250, 20), (330, 200), (390, 410)])  # a drag with the click tool = a box
    _wait_status(page, r"1 prompt\(s\)")
    _shot(page, "11-drag-box")
    _click_image(page, 40, 40, button="right")  # right-click = negative
    _wait_status(page, r"2 prompt\(s\)")
    page.keyboard.press("s")
    _drag(page, [(300, 150), (310, 220), (320, 300)])  # a brush stroke
    _wait_status(page, r"3 prompt\(s\)")
    _drag(page, [(600, 380), (620, 300)], button="right")  # a negative stroke
    _wait_status(page, r"4 prompt\(s\)")
    _shot(page, "12-right-click-and-strokes")
    [ann] = _finish_and_read(page, store, "rocket.jpg")
    kinds = [(p["type"], p.get("positive")) for p in ann.interactions]
    assert kinds == [("box", None), ("click", False), ("scribble", True), ("scribble", False)]
    box = ann.interactions[0]
    assert abs(box["x0"] - 250) < 3 and abs(box["y1"] - 410) < 3
    assert len(ann.interactions[2]["points"]) >= 3


def test_pick_a_click_map_model_click_and_finish(page, app, tmp_path, monkeypatch):
    """Switch to RITM HRNet18s from the picker, its weights file (random weights, the published file name) in
    the weights folder as a user would put it there; click and finish an object with it."""
    import torch

    from iseg_core.models.clickmap import CLICKMAP_CONFIGS, ClickMapNetwork

    _, store = app
    name = "ritm_hrnet18s_cocolvis"
    torch.manual_seed(0)
    net = ClickMapNetwork(CLICKMAP_CONFIGS[name])
    with torch.no_grad():  # a non-trivial random mask: a positive bias on the final classifier
        net.feature_extractor.cls_head.bias.fill_(2.0)
    torch.save({"state_dict": net.state_dict()}, tmp_path / CLICKMAP_CONFIGS[name].checkpoint)
    monkeypatch.setenv("ISEG_WEIGHTS_DIR", str(tmp_path))
    _pick_model_on_coffee(page, name)
    page.keyboard.press("q")  # the click tool (an earlier test left the scribble tool on)
    _click_image(page, 200, 150)
    _wait_status(page, r"1 prompt\(s\) · mask \d+ px")
    _shot(page, "13-click-map-model")
    [ann] = _finish_and_read(page, store, "coffee.jpg")
    assert [p["type"] for p in ann.interactions] == ["click"] and ann.area > 0
    assert ann.model.startswith(name + "@")


def test_pick_interformer_click_and_finish(page, app, tmp_path, monkeypatch):
    """InterFormer-Light from the picker (random weights, saved as its trainer saves them, in the folder and
    under the name its authors publish it): the image encoded once, two clicks through its label map, finished."""
    import torch

    from iseg_core.models import load_model

    _, store = app
    name = "interformer_light_vitb_cocolvis"
    torch.manual_seed(0)
    net = load_model(name, device="cpu").network
    with torch.no_grad():  # a non-trivial random mask: a positive foreground bias on the classifier
        net.decode_head.conv_seg.bias.copy_(torch.tensor([0.0, 2.0]))
    (tmp_path / "interformer_light_coco_lvis_320k").mkdir()
    torch.save({"meta": {"iter": 320000}, "state_dict": net.state_dict()},
               tmp_path / "interformer_light_coco_lvis_320k" / "iter_320000.pth")
    monkeypatch.setenv("ISEG_WEIGHTS_DIR", str(tmp_path))
    _pick_click_twice_and_finish(page, store, name, "31-interformer")


def test_pick_mst_click_and_finish(page, app, tmp_path, monkeypatch):
    """MST's slim ViT-B from the picker (random weights under the file name its README evaluates): every click
    runs the whole network with its token scales; two clicks, finished, stored with the model's name."""
    import torch

    from iseg_core.models import load_model

    _, store = app
    name = "mst_vit_b448_slim_cocolvis"
    torch.manual_seed(0)
    net = load_model(name, device="cpu").network
    with torch.no_grad():  # a non-trivial random mask: the click disks weigh in, a small positive bias
        net.patch_embed_coords.proj.weight.mul_(50)
        net.head.conv_seg.bias.fill_(0.2)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "mst-3s-slim-448-base.pth")
    del net
    monkeypatch.setenv("ISEG_WEIGHTS_DIR", str(tmp_path))
    _pick_click_twice_and_finish(page, store, name, "32-mst", timeout=120000)


def test_a_multi_input_model_takes_the_contour_tool(page, app, tmp_path, monkeypatch):
    """SAIC-IS's multi-input HRNet18 (random weights under its published file name in the weights folder):
    a traced contour and then a click, both fed to the network as inputs of their own."""
    import torch

    from iseg_core.models import load_model

    _, store = app
    name = "saicis_hrnet18_multi_cocolvis"
    torch.manual_seed(0)
    net = load_model(name, device="cpu").network
    with torch.no_grad():  # a non-trivial random mask: a positive bias on the final classifier
        net.feature_extractor.cls_head.bias.fill_(2.0)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "hrnet18_multi.pth")
    monkeypatch.setenv("ISEG_WEIGHTS_DIR", str(tmp_path))
    _pick_model_on_coffee(page, name)
    page.keyboard.press("c")
    for k, (x, y) in enumerate([(80, 60), (380, 60), (380, 260), (80, 260)], start=1):
        _click_image(page, x, y)  # one at a time: a click made while the last one is handled is dropped
        _wait_status(page, f"Contour: {k} point")
    page.keyboard.press("Enter")
    _wait_status(page, r"1 prompt\(s\) · mask \d+ px")
    page.keyboard.press("q")  # back to the click tool
    _click_image(page, 200, 150)
    _wait_status(page, r"2 prompt\(s\) · mask \d+ px")
    _shot(page, "14-multi-input-contour-then-click")
    page.keyboard.press("n")  # coffee.jpg may hold the click-map test's object already: this one is the last
    _wait_status(page, r"Saved object \d+")
    img = next(i for i in store.images_of(store.project("browser")) if i.file_name == "coffee.jpg")
    ann = store.annotations(img.id)[-1]
    assert [p["type"] for p in ann.interactions] == ["contour", "click"] and ann.area > 0
    assert ann.model.startswith(name + "@")


def test_picking_a_model_downloads_it_with_a_progress_bar(page, app, online, monkeypatch):
    """MobileSAM is not on disk: picking it downloads its file from the (local, slowed) Hub with a progress bar
    that says MB done, the total and the time left; then the model segments."""
    import io as _io

    import torch

    from iseg_core.models.sam import SAM_CONFIGS, SamNetwork

    from .hub_server import HubServer

    torch.manual_seed(0)
    buf = _io.BytesIO()
    torch.save(SamNetwork(SAM_CONFIGS["mobile_sam"]).official_state_dict(), buf)
    content = buf.getvalue()
    name = "mobile_sam"
    with HubServer({"dhkim2810/MobileSAM/mobile_sam.pt": content}, rate=len(content) / 6) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        _go_to(page, "coffee.jpg")
        page.locator("#model input").click()
        page.get_by_role("option", name=name).click()
        progress = page.wait_for_selector(r"text=/Downloading mobile_sam weights: \d+ of \d+ MB.*s left/",
                                          timeout=30000)
        _shot(page, "15-model-download-progress")
        assert progress is not None
        page.wait_for_selector(r"text=/Downloading mobile_sam weights/", state="detached", timeout=120000)
        _wait_status(page, r"coffee\.jpg", timeout=120000)
    blobs = list((online / "hub").rglob("blobs/*"))
    assert [b.stat().st_size for b in blobs] == [len(content)]  # whole, and nothing half-written beside it
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("q")
    _click_image(page, 200, 150)
    _wait_status(page, r"1 prompt\(s\) · (mask \d+ px|decoded in the page)")
    page.keyboard.press("Control+z")  # leave the page as the next test expects it
