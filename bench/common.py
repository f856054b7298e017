"""Timing helpers shared by the benchmarks: warm-up, then median and p95 of wall-clock milliseconds."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, List, Sequence

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
