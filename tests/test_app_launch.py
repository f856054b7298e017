"""README's app command ends in `python app.py`: the app must come up offline and answer on its port."""
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port, wait_for_page

ROOT = Path(__file__).resolve().parent.parent


def test_app_starts_offline_and_serves_its_page(tmp_path):
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(tmp_path),
               ISEG_WEIGHTS_DIR=str(tmp_path / "weights"), ISEG_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        body = wait_for_page(f"http://127.0.0.1:{port}/", proc, timeout=120, poll=0.5)
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        assert body is not None, "app did not answer within 120 s"
        assert "<title>iseg</title>" in body or "iseg" in body
        assert (tmp_path / "home" / "iseg.db").is_file()  # the embedded default store, with the samples in it
        assert len(list((tmp_path / "home" / "images").rglob("*.jpg"))) == 4
    finally:
        proc.terminate()
        proc.wait(timeout=20)
