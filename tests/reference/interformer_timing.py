"""The authors' side of bench/bench_models.py for InterFormer (test-reference code; run with the packages of
tests/reference/packages.py on PYTHONPATH): its demo's own Predictor (demo/gui/predictor.py) on the network built
from its config, our weights loaded into it. The image is given at the frame iseg encodes (long side capped at
``--max-side``, bilinear): InterFormer itself encodes any size, and at 2 MP its global attention would not fit
this machine. ``set_input_image`` = the ViT + SimpleFPN; a click = ``update_ref_label_by_new_click`` +
``get_prediction`` (I-MSA, UPerHead, argmax, the label-map merge), no ZoomIn (as its evaluation). Prints one
JSON line: encode, first and fifth click ms per round, peak RSS MB."""
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.bench_models import clicks_px  # noqa: E402
from bench.common import data_dir, report_worker, worker_args  # noqa: E402
from iseg_core.models.interformer.model import fit_side  # noqa: E402

args = worker_args("--max-side")
official = os.environ.get("ISEG_OFFICIAL_DIR") or str(data_dir().parent / "reference" / "official")
sys.path.insert(0, str(Path(__file__).parent))
from interformer_build import build  # noqa: E402

variant = "light" if "light" in args.models else "tiny"
model, _, _, Click, Predictor = build(official, variant)
missing, unexpected = model.load_state_dict(torch.load(args.ckpt, weights_only=True)["state_dict"], strict=False)
assert not unexpected and all(k.endswith("relative_position_index") for k in missing), (missing, unexpected)
image = np.load(args.image)
h, w = fit_side(*image.shape[:2], args.max_side)
bgr = np.ascontiguousarray(cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)[:, :, ::-1])
predictor = Predictor(model, "cpu", {"inner_radius": 5, "outer_radius": 0, "zoom_in_params": None})
encode, first, fifth = [], [], []
with torch.no_grad():
    for r in range(args.rounds + 1):  # round 0 warms up
        t0 = time.perf_counter()
        predictor.set_input_image(bgr)
        t_enc = time.perf_counter() - t0
        times = []
        for k, (y, x, p) in enumerate(clicks_px(h, w)):
            t0 = time.perf_counter()
            predictor.update_ref_label_by_new_click(Click(p, (y, x)))
            predictor.get_prediction(k + 1, None)
            times.append(time.perf_counter() - t0)
        if r:
            encode.append(t_enc * 1e3), first.append(times[0] * 1e3), fifth.append(times[4] * 1e3)
report_worker({"encode": encode, "first": first, "fifth": fifth})
