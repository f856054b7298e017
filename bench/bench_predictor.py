"""Predictor speed against the official SAM implementation, side by side in one process.

Both sides carry the same seeded random ViT-B weights (the official model's state dict is saved and loaded
into ours through ``load_model``), see the same image and the same prompts.

    python bench/bench_predictor.py [--encode-runs 3] [--click-runs 30] [--size 4000x3000]

Prints median and p95 (ms) per row and the ratio ours / official (below 1 = faster).
"""
from __future__ import annotations

import argparse
import importlib
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import data_dir, print_table, summary, time_ms  # noqa: E402
from iseg_core import Click, EmbeddingCache, Predictor, load_model  # noqa: E402
from iseg_core.runtime import bf16_is_fast, tune_allocator  # noqa: E402

DATA = data_dir()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encode-runs", type=int, default=3)
    ap.add_argument("--bf16-runs", type=int, default=None,
                    help="bf16 encoder runs (default: encode-runs where the CPU has native bf16, else 1 without warm-up)")
    ap.add_argument("--official-bf16", choices=["auto", "1", "0"], default="auto",
                    help="time the official encoder under bf16 autocast (auto: only with native bf16; emulated it "
                         "runs for many minutes)")
    ap.add_argument("--default-allocator", action="store_true", help="skip iseg_core.runtime.tune_allocator()")
    ap.add_argument("--click-runs", type=int, default=30)
    ap.add_argument("--size", default="4000x3000", help="WxH of the test image (a real photo, resized)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    tuned = False if args.default_allocator else tune_allocator()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    w, h = map(int, args.size.split("x"))
    photo = np.array(Image.open(DATA / "GrabCut" / "data_GT" / "124080.jpg").convert("RGB"))
    image = cv2.resize(photo, (w, h), interpolation=cv2.INTER_CUBIC)

    sam_mod = importlib.import_module("segment_anything")
    torch.manual_seed(0)
    ref = sam_mod.sam_model_registry["vit_b"](checkpoint=None).eval()
    ckpt = Path(tempfile.mkdtemp()) / "sam_vit_b_random.pth"
    torch.save(ref.state_dict(), ckpt)
    ours32 = load_model("sam_vit_b", checkpoint=ckpt, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the no-native-bf16 warning: this bench measures it
        ours16 = load_model("sam_vit_b", checkpoint=ckpt, device="cpu", dtype=torch.bfloat16)
    ref_pred = sam_mod.SamPredictor(ref)
    ref_pred16 = sam_mod.SamPredictor(ref)  # encoder under autocast; only timed, never decoded from
    fast16 = bf16_is_fast("cpu")
    bf16_runs = args.bf16_runs or (args.encode_runs if fast16 else 1)
    bf16_warmup = 1 if fast16 else 0

    print(f"# bench_predictor: SAM ViT-B, random weights, {w}x{h} image, torch {torch.__version__}, "
          f"{args.threads} threads, {platform.processor() or platform.machine()}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {fast16}, allocator tuned: {tuned}")
    rows = []

    def encode_row(predictor, runs, warmup):
        def run():
            predictor.cache.clear()  # a fresh image each time: hash + preprocess + encoder
            predictor.set_image(image)
        return summary(time_ms(run, runs, warmup=warmup))

    def ref_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref_pred16.set_image(image)

    with torch.inference_mode():
        ref_enc = summary(time_ms(lambda: ref_pred.set_image(image), args.encode_runs))
        run_ref16 = args.official_bf16 == "1" or (args.official_bf16 == "auto" and fast16)
        ref_enc16 = summary(time_ms(ref_bf16, bf16_runs, warmup=bf16_warmup)) if run_ref16 else None
    p32 = Predictor(ours32, EmbeddingCache())
    p16 = Predictor(ours16, EmbeddingCache())
    enc32 = encode_row(p32, args.encode_runs, 1)
    enc16 = encode_row(p16, bf16_runs, bf16_warmup)
    rows.append(("set_image fp32 (ours) vs official fp32", *enc32, *ref_enc, enc32[0] / ref_enc[0]))
    if ref_enc16 is not None:
        rows.append(("set_image bf16 encoder (ours) vs official under bf16 autocast", *enc16, *ref_enc16, enc16[0] / ref_enc16[0]))
    rows.append(("set_image bf16 (ours) vs official fp32", *enc16, *ref_enc, enc16[0] / ref_enc[0]))
    cached = summary(time_ms(lambda: p32.set_image(image), 10))
    rows.append(("set_image, embedding cached (ours)", *cached, "-", "-", "-"))

    p32.set_image(image)
    with torch.inference_mode():
        ref_pred.set_image(image)
    x, y = w * 0.5, h * 0.5
    pts = np.array([[x, y], [w * 0.3, h * 0.6], [w * 0.7, h * 0.2]])
    labels = np.array([1, 0, 1])
    first = p32.predict([Click(x, y)])
    _, s, lr = ref_pred.predict(np.array([[x, y]]), np.array([1]), multimask_output=True)
    ref_prev = lr[int(np.argmax(s))][None]
    clicks = [Click(*pts[0]), Click(*pts[1], positive=False), Click(*pts[2])]

    with torch.inference_mode():
        cases = [
            ("1 click (multimask, best kept), mask at full size",
             lambda: p32.predict([Click(x, y)]),
             lambda: ref_pred.predict(np.array([[x, y]]), np.array([1]), multimask_output=True)),
            ("3 clicks + previous logits, mask at full size",
             lambda: p32.predict(clicks, prev_logits=first.logits),
             lambda: ref_pred.predict(pts, labels, mask_input=ref_prev, multimask_output=False)),
        ]
        for label, ours_fn, ref_fn in cases:
            o = summary(time_ms(ours_fn, args.click_runs, warmup=3))
            r = summary(time_ms(ref_fn, args.click_runs, warmup=3))
            rows.append((f"predict: {label}", *o, *r, o[0] / r[0]))
        disp = summary(time_ms(lambda: p32.predict(clicks, prev_logits=first.logits, mask_size=(768, 1024)), args.click_runs, warmup=3))
        rows.append(("predict: 3 clicks + prev, mask at display size 1024x768 (ours)", *disp, "-", "-", "-"))
        emb = p32._current()
        dec = summary(time_ms(lambda: ours32.decode(emb, clicks, ours32.check_logits(first.logits)), args.click_runs, warmup=3))
        rows.append(("decoder only, 3 clicks + prev (ours)", *dec, "-", "-", "-"))

    print_table(rows, ["what", "ours median ms", "ours p95 ms", "official median ms", "official p95 ms", "ratio (median)"])


if __name__ == "__main__":
    main()
