"""MIS's compiled merging / sampling op (../shared/reference/official/mis/mis/ops/src), built for the tree-equality
test (test-only). MIS has no licence: its sources are compiled where they lie, never copied; the CMake file below
is ours. Needs cmake, a C++ compiler, Eigen 3.4 headers (Debian ``libeigen3-dev``) and PyPI ``pybind11``
(.ci/run installs them). Built once per source version into .cache/ (about a minute), with MIS's own flags
(``-O3 -fopenmp -m64``: its float32 sums depend on them)."""
import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "mis-op"
CMAKE = """cmake_minimum_required(VERSION 3.15)
project(mis_op LANGUAGES CXX)
set(CMAKE_CXX_FLAGS "-O3 -fopenmp -m64")
find_package(pybind11 CONFIG REQUIRED)
include_directories({eigen})
pybind11_add_module(_C {src}/binding.cpp)
set_target_properties(_C PROPERTIES LIBRARY_OUTPUT_DIRECTORY {out})
"""


def build(src: Path):
    """Compile (or reuse) the op from ``src`` (the folder of MIS's ``binding.cpp``) and import it."""
    import pybind11

    eigen = Path(os.environ.get("EIGEN_INCLUDE", "/usr/include/eigen3"))
    if not (eigen / "Eigen" / "Core").is_file():
        raise RuntimeError(f"Eigen headers not found at {eigen} (Debian: apt-get install libeigen3-dev)")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(src.glob("*.cpp"))) + pybind11.__version__.encode())
    out = CACHE / digest.hexdigest()[:16]
    found = sorted(out.glob("_C*.so"))
    if not found:
        build_dir = out / "build"
        build_dir.mkdir(parents=True, exist_ok=True)
        (build_dir / "CMakeLists.txt").write_text(CMAKE.format(eigen=eigen, src=src, out=out))
        for cmd in (["cmake", "-S", str(build_dir), "-B", str(build_dir / "b"), f"-DPython_EXECUTABLE={sys.executable}",
                     f"-DPYTHON_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
                     "-DCMAKE_BUILD_TYPE=Release"],
                    ["cmake", "--build", str(build_dir / "b"), "-j", "2"]):
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if run.returncode != 0:
                raise RuntimeError(f"building MIS's op failed ({' '.join(cmd)}):\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
        found = sorted(out.glob("_C*.so"))
    spec = importlib.util.spec_from_file_location("_C", found[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
