"""Helpers for the equality tests against the official model code in ../shared/reference/official (test-only:
each reference runs in its own subprocess, as the scripts in tests/reference/ explain)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import data_dir
from .reference.packages import environment

SCRIPTS = Path(__file__).parent / "reference"


def official_dir(system: str) -> Path:
    path = data_dir().parent / "reference" / "official"
    if not (path / system).is_dir():
        pytest.fail(f"official reference code not found at {path}; it lives in the shared folder beside the data")
    return path


def run_official(script: str, system: str, photo: np.ndarray, out: Path, *args: str, timeout: int = 900) -> None:
    """Run ``tests/reference/<script>`` on ``photo`` (then ``args``); it writes its checkpoint and results into
    ``out``."""
    np.save(out / "photo.npy", photo)
    try:
        env = environment(system)  # with the reference's own packages, if it needs any
    except RuntimeError as exc:
        pytest.fail(str(exc))
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
