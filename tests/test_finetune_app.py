"""Fine-tuning from the app: the background job on accepted annotations, the swap when the result is better,
sessions that keep working, the run recorded in storage; and the Fine-tune button in a real browser."""
import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from iseg_core import load_model
from storage import Store
from tests.conftest import serve_studio
from tests.test_training_finetune import blobs
from ui import Studio


def accepted_project(tmp_path, n=12):
    """A store whose project holds ``n`` blob images, each accepted with its one object."""
    folder = blobs(tmp_path / "blobs", n=n)
    store = Store(f"sqlite:///{tmp_path / 'iseg.db'}", tmp_path / "images")
    project = store.project("ft")
    for f in sorted((folder / "images").iterdir()):
        img = store.add_image(project, f)
        mask = np.array(Image.open(folder / "masks" / f.name)) > 127
        store.save_annotations(img.id, [dict(mask=mask, category="blob")], done=True)
    return store, project


@pytest.fixture
def finetune_env(monkeypatch):
    monkeypatch.setenv("ISEG_FINETUNE_STEPS", "80")
    monkeypatch.setenv("ISEG_FINETUNE_BATCH", "4")
    monkeypatch.setenv("ISEG_FINETUNE_LR", "1e-3")
    monkeypatch.setenv("ISEG_FINETUNE_EVAL_CLICKS", "5")


def test_job_swaps_in_the_better_model_and_sessions_keep_their_work(tmp_path, finetune_env):
    store, project = accepted_project(tmp_path)
    studio = Studio(store, "ft", "sam_mini", "random", export_dir=tmp_path / "exports")
    sid = "annotator"
    studio.open_index(sid, 0)
    studio.add_click(sid, 40, 40, True)
    session = studio._session(sid)
    base = studio.manager("sam_mini").model
    base_weights = base.network.mask_decoder.iou_token.weight.detach().clone()

    studio.sign_in(sid, "ann")  # the signed-in user is recorded as the one who started the run
    studio.start_finetune(sid)
    again = studio.start_finetune(sid)  # a second press while it runs says so and starts nothing
    assert "already running" in again.status
    studio.add_click(sid, 60, 50, False)  # annotation goes on while it trains
    studio._job.join(300)
    st = studio._job.state
    assert st.status == "swapped", (st.status, st.message, st.before, st.after)
    assert st.after["NoC@90"] < st.before["NoC@90"] or st.after["mIoU@5"] > st.before["mIoU@5"]
    served = studio.manager("sam_mini").model
    assert served is not base and served.version == st.version
    assert session.predictor.model is served and served.cache_key == base.cache_key  # no re-encoding
    assert np.array_equal(base.network.mask_decoder.iou_token.weight.detach(), base_weights)  # base untouched
    assert len(session.prompts) == 2  # the object in progress survived the swap
    view = studio.add_click(sid, 30, 30, True)
    assert view.info["mask_area"] > 0
    runs = store.training_runs()
    assert runs[0]["status"] == "done" and runs[0]["result"] == f"sam_mini@{st.version}" and runs[0]["author"] == "ann"
    assert runs[0]["base"] == f"sam_mini@{base.version}"
    # the next start of the app loads the swapped-in checkpoint
    active = Studio.active_checkpoint(studio.models_dir, "sam_mini")
    assert active == st.checkpoint and load_model("sam_mini", active).version == st.version
    assert "Fine-tuned model in use" in studio.finetune_status()


def test_fine_tune_refuses_clearly(tmp_path, finetune_env):
    store = Store(f"sqlite:///{tmp_path / 'iseg.db'}", tmp_path / "images")
    studio = Studio(store, "p", "classical", export_dir=tmp_path / "exports")
    studio.ensure_samples()
    v = studio.start_finetune("s")
    assert "Cannot fine-tune" in v.status and "no weights" in v.status
    studio = Studio(store, "p", "sam_mini", "random", export_dir=tmp_path / "exports")
    studio.start_finetune("s")
    studio._job.join(60)
    assert studio._job.state.status == "failed" and "no accepted annotations" in studio.finetune_status()
    assert studio.manager("sam_mini").model.version.startswith("random-")


playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _open(p, url, args):
    """Chromium on the studio at ``url``, its canvas shown -> (browser, page)."""
    browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, wait_until="load")
    page.wait_for_selector("#canvas img", timeout=60000)
    return browser, page


@pytest.mark.skipif(not os.path.exists(CHROMIUM) and os.environ.get("ISEG_REQUIRE_BROWSER") != "1",
                    reason="chromium not installed (Debian package 'chromium')")
def test_fine_tune_button_in_the_browser(tmp_path, finetune_env):
    from tests.test_ui_browser import ARGS, ARTIFACTS, _click_image, _tab

    store, _ = accepted_project(tmp_path)
    url, studio, store, demo = serve_studio(tmp_path, "ft", "sam_mini", store=store)
    try:
        with playwright_api.sync_playwright() as p:
            browser, page = _open(p, url, ARGS)
            _tab(page, "Training")
            page.click("#finetune_btn")
            page.wait_for_function("() => /step \\d+\\/80|evaluating|preparing/.test("
                                   "document.querySelector('#train_status').innerText)", timeout=60000)
            _tab(page, "Annotate")
            _click_image(page, 50, 40)  # annotating while it trains (asserted at the end)
            page.wait_for_function("() => /in use|kept|failed/.test(document.querySelector('#train_status').innerText)",
                                   timeout=300000)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "finetune.png"), full_page=True)
            text = page.inner_text("#train_status")
            (sid,) = studio._tabs
            assert studio.view(sid).info["prompts"]  # the click made while training
            browser.close()
        run = store.training_runs()[0]
        assert run["status"] in ("done", "kept"), text
        assert "Held-out NoC@90" in text
        if run["status"] == "done":
            assert "Fine-tuned model in use" in text and studio.manager("sam_mini").model.version in text
        else:
            assert "base model kept" in text and studio.manager("sam_mini").model.version.startswith("random-")
        # the tab closed: its session is dropped (Gradio's unload event), the saved work is in the store
        deadline = time.monotonic() + 60
        while sid in studio._tabs and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sid not in studio._tabs
    finally:
        demo.close()
        store.close()


