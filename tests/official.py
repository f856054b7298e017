"""Helpers for the equality tests against the official model code in ../shared/reference/official (test-only:
each reference runs in its own subprocess, as the scripts in tests/reference/ explain)."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from .conftest import data_dir

SCRIPTS = Path(__file__).parent / "reference"
# Packages a reference needs that iseg never depends on, installed on first use into a folder of their own (put on
# the subprocess's PYTHONPATH only). InterFormer's code imports mmcv 1.x: PyPI has only its source package, whose
# setup.py needs pkg_resources (setuptools < 70 to build it); --no-deps keeps its opencv-python out (iseg has the
# headless build) and every pure-Python dependency it imports is listed, pinned.
REFERENCE_PACKAGES = {
    "interformer": ["mmcv==1.6.0", "addict==2.4.0", "yapf==0.40.1", "platformdirs==4.3.6", "tomli==2.2.1",
                    "importlib-metadata==8.5.0", "zipp==3.21.0", "prettytable==3.12.0", "wcwidth==0.2.13",
                    "einops==0.8.1"],
}
PACKAGES_DIR = Path(__file__).resolve().parent.parent / ".cache" / "reference-packages"


def reference_packages(system: str) -> Path:
    """The folder holding ``system``'s extra packages, installed with pip the first time (a package registry is
    needed once; CI has one)."""
    wanted = REFERENCE_PACKAGES[system]
    target = PACKAGES_DIR / system
    stamp = target / "installed.txt"
    if stamp.is_file() and stamp.read_text().split() == wanted:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        constraint = Path(tmp) / "build-constraints.txt"
        constraint.write_text("setuptools<70\n")
        env = dict(os.environ, PIP_CONSTRAINT=str(constraint))  # reaches the isolated build environment too
        run = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target",
                              str(target), *wanted], capture_output=True, text=True, timeout=900, env=env)
    if run.returncode != 0:
        pytest.fail(f"could not install the {system} reference's packages ({' '.join(wanted)}) into {target}:\n"
                    f"{run.stderr[-2000:]}")
    stamp.write_text("\n".join(wanted))
    return target


def official_dir(system: str) -> Path:
    path = data_dir().parent / "reference" / "official"
    if not (path / system).is_dir():
        pytest.fail(f"official reference code not found at {path}; it lives in the shared folder beside the data")
    return path


def run_official(script: str, system: str, photo: np.ndarray, out: Path, *args: str, timeout: int = 900) -> None:
    """Run ``tests/reference/<script>`` on ``photo`` (then ``args``); it writes its checkpoint and results into
    ``out``."""
    np.save(out / "photo.npy", photo)
    env = None
    if system in REFERENCE_PACKAGES:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(reference_packages(system)),
                                                                        os.environ.get("PYTHONPATH")])))
    run = subprocess.run([sys.executable, str(SCRIPTS / script), str(official_dir(system)), str(out / "photo.npy"),
                          str(out), *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert run.returncode == 0, run.stderr[-3000:]


def assert_logits_equal(ours, theirs: np.ndarray, tol: float = 1e-3):
    """Logits within ``tol``; masks identical except where a logit is within ``tol`` of the threshold (0); and a
    meaningful comparison: the random network does not give a constant answer."""
    ours = np.asarray(ours, np.float32)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= tol
    differ = (ours > 0) != (theirs > 0)
    assert not (differ & (np.abs(theirs) > tol)).any()
    assert theirs.std() > 1e-2 and 0 < (theirs > 0).mean() < 1


def assert_probs_equal(ours: np.ndarray, theirs: np.ndarray, tol: float = 2.5e-4, threshold: float = 0.49):
    """Probabilities within ``tol`` (1e-3 in logits near 0.5), masks at ``threshold`` identical except there."""
    assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= tol
    differ = (ours > threshold) != (theirs > threshold)
    assert not (differ & (np.abs(theirs - threshold) > tol)).any()


def assert_truncated_refused(path: Path, name: str, tmp_path: Path):
    """Half of a good checkpoint file is refused with a clear message, before any model is built."""
    from iseg_core.errors import CheckpointError
    from iseg_core.models import load_model

    data = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(name, tmp_path / "cut.pth", device="cpu")
