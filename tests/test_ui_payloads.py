"""Every string a user or an imported file supplies is shown as text: a corpus of markup and script payloads is
planted through the API (label names and colours, object categories, a review comment, uploaded file names, the
signed-in user's name, the project's name) and a COCO import (category names and colours, image file names),
then chromium opens every tab and every list. No script may run, the payloads must be readable as text, and
the app must still answer a click."""
import json
import re

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from pycocotools import mask as mask_utils

from storage import Store
from tests.conftest import serve_studio
from tests.test_ui_browser import ARGS, ARTIFACTS, CHROMIUM, _click_image, _tab, _wait_status, playwright_api

MARK = "window.__xss=(window.__xss||0)+1"
PAYLOADS = [
    f'<img src=x onerror="{MARK}">',
    f'"><script>{MARK}</script>',
    f"'><svg onload={MARK}>",
    f"[link](javascript:{MARK})",
    "**bold** _em_ `code`",
    "# heading",
    "\u202egnp.exe",  # a right-to-left override
    "nul\x00byte",
    "x" * 10000,
]
USER = "<img/src=x/onerror=window.__xss=1>"  # a sign-in name has no spaces
PROJECT = f'proj"><img src=x onerror="{MARK}">'
FILE_NAMES = ['"><svg onload=window.__xss=1>.png', "<b>bold</b>.png"]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("payloads")
    store = Store(f"sqlite:///{tmp / 'iseg.db'}", tmp / "images")
    project = store.project(PROJECT)
    rng = np.random.default_rng(0)
    for k, name in enumerate(FILE_NAMES):  # the first images of the project, under payload names
        path = tmp / f"img{k}.png"
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(path)
        store.add_image(project, path, file_name=name)
    url, studio, store, demo = serve_studio(tmp, PROJECT, store=store, auth=lambda user, password: password == "pw",
                                            roles=lambda user: "reviewer")
    yield url, studio, store, tmp
    demo.close()
    store.close()


def test_payloads_are_shown_as_text_and_run_nothing(app):
    url, studio, store, tmp = app
    c = Client(url, verbose=False, auth=(USER, "pw"))
    refused = []
    for k, p in enumerate(PAYLOADS):  # labels: names, and colours that are not colours
        status = c.predict(p, "#%02x%02x%02x" % (25 * k, 80, 120), None, "", api_name="/set_label")[1]
        if "Label not saved" in status:
            refused.append(p)
    assert refused in ([], ["nul\x00byte"]), refused  # a NUL may be refused, with a message
    status = c.predict("plain", f"javascript:{MARK}", None, "", api_name="/set_label")[1]
    assert "colour is #rrggbb" in status
    # objects with payload categories on the first image, accepted, then sent back with a payload comment
    c.predict(0, api_name="/open_image")
    for p in PAYLOADS[:3]:
        c.predict(60, 50, True, api_name="/add_click")
        c.predict(p, api_name="/finish_object")
    c.predict(PAYLOADS[4], api_name="/accept_image")  # saved; the next image opens
    c.predict(0, api_name="/open_image")
    status = c.predict(PAYLOADS[0] + " " + PAYLOADS[1], api_name="/send_back_image")[1]
    assert "Sent back" in status
    # uploads under payload names (as far as Gradio keeps them)
    for k, name in enumerate(['"><img src=x onerror=window.__xss=1>.png', "javascript:alert(1).png"]):
        path = tmp / "uploads" / str(k) / name
        path.parent.mkdir(parents=True)
        Image.fromarray(np.full((90, 120, 3), 40 * k + 20, np.uint8)).save(path, format="PNG")
        assert "Added 1 image(s)" in c.predict([handle_file(str(path))], api_name="/upload_images")[1]
    # a COCO file: payload category names and colours, an image under a payload name, one the project lacks
    m = np.zeros((120, 160), np.uint8, order="F")
    m[20:60, 30:90] = 1
    rle = mask_utils.encode(m)
    seg = {"size": rle["size"], "counts": rle["counts"].decode()}
    coco = {"images": [{"id": 1, "file_name": FILE_NAMES[1], "width": 160, "height": 120}],
            "categories": [{"id": 1, "name": PAYLOADS[2], "color": f"javascript:{MARK}"},
                           {"id": 2, "name": PAYLOADS[3], "supercategory": PAYLOADS[0]}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": seg, "area": 2400,
                             "bbox": [30, 20, 60, 40], "iscrowd": 0},
                            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": seg, "area": 2400,
                             "bbox": [30, 20, 60, 40], "iscrowd": 0}]}
    good = tmp / "pre.json"
    good.write_text(json.dumps(coco))
    status = c.predict(handle_file(str(good)), "map", api_name="/import_coco")[1]
    assert "Imported 2" in status, status
    coco["images"][0]["file_name"] = PAYLOADS[0] + ".jpg"
    bad = tmp / f"{PAYLOADS[1][:20].replace('/', '_')}.json"
    bad.write_text(json.dumps(coco))
    status = c.predict(handle_file(str(bad)), "map", api_name="/import_coco")[1]
    assert "Not imported" in status
    assert "Exported" in c.predict("coco", api_name="/export")[1]
    exported = list(studio.export_dir.iterdir())
    assert exported and all(re.fullmatch(r"[A-Za-z0-9._-]+", f.name) for f in exported)  # the project's name made safe

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        ctx = browser.new_context(viewport={"width": 1500, "height": 1000})
        dialogs = []
        ctx.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        ctx.add_init_script("window.alert = window.confirm = window.prompt = (m) => { window.__xss = 99; };")
        r = ctx.request.post(url.rstrip("/") + "/login", form={"username": USER, "password": "pw"})
        assert r.ok, r.status
        page = ctx.new_page()
        page.goto(url, wait_until="load")
        page.wait_for_selector("#canvas img", timeout=60000)
        status = _wait_status(page, "Sent back by")
        # the first image: its payload name, the user's name and the review comment, all as text
        assert FILE_NAMES[0] in status and USER in status and PAYLOADS[0] in status and PAYLOADS[1] in status
        legend = page.inner_text("#labels")
        assert PAYLOADS[0] in legend and PAYLOADS[2] in legend and "… (10000 characters)" in legend
        assert "\u202e" not in legend and "<U+202E>gnp.exe" in legend  # the override shown, not obeyed
        objects = page.inner_text("#objects")
        assert PAYLOADS[0] in objects and PAYLOADS[1] in objects
        page.locator("#category input").click()  # the label list opens: every name as text
        options = page.inner_text("ul[role=listbox]")
        assert PAYLOADS[3] in options
        page.keyboard.press("Escape")
        for tab in ("Images", "Project", "Training", "Annotate"):
            _tab(page, tab)
            page.wait_for_timeout(800)
            page.screenshot(path=str(ARTIFACTS / f"payloads-{tab.lower()}.png"), full_page=True)
            if tab == "Images":
                page.wait_for_selector("#browser img", timeout=30000)
                captions = page.inner_text("#browser")
                assert FILE_NAMES[0] in captions and FILE_NAMES[1] in captions, captions
                assert "img src=x onerror=window.__xss=1.png" in captions  # an upload: Gradio drops <, > and :
        assert page.evaluate("window.__xss") is None and dialogs == []
        # the app still answers: a click on the (payload-named) image draws a mask
        page.evaluate("document.activeElement.blur()")
        page.keyboard.press("q")
        _click_image(page, 80, 60)
        _wait_status(page, r"1 prompt\(s\)")
        assert page.evaluate("window.__xss") is None and dialogs == []
        browser.close()
