"""README's app command ends in `python app.py`: the app must come up offline and answer on its port."""
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port, wait_for_page

ROOT = Path(__file__).resolve().parent.parent


def _start(tmp_path, **more_env):
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(tmp_path),
               ISEG_WEIGHTS_DIR=str(tmp_path / "weights"), ISEG_HOME=str(tmp_path / "home"),
               HF_HUB_CACHE=str(tmp_path / "hub"))
    env.update(more_env)
    for name in ("ISEG_MODEL", "SPACE_ID", "OAUTH_CLIENT_ID", "SPACES_ZERO_GPU"):
        if name not in more_env:
            env.pop(name, None)
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


def test_on_a_space_the_app_fetches_mobilesam_when_the_hub_answers(tmp_path):
    """SPACE_ID set, no weights on disk: with the Hub reachable (a local stand-in, slowed) the app fetches MobileSAM
    with progress lines in the log and starts with it; with the Hub unreachable it says why and keeps the classical
    engine, as offline."""
    import io

    import torch

    from iseg_core.models.sam import SAM_CONFIGS, SamNetwork
    from tests.hub_server import HubServer

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(SamNetwork(SAM_CONFIGS["mobile_sam"]).official_state_dict(), buf)
    content = buf.getvalue()
    with HubServer({"dhkim2810/MobileSAM/mobile_sam.pt": content}, rate=len(content) / 5) as hub:
        proc, url = _start(tmp_path / "up", SPACE_ID="someone/iseg", HF_HUB_OFFLINE="0", HF_ENDPOINT=hub.url,
                           ISEG_HOST="127.0.0.1")
        try:
            assert wait_for_page(url, proc, timeout=180, poll=0.5) is not None
        finally:
            out = _stop(proc)
    assert "fetching mobile_sam weights (about 40 MB) from dhkim2810/MobileSAM" in out, out[-3000:]
    lines = re.findall(r"mobile_sam weights: (\d+) of (\d+) MB", out)
    assert len(lines) >= 2 and lines[-1][0] == lines[-1][1]  # it went on, and ended whole
    assert "model: mobile_sam (fetched from the Hub)" in out
    proc, url = _start(tmp_path / "down", SPACE_ID="someone/iseg", HF_HUB_OFFLINE="0",
                       HF_ENDPOINT=f"http://127.0.0.1:{free_port()}", ISEG_HOST="127.0.0.1")
    try:
        assert wait_for_page(url, proc, timeout=180, poll=0.5) is not None
    finally:
        out = _stop(proc)
    assert "mobile_sam not fetched" in out and "model: classical (No model weights on disk" in out, out[-3000:]
