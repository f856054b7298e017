"""The SAM family's weights entries, the default model (the best one on disk) and downloads from the studio's
model picker (progress reported, nothing half-written), through the real huggingface_hub code against a local
Hub-like server."""
import io

import pytest
import torch
from huggingface_hub import constants

from iseg_core import WeightsUnavailableError, load_model, weights
from iseg_core.models import best_available_model, list_models
from iseg_core.models.sam import SAM_CONFIGS, SamNetwork

from .hub_server import HubServer

NEW = ["sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus", "sam2.1_hiera_large",
       "sam_hq_vit_b", "sam_hq_vit_l", "sam_hq_vit_h", "mobile_sam"]


def _random_file(name: str) -> bytes:
    torch.manual_seed(3)
    buf = io.BytesIO()
    torch.save(SamNetwork(SAM_CONFIGS[name]).official_state_dict(), buf)
    return buf.getvalue()


@pytest.mark.parametrize("name", NEW)
def test_every_new_model_has_an_entry_and_an_offline_message(name, monkeypatch, tmp_path):
    assert name in list_models()
    spec = weights.KNOWN_CHECKPOINTS[name]
    assert spec.model == name and spec.licence == "Apache-2.0" and spec.repo_id and spec.published_size
    monkeypatch.setenv("ISEG_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError) as err:
        load_model(name, "hub", device="cpu")
    message = str(err.value)
    assert spec.basename in message and spec.repo_id in message and str(tmp_path / "w") in message


def test_default_model_is_the_best_one_on_disk(online, monkeypatch):
    name, hint = best_available_model("cpu")
    assert name == "classical" and "--model mobile_sam" in hint and "mobile_sam.pt" in hint
    folder = online / "weights"
    folder.mkdir()
    (folder / "sam2.1_hiera_large.pt").write_bytes(b"x")
    assert best_available_model("cpu") == ("sam2.1_hiera_large", None)  # the only one there
    (folder / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    assert best_available_model("cpu") == ("sam_vit_b", None)  # lighter first on a CPU
    (folder / "mobile_sam.pt").write_bytes(b"x")
    assert best_available_model("cpu") == ("mobile_sam", None)
    assert best_available_model("cuda") == ("sam2.1_hiera_large", None)  # the largest on a GPU


def test_a_file_in_the_hub_cache_counts_as_on_disk(online, monkeypatch):
    content = b"cached weights"
    with HubServer({"facebook/sam2.1-hiera-tiny/sam2.1_hiera_tiny.pt": content}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert weights.on_disk("sam2.1_hiera_tiny") is None
        weights.fetch(weights.KNOWN_CHECKPOINTS["sam2.1_hiera_tiny"])
    assert weights.on_disk("sam2.1_hiera_tiny").read_bytes() == content
    assert best_available_model("cpu") == ("sam2.1_hiera_tiny", None)


def test_progress_text_says_mb_rate_and_time_left():
    now = [0.0]
    text = weights.ProgressText("mobile_sam", clock=lambda: now[0])
    now[0] = 2.0
    assert text(20_000_000, 40_000_000) == "mobile_sam: 20 of 40 MB, 10.0 MB/s, about 2 s left"
    assert text(5_000_000, None) == "mobile_sam: 5 MB, 2.5 MB/s"


def test_model_picker_download_reports_progress_and_leaves_no_half_file(online, monkeypatch):
    """Studio.set_model (the picker's handler) on a model whose weights are not here: the Hub download reports
    (done, total) as it goes and the model loads; a missing file keeps the old model. (A broken transfer leaves
    no file: huggingface_hub writes to an ``.incomplete`` blob and links it only when whole; release-asset
    downloads are ours, tested in test_weights.py.)"""
    from storage import Store
    from ui import Studio

    content = _random_file("mobile_sam")
    key = "dhkim2810/MobileSAM/mobile_sam.pt"
    store = Store(f"sqlite:///{online / 'iseg.db'}", online / "images")
    try:
        studio = Studio(store, "p", "classical", export_dir=online / "exports")
        sid = "tab"
        with HubServer({}) as hub:  # the file is not there: a message, the tab keeps its model
            monkeypatch.setenv("HF_ENDPOINT", hub.url)
            view = studio.set_model(sid, "mobile_sam", progress=lambda *a: None)
            assert "not available" in view.status and view.info["model"] == "classical"
            assert weights.on_disk("mobile_sam") is None
        seen = []
        with HubServer({key: content}) as hub:
            monkeypatch.setenv("HF_ENDPOINT", hub.url)
            view = studio.set_model(sid, "mobile_sam", progress=lambda done, total: seen.append((done, total)))
        assert view.info["model"] == "mobile_sam", view.status
        assert seen and seen[-1] == (len(content), len(content))
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
        assert weights.on_disk("mobile_sam").read_bytes() == content
    finally:
        store.close()
