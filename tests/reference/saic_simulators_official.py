"""SAIC-IS's own interaction simulators on given masks and seeds, for tests/test_saic_simulators.py (test-only).

    python saic_simulators_official.py OFFICIAL_DIR PHOTO.npy OUT_DIR CASES.npz   (writes OUT_DIR/saic_simulators.json)

Its generators live in official/saic_is_protocol/isegm/data and import official/saic_is/isegm/utils: both trees
are copied into one temporary package. Its evaluation's generators (scripts/evaluate_model.py): Clicker with
``PointGenerator(at_max_mask=True, sfc_inner_k=-1, fit_normal=True)``, ``ContourAggregator`` with
``ContourGenerator(one_component=True, convex=True, width=10)``, ``StrokeAggregator`` with
``StrokeGenerator(one_component=True, axis_transform=sine)``, none deterministic: numpy's global generator,
seeded here per case. The elastic deformation needs albumentations 1.3.1 (tests/reference/packages.py).
"""
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

official, out_path, cases_path = sys.argv[1], Path(sys.argv[3]) / "saic_simulators.json", sys.argv[4]
sys.path.insert(0, official)
import shims  # noqa: E402

shims.install()
if not hasattr(np, "RankWarning"):  # numpy 2 moved it; its stroke generator names the old place
    np.RankWarning = np.exceptions.RankWarning
tmp = Path(tempfile.mkdtemp())
shutil.copytree(Path(official) / "saic_is" / "isegm", tmp / "isegm")
shutil.copytree(Path(official) / "saic_is_protocol" / "isegm" / "data", tmp / "isegm" / "data", dirs_exist_ok=True)
sys.path.insert(0, str(tmp))

import isegm.utils.misc  # noqa: E402


def _mask_rectangle(mask):
    """Its get_mask_rectangle, which numpy 2 refuses (``int()`` of a one-element array): the same numbers."""
    rows = np.argwhere(mask.sum(axis=1)).ravel()
    rows = rows if len(rows) else [0]
    cols = np.argwhere(mask.sum(axis=0)).ravel()
    cols = cols if len(cols) else [0]
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return (r0 + r1) // 2, (c0 + c1) // 2, r1 - r0 + 1, c1 - c0 + 1


isegm.utils.misc.get_mask_rectangle = _mask_rectangle
from isegm.data.interaction_generators import (AxisTransformType, ContourGenerator, PointGenerator,  # noqa: E402
                                               StrokeGenerator)
from isegm.inference.clicker import Clicker  # noqa: E402
from isegm.inference.contour_aggregator import ContourAggregator  # noqa: E402
from isegm.inference.stroke_aggregator import StrokeAggregator  # noqa: E402

cases = np.load(cases_path)
results = []
for k in range(int(cases["count"])):
    gt, pred, seed = cases[f"gt{k}"], cases[f"pred{k}"], int(cases[f"seed{k}"])
    gt_int = gt.astype(np.int32)
    row = {}
    np.random.seed(seed)
    clicker = Clicker(gt_mask=gt_int, generator=PointGenerator(at_max_mask=True, sfc_inner_k=-1, fit_normal=True))
    clicks = []
    for _ in range(3):  # three clicks in a row on the same prediction: the clicked pixels leave the distances
        clicker.make_next(pred)
        c = clicker.interactions_list[-1]
        clicks.append([int(c.coords[0]), int(c.coords[1]), bool(c.is_positive)])
    row["clicks"] = clicks
    np.random.seed(seed)
    contours = ContourAggregator(gt_mask=gt_int, generator=ContourGenerator(one_component=True, convex=True, width=10))
    contours.make_next(pred)
    c = contours.interactions_list[-1][0]
    row["contour"] = [bool(c.is_positive), [[int(y), int(x)] for y, x in c.coords]]
    np.random.seed(seed)
    strokes = StrokeAggregator(gt_mask=gt_int, generator=StrokeGenerator(one_component=True,
                                                                         axis_transform=AxisTransformType.sine))
    strokes.make_next(pred)
    s = strokes.interactions_list[-1]
    row["stroke"] = [bool(s.is_positive), [[int(y), int(x)] for y, x in s.coords]]
    row["after"] = float(np.random.random_sample())  # where the generator stands: every draw was the same
    results.append(row)
out_path.write_text(json.dumps(results))
shutil.rmtree(tmp)
