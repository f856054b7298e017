"""The API cannot read the server's files: images by path come only from the operator's --import-dir folders
(absolute paths, ../ and symlinks out are refused with one message whether the file exists or not, and nothing
is imported); uploads have a size limit; frames, exports and uploads are served to the client that made them
only, and no client can hand the server another's file as an input."""
import json
import os
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.conftest import ROOT, serve_studio

SAMPLE = ROOT / "ui" / "samples" / "coffee.jpg"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("security")
    imports, outside = tmp / "imports", tmp / "outside"
    imports.mkdir()
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(SAMPLE.read_bytes())  # an image the API must not reach
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(imports / "ok.jpg")
    os.symlink(outside / "secret.jpg", imports / "link.jpg")  # a symlink pointing out of the folder
    os.symlink(outside, imports / "linkdir")
    (imports / "big.jpg").write_bytes(SAMPLE.read_bytes() + b"\0" * (2 * 2**20))  # 2 MB: over the limit
    url, studio, store, demo = serve_studio(tmp, "sec", import_dirs=[imports], max_upload_mb=1)
    yield url, studio, store, imports, outside
    demo.close()
    store.close()


def _skipped(status):
    return [line.split("**Skipped:** ", 1)[1] for line in status.split("\n") if "**Skipped:** " in line]


def test_paths_outside_the_import_folders_are_refused_alike(served):
    url, studio, store, imports, outside = served
    c = Client(url, verbose=False)
    before = store.image_count(studio.project)[0]
    cases = {
        "absolute, existing": str(outside / "secret.jpg"),
        "absolute, missing": str(outside / "missing.jpg"),
        "system file": "/etc/passwd",
        "system, missing": "/etc/no-such-file",
        "traversal, existing": str(imports / ".." / "outside" / "secret.jpg"),
        "traversal, missing": str(imports / ".." / "outside" / "nope.jpg"),
        "symlink out": str(imports / "link.jpg"),
        "symlinked folder out": str(imports / "linkdir" / "secret.jpg"),
        "relative": "ui/samples/coffee.jpg",
    }
    status = c.predict(json.dumps(list(cases.values())), api_name="/add_images")[1]
    assert "Added 0 image(s)" in status
    lines = _skipped(status)
    assert len(lines) == len(cases)
    for (what, path), line in zip(cases.items(), lines):
        # one message, the same for files that exist and files that do not: nothing is revealed
        assert line == f"{path}: not allowed (the API imports files only from the folders the operator named " \
                       "with --import-dir; upload files instead)", what
    assert store.image_count(studio.project)[0] == before


def test_inside_the_folder_works_and_size_limits_hold(served):
    url, studio, store, imports, _ = served
    c = Client(url, verbose=False)
    before = store.image_count(studio.project)[0]
    status = c.predict(json.dumps([str(imports / "ok.jpg"), str(imports / "big.jpg")]), api_name="/add_images")[1]
    assert "Added 1 image(s)" in status
    assert "big.jpg is 2.1 MB, over the 1 MB limit of one image file" in status
    assert store.image_count(studio.project)[0] == before + 1
    status = c.predict(json.dumps([str(imports / "nope.jpg")]), api_name="/add_images")[1]
    assert "nope.jpg: no such file in the import folders" in status  # only inside the folders
    # an upload through Gradio's own upload path is accepted up to the limit
    Image.new("RGB", (50, 40), (200, 10, 10)).save(imports.parent / "upload.png")
    status = c.predict([handle_file(str(imports.parent / "upload.png"))], api_name="/upload_images")[1]
    assert "Added 1 image(s)" in status and "Skipped" not in status
    status = c.predict([handle_file(str(imports / "big.jpg"))], api_name="/upload_images")[1]
    assert "over the 1 MB limit" in status
    assert "Added 0 image(s)" in status


def _call(url, api, data, cookies):
    """An API call in plain HTTP, as any client can make it (file inputs may name any path on the server):
    the event's last message, as (event, data)."""
    r = httpx.post(f"{url}gradio_api/call/{api}", json={"data": data}, cookies=cookies, timeout=60)
    r.raise_for_status()
    with httpx.stream("GET", f"{url}gradio_api/call/{api}/{r.json()['event_id']}", cookies=cookies,
                      timeout=120) as s:
        lines = [line for line in s.read().decode().splitlines() if line]
    return lines[-2].removeprefix("event: "), json.loads(lines[-1].removeprefix("data: "))


def _join(url, fn_index, data, cookies):
    """An event by Gradio's queue, as the page sends it (also for events without an API name): its outputs."""
    sid = os.urandom(8).hex()
    r = httpx.post(f"{url}gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": sid,
                                                         "trigger_id": None}, cookies=cookies, timeout=60)
    r.raise_for_status()
    with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": sid}, cookies=cookies,
                      timeout=120) as s:
        for line in s.iter_lines():
            msg = json.loads(line[len("data: "):]) if line.startswith("data: ") else {}
            if msg.get("msg") == "process_completed":
                assert msg["success"], msg
                return msg["output"]["data"]
    raise AssertionError("no answer")


