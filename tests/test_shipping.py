"""Shipping: the README's two commands work on a clean clone, and the Dockerfile passes hadolint."""
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, wait_for_page


def _quick_start_commands():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quick start"):]
    section = section[:section.index("\n## ", 4)]
    return re.findall(r"```bash\n(.+?)\n```", section, re.S)


def test_readme_test_command_is_the_one_ci_runs():
    app_cmd, test_cmd = _quick_start_commands()
    assert app_cmd.strip().endswith("app.py")
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci.strip() == test_cmd.strip()


def test_readme_app_command_serves_the_app_on_a_clean_clone(tmp_path):
    """Runs the README's set-up-and-start command verbatim in a fresh clone (new venv, pip install, app.py):
    the app must answer on its port with the classical default and the bundled samples."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    app_cmd, _ = _quick_start_commands()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "ISEG_"))}
    env.update(PORT=str(port), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", ISEG_HOME=str(tmp_path / "home"))
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if ".venv" not in p)
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen(["bash", "-c", app_cmd], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        body = wait_for_page(f"http://127.0.0.1:{port}/", proc, timeout=1500, poll=2)  # a fresh venv: minutes
        assert body is not None, (tmp_path / "app.log").read_text()[-3000:]
        assert "iseg" in body
        assert (tmp_path / "home" / "iseg.db").is_file()
        assert "first run: added 4 sample images" in (tmp_path / "app.log").read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    res = subprocess.run([hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dockerfile_follows_the_spaces_conventions():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 1000$", text, re.M) and "useradd --create-home --uid 1000 user" in text
    assert "EXPOSE 7860" in text and "ISEG_HOST=0.0.0.0" in text and "HF_HOME=" in text
    assert "torch==2.14.1 torchvision==0.29.1" in text and "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data/", ".git", "artifacts/"} <= set(ignored)
