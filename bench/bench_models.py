"""Click-map models, ours vs their authors' code, on one photo: encode ms, first and fifth click ms, peak RSS.

    python bench/bench_models.py                         # every RITM, SAIC-IS, SimpleClick, MST, SegNext, InterFormer model
    python bench/bench_models.py --models ritm_hrnet18s_cocolvis --rounds 5 --max-side 400

Each side runs in a process of its own (peak RSS is per process) on the same seeded random weights: ours
through ``load_model`` + ``Predictor``; the other side is a test script, tests/reference/clickmap_timing.py
(it says how each family's own predictor is set up; this benchmark only runs it and reads its JSON line), and
for InterFormer tests/reference/interformer_timing.py (its demo's Predictor, given the frame iseg encodes). A
round = set the image, then five clicks, each fed the previous prediction; the processes of both sides
alternate so that machine noise falls on both. Ours runs as iseg serves clicks, with
``iseg_core.runtime.tune_allocator()`` (freed buffers stay in the heap). The photo: DAVIS image 000 (854x480)
resized to 1920x1080 (2.1 MP). Weights are random: the speed is the model's, the masks mean nothing.
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

# the other side: a test script (the authors' code is a test reference, never imported here); InterFormer's needs
# mmcv 1.x, which tests/reference/packages.py installs into a folder of its own
REFERENCE_TIMING = ROOT / "tests" / "reference" / "clickmap_timing.py"
INTERFORMER_TIMING = ROOT / "tests" / "reference" / "interformer_timing.py"
MODELS = ["ritm_hrnet18s_cocolvis", "ritm_hrnet18_cocolvis", "ritm_hrnet32_cocolvis", "saicis_hrnet18_multi_cocolvis",
          "saicis_segformer_b4_multi_cocolvis", "simpleclick_vit_b448_cocolvis",
          "simpleclick_vit_l448_cocolvis", "simpleclick_vit_h448_cocolvis", "mst_vit_b448_slim_cocolvis",
          "mst_vit_b448_cocolvis", "segnext_vit_b1024_sax1_cocolvis",
          "segnext_vit_b1024_sax2_cocolvis", "interformer_light_vitb_cocolvis", "interformer_tiny_vitl_cocolvis"]
CLICKS = [(0.50, 0.55, True), (0.20, 0.20, False), (0.60, 0.40, True), (0.85, 0.80, False), (0.45, 0.70, True)]


def photo() -> np.ndarray:
    import cv2

    frames = sorted((data_dir() / "DAVIS" / "img").glob("*.jpg"))
    if not frames:
        raise SystemExit(f"no DAVIS frames under {data_dir() / 'DAVIS' / 'img'}; set ISEG_DATA_DIR")
    bgr = cv2.imread(str(frames[0]))
    return np.ascontiguousarray(cv2.resize(bgr, (1920, 1080), interpolation=cv2.INTER_CUBIC)[:, :, ::-1])


def clicks_px(h: int, w: int):
    return [(int(fy * h), int(fx * w), positive) for fy, fx, positive in CLICKS]  # (row, col)


def worker_ours(name: str, ckpt: str, image_path: str, rounds: int, max_side: int) -> dict:
    import dataclasses

    from iseg_core import Predictor, load_model
    from iseg_core.prompts import Click
    from iseg_core.runtime import tune_allocator

    tune_allocator()  # as every iseg process that serves clicks does (app.py, the eval CLI)
    image = np.load(image_path)
    model = load_model(name, ckpt, device="cpu")
    if name.startswith(("ritm_", "interformer_")):
        model.config = dataclasses.replace(model.config, max_side=max_side)
    predictor = Predictor(model)
    encode, first, fifth = [], [], []
    pts = clicks_px(*image.shape[:2])
    for r in range(rounds + 1):  # round 0 warms up
        predictor.cache.clear()
        t0 = time.perf_counter()
        predictor.set_image(image)
        t_enc = time.perf_counter() - t0
        prev, times = None, []
        for k in range(len(pts)):
            t0 = time.perf_counter()
            pred = predictor.predict([Click(float(c), float(y), positive=p) for y, c, p in pts[:k + 1]], prev_logits=prev)
            times.append(time.perf_counter() - t0)
            prev = pred.logits
        if r:
            encode.append(t_enc * 1e3), first.append(times[0] * 1e3), fifth.append(times[4] * 1e3)
    return {"encode": encode, "first": first, "fifth": fifth}


def run_side(side: str, name: str, ckpt: Path, image: Path, rounds: int, threads: int, max_side: int) -> dict:
    env = None
    script = __file__ if side == "ours" else str(REFERENCE_TIMING)
    if name.startswith("interformer_"):
        max_side = 1024  # iseg's cap on InterFormer's encoded frame; the official side gets the same frame
        if side != "ours":
            from tests.reference.packages import environment

            script, env = str(INTERFORMER_TIMING), environment("interformer")
    elif name.startswith("mst_") and side != "ours":
        from tests.reference.packages import environment

        env = environment("mst")  # its patch embedding imports einops
    return run_worker(script, side, name, ckpt, image, rounds, threads, "--max-side", str(max_side), env=env)


def main() -> None:
    ap = side_by_side_args(__doc__, MODELS)
    ap.add_argument("--max-side", type=int, default=800, help="long side of the network's frame (RITM demo: 800)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        report_worker(worker_ours(args.models, args.ckpt, args.image, args.rounds, args.max_side))
        return

    from iseg_core.models import load_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        image_path = Path(tmp) / "photo.npy"
        image = photo()
        np.save(image_path, image)
        for name in args.models.split(","):
            torch.manual_seed(0)
            ckpt = Path(tmp) / f"{name}.pth"
            torch.save({"state_dict": load_model(name, device="cpu").network.state_dict()}, ckpt)
            runs = alternate(args.repeats, lambda side: run_side(side, name, ckpt, image_path, args.rounds,
                                                                 args.threads, args.max_side))
            stats = {}
            for side, rs in runs.items():
                stats[side] = {key: summary([v for r in rs for v in r[key]]) for key in ("encode", "first", "fifth")}
                stats[side]["rss"] = max(r["rss_mb"] for r in rs)
            o, f = stats["ours"], stats["official"]
            rows.append((name, f"{image.shape[1]}x{image.shape[0]}", o["encode"][0], f["encode"][0],
                         o["first"][0], o["first"][1], f["first"][0], o["fifth"][0], o["fifth"][1], f["fifth"][0],
                         o["fifth"][0] / f["fifth"][0], o["rss"], f["rss"]))
    print(f"# {args.threads} threads, frame long side {args.max_side} (RITM; InterFormer 1024, both sides), "
          f"{args.repeats} processes per side x "
          f"{args.rounds} rounds; ms median (p95)")
    print_table(rows, ["model", "photo", "encode ours", "encode official", "click 1 ours", "p95", "click 1 official",
                       "click 5 ours", "p95", "click 5 official", "click 5 ratio", "peak RSS ours MB",
                       "peak RSS official MB"])


if __name__ == "__main__":
    main()
