"""Shared fixtures. Tests never touch the network: the Hub is offline and models are built randomly."""
import atexit
import importlib
import os
import shutil
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
# the page decoder's ONNX exports of random test models: one throwaway folder per run, not weights/onnx
if "ISEG_ONNX_DIR" not in os.environ:
    os.environ["ISEG_ONNX_DIR"] = tempfile.mkdtemp(prefix="iseg-onnx-")
    atexit.register(shutil.rmtree, os.environ["ISEG_ONNX_DIR"], True)
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_page(url: str, proc, timeout: float, poll: float = 1.0):
    """The body of ``url`` once the server started as ``proc`` answers; None if it exits or ``timeout`` passes."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode("utf-8", "replace")
        except OSError:
            time.sleep(poll)
    return None


def data_dir() -> Path:
    """The shared benchmark data (../shared/data beside the project, or $ISEG_DATA_DIR)."""
    return Path(os.environ.get("ISEG_DATA_DIR") or ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photo: GrabCut 124080.jpg (481x321, a person on a slope)."""
    path = data_dir() / "GrabCut" / "data_GT" / "124080.jpg"
    if not path.is_file():
        pytest.fail(f"benchmark data not found at {path}; set ISEG_DATA_DIR to the shared data folder")
    return np.array(Image.open(path).convert("RGB"))


# A SAM with a tiny image encoder: same prompt encoder and decoder as ViT-B, encoder 2 blocks of 64 channels.
TINY = dict(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,))


def official_tiny_sam(seed: int = 0):
    build = importlib.import_module("segment_anything.build_sam")
    torch.manual_seed(seed)
    return build._build_sam(TINY["embed_dim"], TINY["depth"], TINY["num_heads"], list(TINY["global_attn_indexes"]), None).eval()


def tiny_segmenter(reference=None, **kwargs):
    """Our SamSegmenter carrying the weights of ``reference`` (an official SAM module) or random ones."""
    from iseg_core.models.sam import SamConfig, SamNetwork, SamSegmenter

    network = SamNetwork(SamConfig(**TINY))
    if reference is not None:
        network.load_official_state_dict(reference.state_dict(), "sam_tiny", "reference")
    return SamSegmenter("sam_tiny", network, device="cpu", **kwargs)


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Downloads allowed (against the tests' local servers), an empty weights folder and Hub cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("ISEG_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path


@pytest.fixture(scope="session")
def tiny_pair():
    """(official tiny SAM, our segmenter with the same weights)."""
    ref = official_tiny_sam()
    return ref, tiny_segmenter(ref)


# -- databases: a SQLite file per test, and a real PostgreSQL server for the session ----------------------
_PG_SKIPPED = []


@pytest.fixture(scope="session")
def postgres():
    from tests.pg_server import PostgresServer, find_bin

    bindir = find_bin()
    if bindir is None:
        msg = ("PostgreSQL server binaries (initdb, pg_ctl) not found: PostgreSQL tests SKIPPED. "
               "Install Debian's 'postgresql' package (.ci/run does).")
        if os.environ.get("ISEG_REQUIRE_POSTGRES") == "1":
            pytest.fail(msg)
        _PG_SKIPPED.append(msg)
        pytest.skip(msg)
    server = PostgresServer(bindir).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'iseg.db'}"
    server = request.getfixturevalue("postgres")
    return server.create_database(f"t_{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**9}")


@pytest.fixture
def store(db_url, tmp_path):
    """A store on each kind of database (``db_url``), images under ``tmp_path``."""
    from storage import Store

    s = Store(db_url, tmp_path / "images")
    yield s
    s.close()


def pytest_terminal_summary(terminalreporter):
    if _PG_SKIPPED:
        terminalreporter.write_sep("!", "POSTGRESQL TESTS WERE SKIPPED", red=True, bold=True)
        terminalreporter.write_line(_PG_SKIPPED[0], red=True)


def serve_studio(tmp: Path, project: str, model: str = "classical", store=None, auth=None, workers=None,
                 hf_oauth=False, **studio_args):
    """The studio on a fresh SQLite store with the bundled samples (or on ``store`` as it is), served in this
    process on a free port (``auth``: Gradio's sign-in check; ``workers``, ``hf_oauth``: build_app's;
    ``studio_args``: more Studio settings). Returns (url, studio, store, demo); the caller closes demo and
    store."""
    from storage import Store
    from ui import Studio, build_app, launch_options

    if store is None:
        store = Store(f"sqlite:///{tmp / 'iseg.db'}", tmp / "images")
    studio = Studio(store, project, model, "random", export_dir=tmp / "exports",  # random weights: no downloads
                    **studio_args)
    if not store.images_of(studio.project):
        assert studio.ensure_samples() == 4
    demo = build_app(studio, workers=workers, hf_oauth=hf_oauth)
    _, url, _ = demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                                    quiet=True, auth=auth, **launch_options(demo))
    return url, studio, store, demo
