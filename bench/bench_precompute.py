"""Preparing a project: images per second for one process, two torchrun ranks and a local Ray job with two
workers, then the first click on an opened image with and without the store, and what fp16 entries would
change, all in one run.

    python bench/bench_precompute.py [--images 8] [--model mobile_sam] [--clicks 10]

A project of ``--images`` distinct 2 MP images (1632x1224 crops and flips of GrabCut photos) is encoded by
``python -m iseg_core.precompute`` three ways into three empty stores (each run is a fresh process tree: the
model load is inside the time, as a user waits for it; the "encode only" column divides the images by the time
the run itself reports). MobileSAM has random weights saved to a file (every process loads the same version).
On 2 cores the parallel runs share the same two cores: they show the engines' overhead, not a speed-up.

Then, in this process, the studio opens an image from the store (``Embedding from the store``) and, in a studio
without a store, encodes it; each time the image is opened and one click answered. Ratios against the single
process (encoding) and against opening without the store (first click).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import data_dir, print_table, summary  # noqa: E402


def _project(tmp: Path, n: int) -> Path:
    from storage import Store

    photos = sorted((data_dir() / "GrabCut" / "data_GT").glob("*.jpg"))
    db = tmp / "iseg.db"
    store = Store(f"sqlite:///{db}", tmp / "images")
    project = store.project("bench")
    for k in range(n):
        rgb = np.array(Image.open(photos[k % len(photos)]).convert("RGB").resize((1632, 1224), Image.BICUBIC))
        if k >= len(photos):
            rgb = rgb[:, ::-1]
        path = tmp / f"img{k}.png"
        Image.fromarray(np.ascontiguousarray(rgb)).save(path, compress_level=1)
        store.add_image(project, path)
    store.close()
    return db


def _run(tmp: Path, db: Path, out: Path, weights: Path, model: str, *extra, torchrun: int = 0) -> tuple:
    env = dict(os.environ, HF_HUB_OFFLINE="1", ISEG_HOME=str(tmp), ISEG_IMAGE_DIR=str(tmp / "images"))
    head = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={torchrun}"] if torchrun else \
        [sys.executable]
    cmd = head + ["-m", "iseg_core.precompute", "--project", "bench", "--model", model, "--checkpoint",
                  str(weights), "--store", str(out), "--database", f"sqlite:///{db}", *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    inside = max(float(x) for x in re.findall(r"in ([\d.]+) s", r.stdout))
    return wall, inside


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--model", default="mobile_sam")
    ap.add_argument("--clicks", type=int, default=10)
    args = ap.parse_args()
    from iseg_core.models.sam import SAM_CONFIGS, SamNetwork

    tmp = Path(tempfile.mkdtemp(prefix="iseg-bench-pre-"))
    db = _project(tmp, args.images)
    weights = tmp / f"{args.model}.pt"
    torch.manual_seed(0)
    torch.save(SamNetwork(SAM_CONFIGS[args.model]).official_state_dict(), weights)

    rows = []
    ways = [("1 process", (), 0), ("torchrun, 2 ranks", (), 2),
            ("Ray local, 2 workers", ("--ray", "local", "--ray-workers", "2"), 0)]
    ref = None
    for label, extra, ranks in ways:
        wall, inside = _run(tmp, db, tmp / f"store-{ranks}-{len(extra)}", weights, args.model, *extra,
                            torchrun=ranks)
        ref = ref or args.images / wall
        rows.append((label, args.images, wall, args.images / wall, args.images / inside, (args.images / wall) / ref))
    print(f"\nencoding a project of {args.images} 2 MP images with {args.model} into an empty store\n")
    print_table(rows, ["engine", "images", "wall s", "images/s", "images/s (run only)", "ratio"])

    # the first click of an opened image, with and without the store (the studio in this process)
    from iseg_core import load_model
    from iseg_core.embedding_store import EmbeddingStore
    from storage import Store
    from ui import Studio

    model = load_model(args.model, weights, device="cpu")
    timings = {}
    for with_store in (False, True):
        samples = []
        for k in range(min(args.clicks, args.images)):
            store = Store(f"sqlite:///{db}", tmp / "images")
            studio = Studio(store, "bench", args.model, loader=lambda name: model, export_dir=tmp / "ex",
                            embedding_store=EmbeddingStore(tmp / "store-0-0") if with_store else None)
            t0 = time.perf_counter()
            v = studio.open_index("b", k)
            studio.add_click("b", 800, 600)
            samples.append((time.perf_counter() - t0) * 1e3)
            assert ("Embedding from the store" in v.status) == with_store, v.status
            studio.close()
            store.close()
        timings[with_store] = summary(samples)
    base = timings[False][0]
    print("\nopen an image and answer its first click (ms)\n")
    print_table([("encoded on open", *timings[False], 1.0), ("from the store", *timings[True], timings[True][0] / base)],
                ["first click", "median", "p95", "ratio"])

    # what float16 entries would change: bytes, and the masks of the same clicks
    from iseg_core.predictor import Predictor
    from iseg_core.prompts import Click

    rec = Store(f"sqlite:///{db}", tmp / "images")
    images = rec.images_of(rec.project("bench"))
    flips, total, emb_bytes = 0, 0, 0
    for r in images[:4]:
        from iseg_core.image import load_image

        rgb = load_image(r.path).rgb
        p = Predictor(model)
        p.set_image(rgb)
        emb = p._embedding
        half = type(emb)(emb.model_key, emb.original_size, emb.data.half().float(), emb.nbytes, emb.extra)
        emb_bytes = emb.data.numel() * 4
        for x, y in [(800, 600), (400, 300), (1200, 900)]:
            a = p.predict([Click(x, y)]).mask
            p._embedding = half
            b = p.predict([Click(x, y)]).mask
            p._embedding = emb
            flips += int((a != b).sum())
            total += a.size
    rec.close()
    print(f"\nfloat16 entries: {emb_bytes / 2e6:.1f} MB instead of {emb_bytes / 1e6:.1f} MB per image; the same "
          f"clicks' masks differ in {flips} of {total} pixels ({flips / total:.2e})")


if __name__ == "__main__":
    main()
