"""The annotation session and its manager, below the UI: display frames, background encoding and its failures,
sessions dropped when their tab closes, and the studio's fine-tuning cancel."""
import logging

import numpy as np
import pytest

from iseg_core import load_model
from iseg_core.cache import EmbeddingCache
from iseg_core.errors import ImageError
from iseg_core.geometry import DisplayFrame
from iseg_core.prompts import Click
from iseg_core.session import SessionManager
from tests.test_finetune_app import accepted_project


def test_display_frame_maps_each_axis_by_its_own_scale():
    frame = DisplayFrame.fit((1000, 1537), 1024)
    assert frame.display_size == (666, 1024)  # 1000 * 1024 / 1537 = 666.2
    sx, sy = frame.scale_xy
    assert sx == 1024 / 1537 and sy == 666 / 1000 and sx != sy
    for x, y in [(0, 0), (1536.5, 999.5), (700.25, 333.75)]:
        assert np.allclose(frame.to_image(*frame.to_display(x, y)), (x, y))
    assert frame.roi_to_display((0, 0, 1537, 1000)) == (0, 0, 1024, 666)
    assert frame.roi_to_display((10, 10, 11, 11))[2:] == (8, 8)  # never thinner than one display pixel
    assert DisplayFrame.fit((300, 200), 1024).identity


def test_a_session_with_a_display_frame_keeps_display_masks_and_makes_the_full_one_at_finish(photo):
    big = np.ascontiguousarray(np.repeat(np.repeat(photo, 3, axis=0), 3, axis=1)[:, :1537])  # 963 x 1443 -> 1537
    frame = DisplayFrame.fit(big.shape[:2], 1024)
    manager = SessionManager(lambda: load_model("classical"))
    s = manager.session("a")
    s.open_image(big, display=frame)
    step = s.add(Click(*frame.to_image(500, 300)))
    assert step.mask.shape == frame.display_size and step.mask.any()
    obj = s.finish_object("thing")
    assert obj.mask.shape == big.shape[:2] and obj.prompts[0]["x"] == pytest.approx(500 / frame.scale_xy[0])
    # the full mask drawn at display size is the display mask (up to the edge pixels of two resamplings)
    small = obj.mask[(np.arange(frame.display_size[0]) / frame.scale_xy[1]).astype(int)][:, (
        np.arange(frame.display_size[1]) / frame.scale_xy[0]).astype(int)]
    assert (small != obj.preview).mean() < 0.01
    with pytest.raises(Exception, match="display frame is for"):
        s.open_image(photo, display=frame)


class BrokenEncoder:
    """A classical model whose encoder fails on one image (as a corrupt upload or an out-of-memory would)."""

    def __init__(self):
        self.model = load_model("classical")

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode(self, image):
        if image.mean() < 1:
            raise ImageError("cannot encode an all-black image")
        return self.model.encode(image)


def test_background_encoding_failures_are_logged_and_kept_and_sessions_can_be_dropped(photo, caplog):
    manager = SessionManager(BrokenEncoder, EmbeddingCache())
    black = np.zeros((64, 64, 3), np.uint8)
    with caplog.at_level(logging.WARNING, logger="iseg_core.session"):
        bad = manager.precompute(black, "black")
        with pytest.raises(ImageError):
            bad.result(30)
        good = manager.precompute(photo, "photo")
        good.result(30)
    assert "background encoding of image black failed: cannot encode an all-black image" in caplog.text
    assert manager.is_encoded("photo") and not manager.is_encoded("black")
    assert manager.cached_embedding("photo") is not None and manager.cached_embedding("black") is None
    assert manager._pending == {}  # finished jobs are not kept

    a = manager.session("tab-1")
    a.open_image(photo, "photo")
    manager.drop("tab-1")
    assert manager.session("tab-1") is not a  # a new tab of that id starts afresh
    manager.close()
    with pytest.raises(RuntimeError):
        manager.precompute(photo, "again")


def test_the_studio_drops_closed_tabs_and_cancels_a_fine_tune(tmp_path, monkeypatch):
    from ui import Studio

    monkeypatch.setenv("ISEG_FINETUNE_STEPS", "100000")
    monkeypatch.setenv("ISEG_FINETUNE_EVAL_CLICKS", "2")
    store, project = accepted_project(tmp_path, n=6)
    studio = Studio(store, "ft", "sam_mini", "random", export_dir=tmp_path / "exports")
    studio.open_index("tab", 0)
    studio.add_click("tab", 40, 40)
    base = studio.manager("sam_mini").model
    assert "No fine-tuning job" in studio.cancel_finetune("tab").status
    studio.start_finetune("tab")
    job = studio._job
    while job.state.status in ("preparing", "evaluating"):
        job.join(0.2)
    assert "Cancelling" in studio.cancel_finetune("tab").status
    job.join(120)
    assert job.state.status == "cancelled" and job.state.step < 100000
    assert store.training_runs()[0]["status"] == "cancelled"
    assert studio.manager("sam_mini").model is base  # the model in use is unchanged
    studio.drop("tab")
    assert studio.view("tab").info["image_index"] == -1 and studio.view("tab").info["prompts"] == []
    studio.close()
