"""The studio's named API endpoints, driven with gradio_client against the app served in this process."""
import io
import json
import time
import struct
import zlib

import numpy as np
import pytest
from gradio_client import Client
from PIL import Image
from pycocotools import mask as mask_utils

from tests.conftest import ROOT, serve_studio

# astronaut.jpg (512x512, the first sample): (250, 250) is on the suit, (30, 30) is background
INSIDE, OUTSIDE = (250, 250), (30, 30)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("studio")
    (tmp / "imports").mkdir()
    url, studio, store, demo = serve_studio(tmp, "test", import_dirs=[tmp / "imports"])
    yield url, studio, store
    demo.close()
    store.close()


def _state(client):
    return client.predict(api_name="/get_state")[3]


def test_every_twin_in_one_annotation_flow(served):
    url, studio, store = served
    c = Client(url, verbose=False)
    img, status, rows, info = c.predict(0, api_name="/open_image")
    assert info["file_name"] == "astronaut.jpg" and info["image_size"] == [512, 512] and img is not None
    info = c.predict(*INSIDE, True, api_name="/add_click")[3]
    first_area = info["mask_area"]
    assert first_area > 2000 and info["prompts"][0] == {"type": "click", "x": 250.0, "y": 250.0, "positive": True}
    info = c.predict(*OUTSIDE, False, api_name="/add_click")[3]
    assert len(info["prompts"]) == 2 and not info["prompts"][1]["positive"]
    info = c.predict(api_name="/undo")[3]
    assert len(info["prompts"]) == 1 and info["mask_area"] == first_area and info["redo"] == 1
    info = c.predict(api_name="/redo")[3]
    assert len(info["prompts"]) == 2
    info = c.predict(api_name="/clear")[3]
    assert info["prompts"] == [] and info["mask_area"] == 0
    info = c.predict(100, 60, 440, 512, api_name="/add_box")[3]
    assert info["prompts"][0]["type"] == "box" and info["mask_area"] > 10000
    c.predict(api_name="/clear")
    info = c.predict("[[100, 60], [440, 60], [440, 511], [100, 511]]", api_name="/add_contour")[3]
    assert info["prompts"][0]["type"] == "contour" and info["mask_area"] > 10000
    info = c.predict("[[240, 200], [260, 300]]", True, api_name="/add_scribble")[3]
    assert info["prompts"][1]["type"] == "scribble"

    _, status, rows, info = c.predict("astronaut", api_name="/finish_object")
    assert "Saved object 1" in status and rows["data"][0][1] == "astronaut"
    ann_id = info["objects"][0]["id"]
    image_id = info["image_id"]
    stored = store.annotations(image_id)
    assert [a.id for a in stored] == [ann_id] and stored[0].n_interactions == 2
    assert stored[0].interactions[0]["type"] == "contour" and stored[0].model.startswith("classical@")

    info = c.predict(1, api_name="/edit_object")[3]  # prompts replayed
    assert info["editing"] == 0 and [p["type"] for p in info["prompts"]] == ["contour", "scribble"]
    info = c.predict(*OUTSIDE, False, api_name="/add_click")[3]
    edited_area = info["mask_area"]
    info = c.predict("astronaut", api_name="/finish_object")[3]
    stored = store.annotations(image_id)
    assert [a.id for a in stored] == [ann_id] and stored[0].area == edited_area and stored[0].n_interactions == 3

    info = c.predict(1, api_name="/delete_object")[3]
    assert info["objects"] == [] and store.annotations(image_id) == []
    c.predict(*INSIDE, True, api_name="/add_click")
    _, status, _, info = c.predict("person", api_name="/accept_image")  # the object in progress is saved too
    assert "Saved image 1 with 1 object(s)" in status and info["image_index"] == 1
    assert store.image(image_id).done and len(store.annotations(image_id)) == 1
    mask = store.annotations(image_id)[0].mask()

    out = c.predict(False, api_name="/export_coco")
    coco = json.loads(open(out[4]).read())
    ann = [a for a in coco["annotations"] if a["category_id"] == next(
        k["id"] for k in coco["categories"] if k["name"] == "person")]
    assert len(ann) == 1
    exported = mask_utils.decode({"size": ann[0]["segmentation"]["size"],
                                  "counts": ann[0]["segmentation"]["counts"].encode()}).astype(bool)
    assert np.array_equal(exported, mask)