def test_pretrain_on_unlabelled_images(tmp_path, finetune_env, monkeypatch):
    """MIS's pre-training from the app: pseudo-objects of the images not accepted yet (DINO's published file, here
    random weights under its name); with no accepted object to check it on, saved and registered, never swapped;
    with some, checked on them (none of them trains). Without DINO's file it fails naming it."""
    import torch

    from training.proposals import DinoFeatures

    monkeypatch.setenv("ISEG_FINETUNE_STEPS", "3")
    monkeypatch.setenv("ISEG_WEIGHTS_DIR", str(tmp_path / "weights"))
    folder = blobs(tmp_path / "blobs", n=6)
    store = Store(f"sqlite:///{tmp_path / 'iseg.db'}", tmp_path / "images")
    project = store.project("pt")
    images = [store.add_image(project, f) for f in sorted((folder / "images").iterdir())]
    studio = Studio(store, "pt", "sam_mini", "random", export_dir=tmp_path / "exports")
    studio.start_pretrain("s")
    studio._job.join(120)
    assert studio._job.state.status == "failed" and "dino_deitsmall8_pretrain.pth" in studio.finetune_status()

    (tmp_path / "weights").mkdir()
    torch.manual_seed(0)
    torch.save(DinoFeatures().vit.state_dict(), tmp_path / "weights" / "dino_deitsmall8_pretrain.pth")
    v = studio.start_pretrain("s")
    assert "Pre-training sam_mini on pseudo-objects" in v.status
    studio._job.join(300)
    st = studio._job.state
    assert st.status == "kept" and "no accepted objects to check it on" in st.message and st.before is None
    assert studio.manager("sam_mini").model.version.startswith("random-")  # not swapped in
    assert load_model("sam_mini", st.checkpoint).version == st.version and "-pt-run" in st.checkpoint
    assert len(list((studio.models_dir / "proposals").rglob("*.npz"))) == 6  # one tree per unlabelled image
    assert store.training_runs()[0]["status"] == "kept"

    for f, img in zip(sorted((folder / "images").iterdir())[:2], images[:2]):  # two images accepted
        mask = np.array(Image.open(folder / "masks" / f.name)) > 127
        store.save_annotations(img.id, [dict(mask=mask, category="blob")], done=True)
    studio.start_pretrain("s")
    studio._job.join(300)
    st = studio._job.state
    assert st.status in ("swapped", "kept") and st.before["objects"] == st.after["objects"] == 2
    params = store.training_runs()[0]["params"]
    assert params["train_objects"] == 4 and params["held_out_objects"] == 2  # the unlabelled four train
    assert studio.finetune_status().startswith(("**Pre-trained model in use.**", "**Pre-training finished"))


@pytest.mark.skipif(not os.path.exists(CHROMIUM) and os.environ.get("ISEG_REQUIRE_BROWSER") != "1",
                    reason="chromium not installed (Debian package 'chromium')")
def test_pretrain_button_in_the_browser(tmp_path, finetune_env, monkeypatch):
    """The Pre-train button: the job runs on the images not accepted yet and the page says how it ended."""
    import torch

    from tests.test_ui_browser import ARGS, ARTIFACTS, _tab
    from training.proposals import DinoFeatures

    monkeypatch.setenv("ISEG_FINETUNE_STEPS", "3")
    monkeypatch.setenv("ISEG_WEIGHTS_DIR", str(tmp_path / "weights"))
    (tmp_path / "weights").mkdir()
    torch.manual_seed(0)
    torch.save(DinoFeatures().vit.state_dict(), tmp_path / "weights" / "dino_deitsmall8_pretrain.pth")
    folder = blobs(tmp_path / "blobs", n=4)
    store = Store(f"sqlite:///{tmp_path / 'iseg.db'}", tmp_path / "images")
    project = store.project("pt")
    for f in sorted((folder / "images").iterdir()):
        store.add_image(project, f)
    url, studio, store, demo = serve_studio(tmp_path, "pt", "sam_mini", store=store)
    try:
        with playwright_api.sync_playwright() as p:
            browser, page = _open(p, url, ARGS)
            _tab(page, "Training")
            page.click("#pretrain_btn")
            page.wait_for_function("() => /in use|kept|failed/.test(document.querySelector('#train_status').innerText)",
                                   timeout=300000)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "pretrain.png"), full_page=True)
            text = page.inner_text("#train_status")
            browser.close()
        assert "Pre-training finished: base model kept" in text and "no accepted objects to check it on" in text, text
        run = store.training_runs()[0]
        assert run["status"] == "kept" and run["params"]["train_objects"] == 4
    finally:
        demo.close()
        store.close()
