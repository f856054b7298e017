"""Process-level settings for fast CPU inference: the memory allocator and what the CPU can do in bfloat16.

These are choices for a whole process, so the library never makes them on import; ``app.py``, the CLIs and
the benchmarks call :func:`tune_allocator` once at start-up.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

import torch

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_tuned = False


def tune_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 512 << 20, top_pad: int = 64 << 20) -> bool:
    """Keep freed buffers of up to ``mmap_threshold`` bytes in the heap instead of returning them to the OS.

    A decoder pass allocates and frees some 30 MB of few-megabyte tensors. With glibc's defaults every one of
    them is a fresh ``mmap`` and is zero-filled page by page on first touch (thousands of page faults per
    click, about a quarter of the decoder's time on a 2-core machine). Keeping them in the heap makes those
    allocations free. Buffers larger than ``mmap_threshold`` (the encoder's attention maps) still go back to
    the OS. Returns whether the settings took effect (only on glibc Linux). Idempotent.
    """
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    ok = all(
        mallopt(param, value) == 1
        for param, value in ((_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold), (_M_TOP_PAD, top_pad))
    )
    _tuned = ok
    if not ok:
        log.info("mallopt refused the allocator settings; running with the defaults")
    return ok


def bf16_is_fast(device: torch.device | str = "cpu") -> bool:
    """Whether bfloat16 matmuls run natively on ``device``.

    On a CPU without AVX512-BF16 or AMX, PyTorch emulates bfloat16 and a bf16 encoder is several times
    *slower* than fp32 (ViT-B: 55 s instead of 11 s on an AVX2-only EPYC), so callers should not pick it by
    default there.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False