def test_a_fast_burst_of_clicks_loses_none(served):
    url, _, _ = served
    c = Client(url, verbose=False)
    c.predict(2, api_name="/open_image")
    xs = [200 + 10 * k for k in range(12)]
    jobs = [c.submit(x, 200, True, api_name="/add_click") for x in xs]
    for j in jobs:
        j.result(timeout=120)
    info = _state(c)
    assert sorted(p["x"] for p in info["prompts"]) == sorted(map(float, xs))


def test_two_sessions_at_once_do_not_share_state(served):
    url, _, _ = served
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    n_before = len(a.predict(0, api_name="/open_image")[3]["objects"])  # earlier tests may have saved some
    b.predict(3, api_name="/open_image")
    ja = [a.submit(100 + k, 100, True, api_name="/add_click") for k in range(4)]
    jb = [b.submit(300, 200 + k, False if k else True, api_name="/add_click") for k in range(3)]
    for j in ja + jb:
        j.result(timeout=120)
    sa, sb = _state(a), _state(b)
    assert sa["session"] != sb["session"]
    assert (sa["file_name"], len(sa["prompts"])) == ("astronaut.jpg", 4)
    assert (sb["file_name"], len(sb["prompts"])) == ("rocket.jpg", 3)
    assert all(p["y"] == 100 for p in sa["prompts"]) and all(p["x"] == 300 for p in sb["prompts"])
    a.predict("first", api_name="/finish_object")
    assert len(_state(a)["objects"]) == n_before + 1 and _state(b)["objects"] == []
    assert len(_state(b)["prompts"]) == 3


