"""``python -m iseg_core.eval``: the standard interactive-segmentation benchmark on one dataset.

    python -m iseg_core.eval --model classical --dataset grabcut --root ../shared/data/GrabCut --out results.json
    python -m iseg_core.eval --model sam_vit_b --checkpoint hub --dataset davis --root DAVIS --limit 10

Prints the protocol's table (NoC@85/90/95, NoF@85/90/95, mIoU@1/5, seconds per click) and writes every
object's per-click IoU and prompts to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import IsegError
from ..models import list_models, load_model
from ..models.base import logit_to_probability
from ..predictor import Predictor
from ..runtime import tune_allocator
from .datasets import open_dataset
from .interactions import FIRST_INTERACTIONS
from ..geometry import ZoomIn
from .loop import ObjectEvaluator, default_cache, sat_latency
from .metrics import summarize


def threshold_text(model) -> str:
    """The mask threshold the numbers were made at: the model family's own (RITM's lineage 0.49, SAM's logit 0)."""
    return f"prob threshold {logit_to_probability(model.default_threshold):.2f}"


def preprocessing(args, model) -> str:
    """One line that says how the numbers were made (they depend on it)."""
    session = native_session(args, model)
    # a session replaces the studio's frame (see its ZoomIn below); the network and its click maps stay
    seen = (f"{model.config.describe()}; click disks r={model.config.disk_radius:g} px" if session is not None
            else model.preprocessing)
    parts = [seen, f"first interaction: {args.first}", f"max {args.max_clicks} interactions",
             f"target IoU {args.target_iou}", threshold_text(model), "prev mask fed back"]
    parts.append(session.zoom.describe() if session is not None else
                 "ZoomIn (skip 1, x1.4, min 200 px)" if args.zoom_in else "no ZoomIn")
    parts.append("h-flip averaged" if args.flip else "no flip")
    if getattr(model, "hq_token_only", False):
        parts.append("HQ token only")
    return "; ".join(parts)


def native_session(args, model):
    """Click-map models with ``--zoom-in`` run their authors' ZoomIn and flip averaging (``--flip``) through
    their session: RITM's "cvpr" mode (crops resized to long side 400, 600 on DAVIS, from click 2),
    SimpleClick's (every click zoomed, crops squashed to 448 x 448, 672 on DAVIS), MST's (SimpleClick's with
    crops down to 20 px and the clicks outside a crop dropped) or SAIC-IS's (image limited to 1000 px, crops to
    long side 400 / 600 then squashed to 448, from click 2 and from a first contour or stroke); None for every
    other case."""
    from ..models.clickmap import ClickMapConfig, RitmSession, RitmZoomIn
    from ..models.clickmap.mst import MSTConfig
    from ..models.clickmap.segformer import MiTConfig
    from ..models.clickmap.simpleclick import SimpleClickConfig
    from ..models.clickmap.zoom import SaicSession, SaicZoomIn

    # SegNext (a click-map segmenter too) is evaluated by its authors without ZoomIn: the generic one applies
    config = getattr(model, "config", None)
    if not (args.zoom_in and isinstance(config, (ClickMapConfig, SimpleClickConfig, MiTConfig))):
        return None
    davis = args.dataset == "davis"
    if config.multi_input:
        return SaicSession(model, SaicZoomIn(target_size=args.zoom_target or (600 if davis else 400)), flip=args.flip)
    if isinstance(config, MSTConfig):
        zoom = RitmZoomIn(target_size=args.zoom_target or (672 if davis else 448), skip_clicks=-1, square=True,
                          min_crop=20, drop_outside=True)
    elif isinstance(config, SimpleClickConfig):
        zoom = RitmZoomIn(target_size=args.zoom_target or (672 if davis else 448), skip_clicks=-1, square=True)
    else:
        zoom = RitmZoomIn(target_size=args.zoom_target or (600 if davis else 400))
    return RitmSession(model, zoom, flip=args.flip)


