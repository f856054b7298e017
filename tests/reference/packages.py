"""Packages a reference needs that iseg never depends on, installed on first use into a folder of their own
(put on the reference subprocess's PYTHONPATH only; used by tests/official.py and bench/bench_models.py).

InterFormer's code imports mmcv 1.x: PyPI has only its source package, whose setup.py needs pkg_resources
(setuptools < 70 to build it); ``--no-deps`` keeps its opencv-python out (iseg has the headless build) and every
pure-Python dependency it imports is listed here, pinned.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REFERENCE_PACKAGES = {
    "interformer": ["mmcv==1.6.0", "addict==2.4.0", "yapf==0.40.1", "platformdirs==4.3.6", "tomli==2.2.1",
                    "importlib-metadata==8.5.0", "zipp==3.21.0", "prettytable==3.12.0", "wcwidth==0.2.13",
                    "einops==0.8.1"],
    "mst": ["einops==0.8.1"],  # its FlexiPatchEmbed rearranges with it
    # SAIC-IS's contour generator deforms with albumentations 1.3's elastic_transform (which imports scikit-image)
    "saic_is_protocol": ["albumentations==1.3.1", "qudida==0.0.4", "scikit-image==0.26.0", "imageio==2.38.2",
                         "tifffile==2026.3.3", "lazy-loader==0.6", "networkx==3.6.1", "PyYAML==6.0.3"],
}
PACKAGES_DIR = Path(__file__).resolve().parents[2] / ".cache" / "reference-packages"


def reference_packages(system: str) -> Path:
    """The folder holding ``system``'s extra packages, installed with pip the first time (a package registry is
    needed once); RuntimeError with pip's words when that fails."""
    wanted = REFERENCE_PACKAGES[system]
    target = PACKAGES_DIR / system
    stamp = target / "installed.txt"
    if stamp.is_file() and stamp.read_text().split() == wanted:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        constraint = Path(tmp) / "build-constraints.txt"
        constraint.write_text("setuptools<70\n")
        env = dict(os.environ, PIP_CONSTRAINT=str(constraint))  # reaches pip's isolated build environment too
        run = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target",
                              str(target), *wanted], capture_output=True, text=True, timeout=900, env=env)
    if run.returncode != 0:
        raise RuntimeError(f"could not install the {system} reference's packages ({' '.join(wanted)}) into "
                           f"{target}:\n{run.stderr[-2000:]}")
    stamp.write_text("\n".join(wanted))
    return target


def environment(system: str) -> dict:
    """``os.environ`` with ``system``'s packages (if it has any) first on PYTHONPATH."""
    if system not in REFERENCE_PACKAGES:
        return dict(os.environ)
    path = [str(reference_packages(system)), os.environ.get("PYTHONPATH")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
