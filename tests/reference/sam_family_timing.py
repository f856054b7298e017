"""The publishers' side of bench/bench_sam_family.py, timed on the same photo, clicks and weights as iseg's side
(test-reference code): SAM 2.1's ``SAM2ImagePredictor`` (PyPI ``sam2``), HQ-SAM's ``SamPredictor`` (PyPI
``segment-anything-hq``, ``hq_token_only=False``), MobileSAM's ``SamPredictor`` (its code in the shared
reference folder: ../shared/reference/official beside the data, or $ISEG_OFFICIAL_DIR). Each predictor's own
``set_image`` and ``predict``; the encoder alone is its image encoder on the same prepared input. Prints one
JSON line: set_image, encoder, click ms per round, peak RSS MB."""
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.bench_sam_family import clicks_px  # noqa: E402
from bench.common import data_dir, report_worker, worker_args  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # the scripts beside this one
from sam_family import build_official  # noqa: E402

args = worker_args()
name = args.models
state = torch.load(args.ckpt, map_location="cpu", weights_only=True)
official = os.environ.get("ISEG_OFFICIAL_DIR") or str(data_dir().parent / "reference" / "official")
model, predictor_class, wrap = build_official(name, official)
# our file holds every key the image path uses: SAM 2's video parts and MobileSAM's ImageNet head stay random
model.load_state_dict(state.get("model", state), strict=name.startswith("sam_hq_"))
predictor = predictor_class(model)
extra = {"hq_token_only": False} if name.startswith("sam_hq_") else {}


def encoder(x):
    model.forward_image(x) if hasattr(model, "forward_image") else model.image_encoder(x)


image = np.load(args.image)
pts = clicks_px(*image.shape[:2])
frame = torch.zeros(1, 3, 1024, 1024)
out = {"encode": [], "encoder": [], "click1": [], "click3": []}
with torch.inference_mode():
    for r in range(args.rounds + 1):
        t0 = time.perf_counter()
        predictor.set_image(image)
        t_enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        encoder(frame)
        t_net = time.perf_counter() - t0
        t0 = time.perf_counter()
        masks, scores, low = predictor.predict(np.array([pts[0][:2]]), np.array([1]), multimask_output=True, **extra)
        t1 = time.perf_counter() - t0
        prev = low[int(np.argmax(scores))][None]
        t0 = time.perf_counter()
        m3, _, _ = predictor.predict(np.array([p[:2] for p in pts]), np.array([int(p[2]) for p in pts]),
                                     mask_input=prev, multimask_output=False, **extra)
        t3 = time.perf_counter() - t0
        assert m3.shape[-2:] == image.shape[:2]
        if r:
            for key, t in (("encode", t_enc), ("encoder", t_net), ("click1", t1), ("click3", t3)):
                out[key].append(t * 1e3)
report_worker(out)
