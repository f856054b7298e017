"""The classical engine on GrabCut, DAVIS and ECSSD together, for one or more settings side by side.

    python bench/bench_classical.py                                  # the defaults, all objects of all three
    python bench/bench_classical.py --config base: --config r4:click_radius=0.04 --davis 100 --ecssd 200
    python bench/bench_classical.py --workers 2 --out classical.json

A setting is ``NAME:key=value,key=value`` over :class:`ClassicalConfig` (``NAME:`` alone = the defaults;
tuples as ``a/b``). A
rule is kept only when it helps on all three sets (GrabCut's ignore band, DAVIS objects merged, ECSSD salient
objects); the table gives each set's protocol row and the decode time per click (median and p95; a lone first
click fits colour models on the whole frame and is the slow one). Objects run in ``--workers`` processes, one
torch/OpenCV thread each. Protocol: the standard one (20 clicks, threshold 0.49, previous mask fed back).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import data_dir, print_table  # noqa: E402
from iseg_core.eval.datasets import davis, grabcut, images_and_masks  # noqa: E402
from iseg_core.eval.metrics import summarize  # noqa: E402

SETS = {
    "grabcut": lambda root: list(grabcut(root / "GrabCut")),
    "davis": lambda root: list(davis(root / "DAVIS")),
    "ecssd": lambda root: list(images_and_masks(root / "ECSSD", "images", "ground_truth_mask")),
}


def parse_config(spec: str):
    from iseg_core.models.classical import ClassicalConfig

    name, _, body = spec.partition(":")
    fields = {f.name: f.type for f in dataclasses.fields(ClassicalConfig)}
    values = {}
    for item in filter(None, body.split(",")):
        key, _, raw = item.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown ClassicalConfig field {key!r}; known: {', '.join(fields)}")
        default = getattr(ClassicalConfig(), key)
        if isinstance(default, bool):
            values[key] = raw.lower() in ("1", "true", "yes")
        elif isinstance(default, tuple):  # a/b/c
            values[key] = tuple(float(v) for v in raw.split("/") if v)
        else:
            values[key] = type(default)(raw)
    return name or "defaults", ClassicalConfig(**values)


_worker = {}


def _init(config, set_name: str) -> None:
    import cv2
    import torch

    from iseg_core.cache import EmbeddingCache
    from iseg_core.eval.loop import ObjectEvaluator
    from iseg_core.models.classical import ClassicalSegmenter
    from iseg_core.predictor import Predictor

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    _worker["evaluator"] = ObjectEvaluator(Predictor(ClassicalSegmenter(config=config), EmbeddingCache(64 << 20)))
    _worker["samples"] = SETS[set_name](data_dir())  # samples hold loaders (closures): each worker lists its own


def _run(index: int):
    sample = _worker["samples"][index]
    image, gt, ignore = sample.load()
    run = _worker["evaluator"].run(sample.name, image, gt, ignore, max_clicks=20, target_iou=0.95)
    return run.ious, run.seconds


def evaluate(config, set_name: str, count: int, workers: int):
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(config, set_name)) as pool:
        results = list(pool.map(_run, range(count), chunksize=4))
    seconds = [s for _, secs in results for s in secs]
    out = summarize([ious for ious, _ in results])
    out.update(ms_median=1e3 * float(np.median(seconds)), ms_p95=1e3 * float(np.percentile(seconds, 95)))
    return out, [ious for ious, _ in results]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", default=[], help="NAME:key=value,... (repeatable)")
    ap.add_argument("--sets", default="grabcut,davis,ecssd")
    ap.add_argument("--davis", type=int, default=None, help="only the first N DAVIS objects")
    ap.add_argument("--ecssd", type=int, default=None, help="only the first N ECSSD objects")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", help="write every object's IoU curve per setting and set as JSON")
    args = ap.parse_args(argv)
    configs = [parse_config(c) for c in (args.config or [":"])]
    root = data_dir()
    limits = {"davis": args.davis, "ecssd": args.ecssd}
    sets = {name: SETS[name](root)[: limits.get(name)] for name in args.sets.split(",")}
    rows, dump = [], {}
    for name, config in configs:
        for set_name, samples in sets.items():
            t0 = time.perf_counter()
            s, curves = evaluate(config, set_name, len(samples), args.workers)
            rows.append((name, set_name, s["objects"], s["NoC@85"], s["NoC@90"], s["NoC@95"], s["NoF@90"],
                         s["mIoU@1"], s["mIoU@5"], s["ms_median"], s["ms_p95"]))
            dump.setdefault(name, {"config": dataclasses.asdict(config)})[set_name] = {"summary": s, "ious": curves}
            print(f"# {name} {set_name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    print_table(rows, ["setting", "data", "objects", "NoC@85", "NoC@90", "NoC@95", "NoF@90", "mIoU@1", "mIoU@5",
                       "ms/click median", "ms/click p95"])
    if args.out:
        Path(args.out).write_text(json.dumps(dump))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
