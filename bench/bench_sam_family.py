"""SAM-family models, ours vs their publishers' code: image encode ms, click ms at 12 MP, peak RSS.

    python bench/bench_sam_family.py                                # mobile_sam, sam2.1_hiera_tiny, sam_hq_vit_b
    python bench/bench_sam_family.py --models sam2.1_hiera_small,sam_hq_vit_l --rounds 3 --size 4000x3000

Each side runs in a process of its own (peak RSS is per process) on the same seeded random weights, saved as
the publisher saves them: ours through ``load_model`` + ``Predictor``; the other side is a test script,
tests/reference/sam_family_timing.py (SAM 2.1 and HQ-SAM from their PyPI packages, MobileSAM from its code in
the shared reference folder), which this benchmark only runs and reads one JSON line from. The processes of
both sides alternate so that machine noise falls on both. A round: set the image (a fresh one: hashing and
preprocessing included), one click (the ambiguous case: multimask, best kept), then three clicks of both signs
with the previous low-res logits; every click gives a full-size mask (that is what the studio and the eval
loop read). The encoder alone (the network on a prepared 1024x1024 input) is timed too. The photo: GrabCut
124080 resized to ``--size`` (default 4000x3000, 12 MP). Weights are random: the speed is the model's.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (alternate, data_dir, print_table, report_worker, run_worker, side_by_side_args,  # noqa: E402
                          summary)

REFERENCE_TIMING = ROOT / "tests" / "reference" / "sam_family_timing.py"
MODELS = ["mobile_sam", "sam2.1_hiera_tiny", "sam_hq_vit_b"]
CLICKS = [(0.50, 0.50, True), (0.30, 0.60, False), (0.70, 0.20, True)]  # (fx, fy, positive)


def photo(size: str) -> np.ndarray:
    import cv2
    from PIL import Image

    w, h = map(int, size.split("x"))
    src = np.array(Image.open(data_dir() / "GrabCut" / "data_GT" / "124080.jpg").convert("RGB"))
    return cv2.resize(src, (w, h), interpolation=cv2.INTER_CUBIC)


def clicks_px(h: int, w: int):
    return [(fx * w, fy * h, positive) for fx, fy, positive in CLICKS]


def worker_ours(name: str, ckpt: str, image_path: str, rounds: int) -> dict:
    import torch

    from iseg_core import Click, Predictor, load_model
    from iseg_core.runtime import tune_allocator

    tune_allocator()  # as every iseg process that serves clicks does
    image = np.load(image_path)
    model = load_model(name, ckpt, device="cpu")
    predictor = Predictor(model)
    pts = clicks_px(*image.shape[:2])
    frame = model.frame_pixels(image)
    out = {"encode": [], "encoder": [], "click1": [], "click3": []}
    for r in range(rounds + 1):  # round 0 warms up
        predictor.cache.clear()
        t0 = time.perf_counter()
        predictor.set_image(image)
        t_enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.network.encode(frame, model.device)
        t_net = time.perf_counter() - t0
        t0 = time.perf_counter()
        first = predictor.predict([Click(*pts[0][:2])])
        t1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        third = predictor.predict([Click(x, y, positive=p) for x, y, p in pts], prev_logits=first.logits)
        t3 = time.perf_counter() - t0
        assert third.mask.shape == image.shape[:2]
        if r:
            for key, t in (("encode", t_enc), ("encoder", t_net), ("click1", t1), ("click3", t3)):
                out[key].append(t * 1e3)
    return out


def run_side(side: str, name: str, ckpt: Path, image: Path, rounds: int, threads: int) -> dict:
    return run_worker(__file__ if side == "ours" else str(REFERENCE_TIMING), side, name, ckpt, image, rounds, threads)


def main() -> None:
    ap = side_by_side_args(__doc__, MODELS)
    ap.add_argument("--size", default="4000x3000", help="WxH of the photo")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        import cv2

        cv2.setNumThreads(args.threads)
        report_worker(worker_ours(args.models, args.ckpt, args.image, args.rounds))
        return

    from iseg_core.models import load_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        image_path = Path(tmp) / "photo.npy"
        image = photo(args.size)
        np.save(image_path, image)
        for name in args.models.split(","):
            torch.manual_seed(0)
            state = load_model(name, device="cpu").checkpoint_state()
            ckpt = Path(tmp) / f"{name}.pt"
            torch.save({"model": state} if name.startswith("sam2") else state, ckpt)  # as each publisher saves
            runs = alternate(args.repeats, lambda side: run_side(side, name, ckpt, image_path, args.rounds, args.threads))
            stats = {}
            for side, rs in runs.items():
                stats[side] = {key: summary([v for r in rs for v in r[key]])
                               for key in ("encode", "encoder", "click1", "click3")}
                stats[side]["rss"] = max(r["rss_mb"] for r in rs)
            o, f = stats["ours"], stats["official"]
            rows.append((name, o["encode"][0], o["encode"][1], f["encode"][0], o["encode"][0] / f["encode"][0],
                         o["encoder"][0], f["encoder"][0], o["encoder"][0] / f["encoder"][0],
                         o["click1"][0], o["click1"][1], f["click1"][0], o["click1"][0] / f["click1"][0],
                         o["click3"][0], o["click3"][1], f["click3"][0], o["click3"][0] / f["click3"][0],
                         o["rss"], f["rss"]))
    print(f"# {args.threads} threads, photo {args.size}, {args.repeats} processes per side x {args.rounds} rounds; "
          "ms median (p95); ratio = ours / official (median)")
    print_table(rows, ["model", "set_image ours", "p95", "set_image official", "ratio", "encoder ours",
                       "encoder official", "ratio", "click 1 ours", "p95", "click 1 official", "ratio",
                       "3 clicks+prev ours", "p95", "3 clicks+prev official", "ratio", "peak RSS ours MB",
                       "peak RSS official MB"])


if __name__ == "__main__":
    main()