def _claimed_png(w: int, h: int) -> bytes:
    """A valid small PNG whose header claims w x h (for the huge-image path, without the memory)."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR") + 4
    data[ihdr:ihdr + 8] = struct.pack(">II", w, h)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)


def test_bad_input_gets_a_message_and_the_app_keeps_working(served):
    url, studio, store = served
    tmp_path = studio.import_dirs[0]  # the API imports by path only from there
    c = Client(url, verbose=False)
    before = len(store.images_of(store.project("test")))
    (tmp_path / "corrupt.jpg").write_bytes((ROOT / "ui" / "samples" / "coffee.jpg").read_bytes()[:500])
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "huge.png").write_bytes(_claimed_png(25000, 20000))
    paths = [str(tmp_path / n) for n in ("corrupt.jpg", "notes.txt", "huge.png")]
    status = c.predict(json.dumps(paths), api_name="/add_images")[1]
    assert "Added 0 image(s)" in status
    assert "corrupt.jpg is not a usable image" in status and "notes.txt is not a usable image" in status
    assert "huge.png is not a usable image" in status and "not decoded" in status
    assert len(store.images_of(store.project("test"))) == before

    c.predict(0, api_name="/open_image")
    _, status, _, info = c.predict(5000, 10, True, api_name="/add_click")
    assert "Not added" in status and "outside" in status and info["prompts"] == []
    status = c.predict("[[1, 2]]", api_name="/add_contour")[1]
    assert "Not added" in status
    status = c.predict("ghost", api_name="/finish_object")[1]
    assert "nothing to finish" in status
    status = c.predict("sam_vit_b", api_name="/set_model")[1]
    assert "sam_vit_b is not available" in status and "Still using classical" in status
    info = c.predict(*INSIDE, True, api_name="/add_click")[3]  # still works
    assert info["mask_area"] > 0 and info["model"] == "classical"


def test_navigation_twins(served):
    url, _, _ = served
    c = Client(url, verbose=False)
    assert c.predict(1, api_name="/open_image")[3]["file_name"] == "chelsea.jpg"
    assert c.predict(api_name="/next_image")[3]["file_name"] == "coffee.jpg"
    assert c.predict(api_name="/previous_image")[3]["file_name"] == "chelsea.jpg"
    assert c.predict(api_name="/previous_image")[3]["file_name"] == "astronaut.jpg"
    assert c.predict(api_name="/previous_image")[3]["file_name"] == "rocket.jpg"  # wraps around


def test_a_click_made_while_the_image_encodes_is_applied_after_it(tmp_path):
    """A real (randomly initialised) SAM ViT-B: opening an image runs its encoder for seconds on a CPU. A click
    sent right behind the open request waits in the queue and is applied to that image, not lost."""
    from storage import Store
    from ui import Studio, build_app, launch_options
    from tests.conftest import free_port

    store = Store(f"sqlite:///{tmp_path / 'iseg.db'}", tmp_path / "images")
    studio = Studio(store, "sam", "sam_vit_b", checkpoint="random")
    studio.ensure_samples()
    demo = build_app(studio)
    _, url, _ = demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                                    quiet=True, **launch_options(demo))
    try:
        c = Client(url, verbose=False)
        opening = c.submit(2, api_name="/open_image")
        time.sleep(0.5)  # the open request is in (the encoder runs for seconds); the click comes during it
        click = c.submit(300, 200, True, api_name="/add_click")
        opened = opening.result(timeout=600)
        _, status, _, info = click.result(timeout=600)
        assert opened[3]["file_name"] == "coffee.jpg"
        assert info["file_name"] == "coffee.jpg" and len(info["prompts"]) == 1, status
        assert info["model"] == "sam_vit_b" and info["score"] is not None
    finally:
        demo.close()
        store.close()


def test_threshold_and_zoom_twins(served):
    url, _, store = served
    c = Client(url, verbose=False)
    c.predict(0, api_name="/open_image")
    c.predict(api_name="/clear")
    area = c.predict(380, 0, 470, 280, api_name="/add_box")[3]["mask_area"]  # the space shuttle, top right
    # the threshold is a probability (the slider's): 0.95 and 0.05 are logits +2.9 and -2.9, 0.5 the default's 0
    tighter = c.predict(0.95, api_name="/set_threshold")[3]["mask_area"]
    looser = c.predict(0.05, api_name="/set_threshold")[3]["mask_area"]
    back = c.predict(0.5, api_name="/set_threshold")[3]["mask_area"]
    assert 0 < tighter < area < looser and back == area

    _, status, _, info = c.predict(api_name="/zoom_in")
    x0, y0, x1, y1 = info["zoom"]
    assert "Zoomed in" in status and (x1 - x0) * (y1 - y0) < 0.8 * 512 * 512 and len(info["prompts"]) == 1
    assert info["mask_area"] > 0
    info = c.predict(420, 100, True, api_name="/add_click")[3]  # inside the crop: stays zoomed
    assert info["zoom"] == [x0, y0, x1, y1] and len(info["prompts"]) == 2
    info = c.predict(20, 500, False, api_name="/add_click")[3]  # outside: back to the whole image
    assert info["zoom"] is None and len(info["prompts"]) == 3
    _, status, _, info = c.predict("shuttle", api_name="/finish_object")
    saved = [a for a in store.annotations(info["image_id"]) if a.category.name == "shuttle"]
    assert len(saved) == 1 and saved[0].area > 0

    c.predict(8, 8, 504, 504, api_name="/add_box")  # a box around nearly all of the image: a large object
    status = c.predict(api_name="/zoom_in")[1]
    assert "already fills most of the image" in status


def test_proposal_and_prepare_twins(served):
    """The proposals' named endpoints: the classical engine cannot propose (said plainly); numbers that do not
    exist are refused; Prepare project says what it does and reports its progress."""
    url, studio, store = served
    c = Client(url, verbose=False)
    c.predict(1, api_name="/open_image")
    status = c.predict(api_name="/propose_objects")[1]
    assert "No proposals:" in status and "needs a SAM-family model" in status
    assert "no proposal 3; this image has 0" in c.predict(3, "car", api_name="/accept_proposal")[1]
    assert "no proposal 1" in c.predict(1, api_name="/refine_proposal")[1]
    assert "no proposal 2" in c.predict(2, api_name="/reject_proposal")[1]
    assert "Preparing the project for classical" in c.predict(api_name="/prepare_project")[1]
    import time

    deadline = time.monotonic() + 60
    while studio.prepare_running and time.monotonic() < deadline:
        time.sleep(0.2)
    text = c.predict(api_name="/prepare_status")  # the classical engine's embeddings are not worth storing
    assert "Preparing failed" in text and "cannot be stored" in text and "nothing to precompute" in text, text