def _file(path):
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def test_frames_exports_and_uploads_reach_only_the_client_that_made_them(served):
    url, studio, store, imports, _ = served
    a, b = Client(url, verbose=False), Client(url, verbose=False)  # two users: each gets its own client cookie
    assert a.cookies["iseg_client"] != b.cookies["iseg_client"]

    def fetch(path, client):
        return httpx.get(f"{url}gradio_api/file={path}", cookies=client.cookies if client else {}, timeout=60)

    def refused_alike(path, client):
        """Refused with the answer Gradio gives for a file that is not there: nothing is revealed."""
        r = fetch(path, client)
        assert (r.status_code, r.json()) == (403, {"detail": f"File not allowed: {path}."}), path
        missing = Path(path).with_name("no-such-" + Path(path).name)
        r = fetch(missing, client)
        assert (r.status_code, r.json()) == (403, {"detail": f"File not allowed: {missing}."})

    # a's overlay frame: a gets the JPEG, b and a client without the cookie get "not allowed"
    a.predict(0, api_name="/open_image")
    frame = a.predict(120, 100, True, api_name="/add_click")[0]["src"].split("file=", 1)[1]
    r = fetch(frame, a)
    assert r.status_code == 200 and r.content[:3] == b"\xff\xd8\xff"  # a JPEG
    refused_alike(frame, b)
    refused_alike(frame, None)

    # a's export: gradio_client downloads it for a; b cannot fetch it
    a.predict("thing", api_name="/finish_object")
    out = a.predict("coco", api_name="/export")
    export = re.search(r"to `([^`]+)`", out[1]).group(1)
    assert json.loads(Path(out[-1]).read_text())["annotations"], "a downloaded its own export"
    assert fetch(export, a).status_code == 200
    refused_alike(export, b)

    # a's upload (Gradio's upload route): served to a only
    Image.new("RGB", (40, 30), (10, 200, 10)).save(imports.parent / "mine.png")
    with open(imports.parent / "mine.png", "rb") as f:
        r = httpx.post(f"{url}gradio_api/upload", files={"files": ("mine.png", f.read())}, cookies=a.cookies)
    upload = r.json()[0]
    assert fetch(upload, a).status_code == 200
    refused_alike(upload, b)

    # b hands the server a's files, or files that are not there, as its own inputs: each fails with the one
    # answer Gradio gives for a path outside its folders, and nothing is imported; a may use its own upload
    before = store.image_count(studio.project)[0]
    for path in (upload, Path(upload).with_name("gone.png"), frame, Path(frame).with_name("gone.jpg")):
        assert _call(url, "upload_images", [[_file(path)]], b.cookies) == ("error", {"error": None}), path
    for path in (export, Path(export).with_name("gone.json")):
        assert _call(url, "import_coco", [_file(path), "map"], b.cookies) == ("error", {"error": None}), path
    assert store.image_count(studio.project)[0] == before
    event, out = _call(url, "upload_images", [[_file(upload)]], a.cookies)
    assert event == "complete" and "Added 1 image(s)" in out[1] and "Skipped" not in out[1]
    assert store.image_count(studio.project)[0] == before + 1


def test_thumbnails_reach_only_the_clients_the_image_browser_showed_them_to(served):
    url, studio, store, _, _ = served
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    config = httpx.get(f"{url}config").json()
    gallery = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "browser")
    # the page event: state, name, page number, "only images ready for the model"
    page = next(d["id"] for d in config["dependencies"] if gallery in d["outputs"] and len(d["inputs"]) == 4)
    items = _join(url, page, ["all", "", 1, False], a.cookies)[0]
    thumbs = [item["image"]["path"] for item in items]
    assert len(thumbs) == store.image_count(studio.project)[0] >= 4
    for thumb in thumbs:
        r = httpx.get(f"{url}gradio_api/file={thumb}", cookies=a.cookies)
        assert r.status_code == 200 and r.content[:3] == b"\xff\xd8\xff"  # a's page showed it: a JPEG
        r = httpx.get(f"{url}gradio_api/file={thumb}", cookies=b.cookies)
        assert (r.status_code, r.json()) == (403, {"detail": f"File not allowed: {thumb}."})
    stray = Path(thumbs[0]).with_name("made-by-an-earlier-run.jpg")  # nobody's page showed it: nobody gets it
    stray.write_bytes(Path(thumbs[0]).read_bytes())
    r = httpx.get(f"{url}gradio_api/file={stray}", cookies=a.cookies)
    assert (r.status_code, r.json()) == (403, {"detail": f"File not allowed: {stray}."})
    _join(url, page, ["all", "", 1, False], b.cookies)  # once b's page shows them, b may fetch them too
    assert all(httpx.get(f"{url}gradio_api/file={t}", cookies=b.cookies).status_code == 200 for t in thumbs)
