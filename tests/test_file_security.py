"""The API cannot read the server's files: images by path come only from the operator's --import-dir folders
(absolute paths, ../ and symlinks out are refused with one message whether the file exists or not, and nothing
is imported); uploads have a size limit."""
import json
import os

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