def print_table(summary: dict, seconds_per_click: float) -> None:
    keys = ["NoC@85", "NoC@90", "NoC@95", "NoF@85", "NoF@90", "NoF@95", "mIoU@1", "mIoU@5"]
    print("| objects | " + " | ".join(keys) + " | s/click (median) |")
    print("|---:|" + "---:|" * len(keys) + "---:|")
    vals = [f"{summary[k]:.2f}" if isinstance(summary[k], float) else str(summary[k]) for k in keys]
    print(f"| {summary['objects']} | " + " | ".join(vals) + f" | {seconds_per_click:.3f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m iseg_core.eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help=f"one of {', '.join(list_models())}")
    ap.add_argument("--checkpoint", default=None, help="weights file, or 'hub' (SAM); none = random weights")
    ap.add_argument("--dataset", required=True, help="grabcut, berkeley, davis, coco_mval, pascalvoc, sbd, hqseg44k, "
                    "saic_is, folder (images/ + masks/), coco (with --annotations)")
    ap.add_argument("--root", required=True, help="the dataset folder")
    ap.add_argument("--annotations", help="COCO JSON for --dataset coco")
    ap.add_argument("--limit", type=int, default=None, help="only the first N objects")
    ap.add_argument("--max-clicks", type=int, default=20)
    ap.add_argument("--target-iou", type=float, default=0.95)
    ap.add_argument("--all-clicks", action="store_true", help="never stop early (exact mIoU@k curves)")
    ap.add_argument("--first", choices=FIRST_INTERACTIONS, default="click", help="first interaction (then clicks)")
    ap.add_argument("--zoom-in", action="store_true", help="RITM ZoomIn from the second click")
    ap.add_argument("--zoom-target", type=int, default=None,
                    help="click-map models: size of a ZoomIn crop (RITM: long side 400, 600 on DAVIS; SimpleClick: "
                    "square 448, 672 on DAVIS)")
    ap.add_argument("--flip", action="store_true", help="average with the horizontally flipped view")
    ap.add_argument("--boundary-ratio", type=float, default=None, help="also boundary IoU (0.005 SAIC-IS, 0.02 HQ-SAM)")
    ap.add_argument("--sat", action="store_true", help="also SegNext's SAT latency on the first image")
    ap.add_argument("--hq-token-only", action="store_true",
                    help="HQ-SAM: the HQ token's mask alone (its publishers' hq_token_only; default: added to SAM's)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default=None, help="write per-object results as JSON here")
    ap.add_argument("--protocol", choices=("standard", "saic-is"), default="standard",
                    help="saic-is: SAIC-IS's benchmark for its multi-input models (27 orders of contour / stroke / "
                         "click first, 10 interactions, IoU / bIoU means and NoI; its random simulators, seeded)")
    ap.add_argument("--seed", type=int, default=0, help="--protocol saic-is: the simulators' seed")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_allocator()
    try:
        model = load_model(args.model, checkpoint=args.checkpoint, device="cpu" if not torch.cuda.is_available() else None)
        samples = list(open_dataset(args.dataset, args.root, args.annotations))
        if args.hq_token_only:
            if getattr(model, "hq_token_only", None) is None:
                raise IsegError(f"--hq-token-only is HQ-SAM's switch; {args.model} has no HQ token")
            model.hq_token_only = True
    except IsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.limit:
        samples = samples[: args.limit]
    if args.protocol == "saic-is":
        return saic_benchmark(args, model, samples)
    predictor = Predictor(model, default_cache())
    session = native_session(args, model)
    if session is not None and args.first not in session.first_interactions:
        print(f"error: this model's session starts from {' or '.join(session.first_interactions)} "
              f"(--first {session.first_interactions[0]})", file=sys.stderr)
        return 2
    evaluator = ObjectEvaluator(predictor, flip=args.flip and session is None, boundary_ratio=args.boundary_ratio,
                                session=session, zoom_in=ZoomIn() if args.zoom_in and session is None else None)
    target = 1.01 if args.all_clicks else args.target_iou
    runs = []
    t_start = time.perf_counter()
    for i, sample in enumerate(samples):
        try:
            image, gt, ignore = sample.load()
            run = evaluator.run(sample.name, image, gt, ignore, args.max_clicks, target, args.first)
        except IsegError as exc:
            print(f"error: {sample.name}: {exc}", file=sys.stderr)
            return 2
        runs.append(run)
        print(f"[{i + 1}/{len(samples)}] {sample.name}: {len(run.ious)} interactions, final IoU {run.ious[-1]:.3f}",
              file=sys.stderr)
    summary = summarize([r.ious for r in runs], args.max_clicks)
    seconds = [s for r in runs for s in r.seconds]
    spc = float(np.median(seconds))
    summary.update({"seconds_per_click_median": spc, "seconds_per_click_p95": float(np.percentile(seconds, 95)),
                    "encode_seconds_median": float(np.median([r.encode_seconds for r in runs])),
                    "wall_seconds": time.perf_counter() - t_start})
    if args.boundary_ratio:
        summary["mBIoU@5"] = float(np.mean([r.boundary_ious[min(5, len(r.boundary_ious)) - 1] for r in runs]))
    print(f"# {args.model} on {args.dataset} ({args.root}): {preprocessing(args, model)}")
    print_table(summary, spc)
    result = {"model": args.model, "model_version": model.version, "checkpoint": args.checkpoint,
              "dataset": args.dataset, "root": str(args.root), "preprocessing": preprocessing(args, model),
              "max_clicks": args.max_clicks, "target_iou": target, "first": args.first, "zoom_in": args.zoom_in,
              "flip": args.flip, "summary": summary, "objects": [r.to_json() for r in runs],
              "machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}}
    if args.sat and samples:
        image, _, _ = samples[0].load()
        result["sat_latency"] = sat_latency(Predictor(model, default_cache()), image)
        s = result["sat_latency"]
        print(f"SAT latency ({samples[0].name}): {s['total_s']:.2f} s total = encode {s['encode_s']:.2f} s + "
              f"{s['clicks']} clicks (median {1e3 * s['click_median_s']:.1f} ms)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


def saic_benchmark(args, model, samples) -> int:
    """``--protocol saic-is``: every object through SAIC-IS's 27 orders in the model's own SAIC-IS session."""
    from tqdm import tqdm

    from ..models.clickmap.zoom import SaicSession, SaicZoomIn
    from .saic_protocol import evaluate_object, print_rows, summarize_runs

    if not getattr(getattr(model, "config", None), "multi_input", False):
        print(f"error: --protocol saic-is evaluates SAIC-IS's multi-input models (clicks, contours, strokes); "
              f"{args.model} takes clicks only", file=sys.stderr)
        return 2
    davis = args.dataset == "davis"
    session = SaicSession(model, SaicZoomIn(target_size=args.zoom_target or (600 if davis else 400)), flip=True)
    interactions = min(args.max_clicks, 10)
    per_object = []
    t_start = time.perf_counter()
    for k, sample in enumerate(tqdm(samples, desc="objects x 27 orders", unit="object")):
        try:
            image, gt, ignore = sample.load()
            per_object.append(evaluate_object(session, image, gt, args.seed + k, interactions, ignore))
        except IsegError as exc:
            print(f"error: {sample.name}: {exc}", file=sys.stderr)
            return 2
    rows = summarize_runs(per_object, interactions)
    print(f"# {args.model} on {args.dataset} ({args.root}): SAIC-IS's benchmark: 27 orders of the first three "
          f"interactions (contour, stroke, click), then clicks, {interactions} interactions, none stopping early; "
          f"its simulators (random; seed {args.seed} + object index); {session.zoom.describe()}; flip averaged; "
          f"prob threshold 0.49; IoU and bIoU (band 0.005 of the diagonal) averaged over interactions and objects, "
          f"mean ± std over orders (%); NoI: interactions to reach the IoU, {interactions} when never")
    print_rows(rows, len(per_object))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "model": args.model, "dataset": args.dataset, "protocol": "saic-is", "seed": args.seed,
            "interactions": interactions, "rows": rows, "wall_seconds": time.perf_counter() - t_start,
            "objects": [[{"order": list(r.order), "ious": r.ious, "boundary_ious": r.boundary_ious, "drawn": r.drawn}
                         for r in obj] for obj in per_object]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
