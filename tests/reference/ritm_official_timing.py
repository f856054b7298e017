"""The official side of bench/bench_models.py: RITM's NoBRS predictor timed on the same photo, clicks and
weights as iseg's side (test-reference code; the official folder is ../shared/reference/official beside the
data, or $ISEG_OFFICIAL_DIR). Prints one JSON line: encode, first and fifth click ms per round, peak RSS MB."""
import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.bench_models import clicks_px  # noqa: E402
from bench.common import data_dir  # noqa: E402
from iseg_core.models.clickmap import CLICKMAP_CONFIGS  # noqa: E402

ap = argparse.ArgumentParser()
for flag in ("--worker", "--models", "--ckpt", "--image"):
    ap.add_argument(flag)
ap.add_argument("--rounds", type=int)
ap.add_argument("--threads", type=int)
ap.add_argument("--max-side", type=int)
args = ap.parse_args()
torch.set_num_threads(args.threads)
official = os.environ.get("ISEG_OFFICIAL_DIR") or str(data_dir().parent / "reference" / "official")
sys.path.insert(0, official)
import shims  # noqa: E402

shims.install()
sys.path.insert(0, official + "/ritm")
from isegm.inference.clicker import Click, Clicker  # noqa: E402
from isegm.inference.predictors import get_predictor  # noqa: E402
from isegm.model.is_hrnet_model import HRNetModel  # noqa: E402

c = CLICKMAP_CONFIGS[args.models]
net = HRNetModel(width=c.width, ocr_width=c.ocr_width, small=c.small, with_aux_output=True, use_leaky_relu=True,
                 use_rgb_conv=False, use_disks=True, norm_radius=5, with_prev_mask=True)
net.load_state_dict(torch.load(args.ckpt, weights_only=True)["state_dict"])
net.eval()
image = np.load(args.image)
predictor = get_predictor(net, "NoBRS", torch.device("cpu"), with_flip=False, zoom_in_params=None,
                          predictor_params={"max_size": args.max_side})
encode, first, fifth = [], [], []
pts = clicks_px(*image.shape[:2])
with torch.no_grad():
    for r in range(args.rounds + 1):  # round 0 warms up
        t0 = time.perf_counter()
        predictor.set_input_image(image)
        t_enc = time.perf_counter() - t0
        clicker, times = Clicker(), []
        for y, x, p in pts:
            clicker.add_click(Click(is_positive=p, coords=(y, x)))
            t0 = time.perf_counter()
            predictor.get_prediction(clicker)
            times.append(time.perf_counter() - t0)
        if r:
            encode.append(t_enc * 1e3), first.append(times[0] * 1e3), fifth.append(times[4] * 1e3)
print(json.dumps({"encode": encode, "first": first, "fifth": fifth,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
