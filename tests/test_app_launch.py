"""README's app command ends in `python app.py`: the app must come up offline and answer on its port."""
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port, wait_for_page

ROOT = Path(__file__).resolve().parent.parent


def _start(tmp_path):
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(tmp_path),
               ISEG_WEIGHTS_DIR=str(tmp_path / "weights"), ISEG_HOME=str(tmp_path / "home"),
               HF_HUB_CACHE=str(tmp_path / "hub"))
    env.pop("ISEG_MODEL", None)
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}/"


def _stop(proc) -> str:
    proc.terminate()
    proc.wait(timeout=20)
    return proc.stdout.read().decode()


def test_app_starts_offline_and_serves_its_page(tmp_path):
    proc, url = _start(tmp_path)
    try:
        body = wait_for_page(url, proc, timeout=120, poll=0.5)
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        assert body is not None, "app did not answer within 120 s"
        assert "<title>iseg</title>" in body or "iseg" in body
        assert (tmp_path / "home" / "iseg.db").is_file()  # the embedded default store, with the samples in it
        assert len(list((tmp_path / "home" / "images").rglob("*.jpg"))) == 4
    finally:
        out = _stop(proc)
    # no weights on disk: the classical engine, and one line on how to get a model
    assert "model: classical (No model weights on disk" in out and "--model mobile_sam" in out, out[-2000:]


def test_app_starts_with_the_light_model_when_its_weights_are_on_disk(tmp_path):
    import torch

    from iseg_core.models.sam import SAM_CONFIGS, SamNetwork

    (tmp_path / "weights").mkdir()
    torch.save(SamNetwork(SAM_CONFIGS["mobile_sam"]).official_state_dict(), tmp_path / "weights" / "mobile_sam.pt")
    proc, url = _start(tmp_path)
    try:
        assert wait_for_page(url, proc, timeout=120, poll=0.5) is not None
    finally:
        out = _stop(proc)
    assert "model: mobile_sam (weights found on disk)" in out, out[-2000:]
