"""Weight resolution through the real huggingface_hub download code, against a local Hub-like server."""
import hashlib
import io

import pytest
import torch
from huggingface_hub import constants

from iseg_core import CheckpointError, UnknownModelError, WeightsUnavailableError, load_model, models, weights
from iseg_core.models.sam import SAM_CONFIGS, SamConfig

from .conftest import TINY, official_tiny_sam
from .hub_server import HubServer


def _spec(name, content, model="sam_vit_b", **overrides):
    fields = dict(
        name=name, model=model, repo_id="iseg-test/weights", filename=f"ckpt/{name}.pth", size=len(content),
        sha256=hashlib.sha256(content).hexdigest(), licence="Apache-2.0", origin="test",
    )
    fields.update(overrides)
    return weights.KnownCheckpoint(**fields)


def test_download_verifies_and_then_works_offline_from_the_cache(online, monkeypatch):
    content = b"weights" * 1000
    spec = _spec("demo", content)
    with HubServer({"iseg-test/weights/ckpt/demo.pth": content}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        path = weights.fetch(spec)
        assert path.read_bytes() == content
        assert ("GET", "iseg-test/weights/resolve/main/ckpt/demo.pth") in hub.requests
        n = len(hub.requests)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        assert weights.fetch(spec).read_bytes() == content
        assert len(hub.requests) == n  # served from the cache, no request


def test_a_file_with_the_wrong_hash_is_refused(online, monkeypatch):
    content = b"x" * 4096
    spec = _spec("bad", content, sha256="0" * 64)
    with HubServer({"iseg-test/weights/ckpt/bad.pth": content}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        with pytest.raises(WeightsUnavailableError, match="has sha256 .* expected 0000"):
            weights.fetch(spec)
    with pytest.raises(WeightsUnavailableError, match="4096 bytes but bad has 9"):
        weights.verify(_write(online / "short.pth", content), _spec("bad", b"123456789"))


def _write(path, data):
    path.write_bytes(data)
    return path


def test_missing_file_on_the_server_says_what_to_put_where(online, monkeypatch):
    spec = _spec("absent", b"abc")
    with HubServer({}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        with pytest.raises(WeightsUnavailableError) as err:
            weights.fetch(spec)
    msg = str(err.value)
    assert "download failed" in msg and "absent.pth" in msg and str(online / "weights") in msg


def test_a_bug_in_the_download_path_is_not_reported_as_missing_weights(online, monkeypatch):
    """Only download failures become "weights unavailable"; anything else surfaces as itself."""
    import huggingface_hub

    def broken(*args, **kwargs):
        raise TypeError("hf_hub_download() got an unexpected keyword argument 'etag_timeout'")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", broken)
    with pytest.raises(TypeError, match="etag_timeout"):
        weights.fetch(_spec("absent", b"abc"))


def test_offline_fails_fast_without_any_request(monkeypatch, tmp_path):
    monkeypatch.setenv("ISEG_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with HubServer({}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        with pytest.raises(WeightsUnavailableError) as err:
            load_model("sam_vit_b", checkpoint="hub")
        assert hub.requests == []
    msg = str(err.value)
    assert "offline mode" in msg and "sam_vit_b_01ec64.pth" in msg and "375 MB" in msg
    assert "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912" in msg
    assert str(tmp_path) in msg and "ybelkada/segment-anything" in msg


def test_a_file_in_the_weights_folder_is_used_without_the_hub(online, monkeypatch):
    content = b"local weights"
    spec = _spec("local", content)
    (online / "weights").mkdir()
    (online / "weights" / "local.pth").write_bytes(content)
    with HubServer({}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert weights.fetch(spec) == online / "weights" / "local.pth"
        assert hub.requests == []
    # The successful hash is remembered, keyed by size and mtime.
    assert "local.pth" in (online / "weights" / ".verified.json").read_text()


def test_load_model_downloads_a_registered_checkpoint_end_to_end(online, monkeypatch):
    """Registry name -> Hub download -> sha256 check -> strict load, on a real (tiny) SAM state dict."""
    ref = official_tiny_sam(seed=7)
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    content = buf.getvalue()
    monkeypatch.setitem(SAM_CONFIGS, "sam_test_tiny", SamConfig(**TINY))
    monkeypatch.setitem(models._REGISTRY, "sam_test_tiny", models._REGISTRY["sam_vit_b"])
    spec = _spec("sam_test_tiny_v1", content, model="sam_test_tiny")
    monkeypatch.setitem(weights.KNOWN_CHECKPOINTS, spec.name, spec)
    with HubServer({f"iseg-test/weights/{spec.filename}": content}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        seg = load_model("sam_test_tiny", checkpoint="sam_test_tiny_v1", device="cpu")
    loaded = seg.network.official_state_dict()
    for key, value in ref.state_dict().items():
        assert torch.equal(loaded[key], value), key
    assert seg.version == f"sam_test_tiny_v1:{spec.sha256[:12]}"
    with pytest.raises(CheckpointError, match="is for sam_test_tiny, not sam_vit_b"):
        load_model("sam_vit_b", checkpoint="sam_test_tiny_v1")


def test_unknown_names_are_clear_errors():
    with pytest.raises(UnknownModelError, match="unknown model 'sam_vit_x'; known models: .*sam_vit_b"):
        load_model("sam_vit_x")
    with pytest.raises(CheckpointError, match="neither an existing file nor a known checkpoint name"):
        load_model("sam_vit_b", checkpoint="/no/such/file.pth")


def _url_spec(name, content, url, **overrides):
    fields = dict(repo_id=None, filename=f"{name}.pth", url=url, size=None, sha256=hashlib.sha256(content).hexdigest())
    fields.update(overrides)
    return _spec(name, content, **fields)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part")) if folder.is_dir() else []


def test_a_release_asset_downloads_with_progress_and_is_checked(online, monkeypatch):
    """A file published at an HTTPS address (a GitHub release): streamed, checked, renamed only when whole."""
    content = bytes(range(256)) * 3000  # 768 kB: several chunks
    with HubServer({"releases/download/v1.0/demo.pth": content}) as srv:
        spec = _url_spec("demo", content, f"{srv.url}/releases/download/v1.0/demo.pth")
        seen = []
        path = weights.fetch(spec, progress=lambda done, total: seen.append((done, total)))
        assert path == online / "weights" / "demo.pth" and path.read_bytes() == content
        assert seen[-1] == (len(content), len(content)) and len(seen) >= 1
        assert [r for r in srv.requests if r[0] == "GET"] == [("GET", "releases/download/v1.0/demo.pth")]
        n = len(srv.requests)
        assert weights.fetch(spec) == path and len(srv.requests) == n  # now local: no request
    assert _leftovers(online / "weights") == []


def test_a_broken_or_wrong_download_leaves_no_file(online, monkeypatch):
    content = b"w" * 100_000
    key = "releases/download/v1.0/cut.pth"
    with HubServer({key: content, "releases/download/v1.0/other.pth": content}, cut={key: 40_000}) as srv:
        with pytest.raises(WeightsUnavailableError, match="stopped after 40000 of 100000 bytes|download from .* failed"):
            weights.fetch(_url_spec("cut", content, f"{srv.url}/{key}"), progress=lambda *a: None)
        with pytest.raises(WeightsUnavailableError, match="has sha256 .* expected 0000"):
            weights.fetch(_url_spec("other", content, f"{srv.url}/releases/download/v1.0/other.pth", sha256="0" * 64),
                          progress=lambda *a: None)
        with pytest.raises(WeightsUnavailableError, match="answered HTTP 404.*Put missing.pth"):
            weights.fetch(_url_spec("missing", content, f"{srv.url}/releases/download/v1.0/missing.pth"))
    folder = online / "weights"
    assert _leftovers(folder) == [] and not (folder / "cut.pth").exists() and not (folder / "other.pth").exists()


def test_files_without_an_automatic_download_name_page_and_folder(online, monkeypatch):
    spec = _url_spec("drive", b"x", None, manual_page="https://drive.google.com/file/d/XYZ/view",
                     published_size="435 MB", sha256=None)
    with pytest.raises(WeightsUnavailableError) as err:
        weights.fetch(spec)
    msg = str(err.value)
    assert "drive.pth (435 MB, as published)" in msg and "https://drive.google.com/file/d/XYZ/view" in msg
    assert str(online / "weights") in msg and "no automatic download" in msg


def test_ritm_weights_entries_and_offline_message(monkeypatch, tmp_path):
    monkeypatch.setenv("ISEG_WEIGHTS_DIR", str(tmp_path))
    for name, size in (("ritm_hrnet18s_cocolvis", "16.5 MB"), ("ritm_hrnet18_cocolvis", "38.8 MB"),
                       ("ritm_hrnet32_cocolvis", "119 MB")):
        spec = weights.KNOWN_CHECKPOINTS[name]
        assert spec.model == name and spec.licence == "MIT" and spec.url.startswith("https://github.com/")
        assert spec.url.endswith("/" + spec.filename) and spec.published_size == size
    with pytest.raises(WeightsUnavailableError) as err:
        load_model("ritm_hrnet18s_cocolvis", checkpoint="hub", device="cpu")
    msg = str(err.value)
    assert "offline mode" in msg and "coco_lvis_h18s_itermask.pth (16.5 MB, as published)" in msg
    assert str(tmp_path) in msg and "releases/download/v1.0/coco_lvis_h18s_itermask.pth" in msg


@pytest.mark.parametrize("name,filename,shown", [
    ("segnext_vit_b1024_sax2_hqseg44k", "vitb_sa2_cocolvis_hq44k_epoch_0.pth", "435 MB, as published"),
    ("simpleclick_vit_b448_cocolvis", "cocolvis_vit_base.pth", "unknown size"),
])
def test_google_drive_models_name_file_page_and_folder(monkeypatch, tmp_path, name, filename, shown):
    """SegNext's and SimpleClick's weights live on Google Drive: asking for them names the official file, the
    page to get it from and the folder to put it in, online or not; once there, it is the file that loads."""
    monkeypatch.setenv("ISEG_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    spec = weights.KNOWN_CHECKPOINTS[name]
    assert spec.licence == "MIT" and spec.url is None and spec.repo_id is None
    with pytest.raises(WeightsUnavailableError) as err:
        load_model(name, checkpoint="hub", device="cpu")
    msg = str(err.value)
    assert f"{filename} ({shown})" in msg and "no automatic download" in msg and str(tmp_path) in msg
    assert "https://github.com/uncbiag/" in msg and "#download" in msg


def test_saicis_entries_point_at_its_release(monkeypatch, tmp_path):
    monkeypatch.setenv("ISEG_WEIGHTS_DIR", str(tmp_path))
    for name, filename in (("saicis_hrnet18_multi_cocolvis", "hrnet18_multi.pth"),
                           ("saicis_segformer_b4_multi_cocolvis", "segformer_multi.pth")):
        spec = weights.KNOWN_CHECKPOINTS[name]
        assert spec.licence == "MIT" and spec.url == f"https://github.com/SamsungLabs/saic-is/releases/download/v1.0/{filename}"
    with pytest.raises(WeightsUnavailableError, match=r"offline mode.*segformer_multi.pth \(unknown size\)"):
        load_model("saicis_segformer_b4_multi_cocolvis", checkpoint="hub", device="cpu")
