"""Timing helpers shared by the benchmarks: warm-up, then median and p95 of wall-clock milliseconds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np


def data_dir() -> Path:
    """The shared benchmark data: $ISEG_DATA_DIR, else ../shared/data beside the project."""
    return Path(os.environ.get("ISEG_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def time_ms(fn: Callable[[], object], runs: int, warmup: int = 1) -> List[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def summary(samples: Sequence[float]) -> tuple:
    a = np.asarray(samples)
    return float(np.median(a)), float(np.percentile(a, 95))


def print_table(rows: Sequence[tuple], header: Sequence[str]) -> None:
    """Markdown table; numbers are formatted with one decimal (ratios with two)."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for r in rows:
        print("| " + " | ".join(fmt(v) for v in r) + " |")


def worker_args(*int_flags: str):
    """The command line of a benchmark's worker process (ours or the reference side): ``--worker``,
    ``--models``, ``--ckpt``, ``--image``, ``--rounds``, ``--threads`` and ``int_flags``; sets torch's threads."""
    import argparse

    import torch

    ap = argparse.ArgumentParser()
    for flag in ("--worker", "--models", "--ckpt", "--image"):
        ap.add_argument(flag)
    for flag in ("--rounds", "--threads") + int_flags:
        ap.add_argument(flag, type=int)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    return args


def run_worker(script: str, side: str, name: str, ckpt: Path, image: Path, rounds: int, threads: int,
               *extra: str, env: Optional[dict] = None) -> dict:
    """Run one worker process (``script`` with :func:`worker_args`' flags; ``env``: its environment, default
    ours) and read the JSON line it prints last."""
    cmd = [sys.executable, script, "--worker", side, "--models", name, "--ckpt", str(ckpt), "--image", str(image),
           "--rounds", str(rounds), "--threads", str(threads), *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{side} {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def alternate(repeats: int, run: Callable[[str], dict]) -> dict:
    """``run(side)`` for "ours" and "official", ``repeats`` times each, the order alternating so that machine
    noise falls on both sides: {side: [results]}."""
    runs = {"ours": [], "official": []}
    for k in range(repeats):
        for side in (("ours", "official") if k % 2 == 0 else ("official", "ours")):
            runs[side].append(run(side))
    return runs


def side_by_side_args(doc: str, models: Sequence[str]):
    """The argument parser of a benchmark that runs ours and the publishers' side in worker processes
    (``--models``, ``--rounds``, ``--repeats``, ``--threads``, and the hidden worker flags); add more, then parse."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(models))
    ap.add_argument("--rounds", type=int, default=3, help="measured rounds per process (after one warm-up)")
    ap.add_argument("--repeats", type=int, default=2, help="processes per side, alternating")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", choices=["ours"], help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--image", help=argparse.SUPPRESS)
    return ap


def report_worker(result: dict) -> None:
    """A worker's last act: its results and its peak RSS as one JSON line."""
    import resource

    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))
