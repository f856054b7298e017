"""Storage benchmark: how long an accepted mask takes to be durably saved, and COCO export / import of DAVIS.

    python bench/bench_storage.py [--saves 200] [--no-postgres]

Rows: save_annotation of an 854x480 DAVIS mask (RLE encode + one committed transaction, fsync'd) on SQLite
(synchronous=FULL, the default) and, side by side in the same run, SQLite with synchronous=NORMAL and a
throwaway PostgreSQL server (tests/pg_server.py) when its binaries are installed; then export_coco and
import_coco of all 345 DAVIS ground-truth masks. Ratios are against the default SQLite row.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import event

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import data_dir  # noqa: E402
from storage import Database, Store, export_coco, import_coco  # noqa: E402


def _p95(xs):
    return float(np.percentile(xs, 95))


def _time_saves(store: Store, n: int, gts):
    project = store.project("bench")
    img = store.add_image(project, data_dir() / "DAVIS" / "img" / "000.jpg")
    times = []
    for i in range(n):
        mask = gts[i % len(gts)]
        t = time.perf_counter()
        store.save_annotation(img.id, mask, "object", author="bench", model=("classical", "bench"),
                              interactions=[{"type": "click", "x": 10, "y": 10, "positive": True}], seconds=1.0)
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--saves", type=int, default=200)
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    davis = data_dir() / "DAVIS"
    names = sorted(p.stem for p in (davis / "gt").glob("*.png"))
    gts = [np.array(Image.open(davis / "gt" / f"{n}.png")) > 0 for n in names[:20]]
    tmp = Path(tempfile.mkdtemp(prefix="iseg-bench-"))
    backends = {"sqlite (synchronous=FULL, default)": f"sqlite:///{tmp / 'full.db'}"}
    normal = Database(f"sqlite:///{tmp / 'normal.db'}")

    @event.listens_for(normal.engine, "connect")
    def _normal(dbapi_conn, _rec):
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    normal.engine.dispose()
    backends["sqlite (synchronous=NORMAL)"] = normal
    server = None
    if not args.no_postgres:
        from tests.pg_server import PostgresServer, find_bin

        if find_bin() is not None:
            server = PostgresServer(find_bin()).start()
            backends["postgresql 15 (loopback)"] = server.create_database("bench")
        else:
            print("PostgreSQL binaries not found: its row is left out")
    rows = []
    try:
        for k, (label, url) in enumerate(backends.items()):
            store = Store(url, tmp / "images")
            times = _time_saves(store, args.saves, gts)
            rows.append((label, statistics.median(times) * 1e3, _p95(times) * 1e3))
            if k == 0:
                coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}
                from pycocotools import mask as mask_utils

                for i, n in enumerate(names, start=1):
                    gt = np.array(Image.open(davis / "gt" / f"{n}.png")) > 0
                    rle = mask_utils.encode(np.asfortranarray(gt.astype(np.uint8)))
                    coco["images"].append({"id": i, "file_name": f"{n}.jpg", "width": gt.shape[1], "height": gt.shape[0]})
                    coco["annotations"].append({"id": i, "image_id": i, "category_id": 1,
                                                "segmentation": {"size": list(gt.shape), "counts": rle["counts"].decode()}})
                t = time.perf_counter()
                import_coco(store, store.project("davis"), coco, davis / "img")
                t_import = time.perf_counter() - t
                t = time.perf_counter()
                export_coco(store, store.project("davis"))
                t_export = time.perf_counter() - t
                t = time.perf_counter()
                res = export_coco(store, store.project("davis"), polygons=True)
                t_poly = time.perf_counter() - t
            store.close()
    finally:
        if server is not None:
            server.stop()
    ref = rows[0][1]
    print(f"\nsave_annotation, 854x480 DAVIS masks, {args.saves} saves each (ms)\n")
    print("| backend | median | p95 | ratio (median) |\n|---|---:|---:|---:|")
    for label, med, p95 in rows:
        print(f"| {label} | {med:.2f} | {p95:.2f} | {med / ref:.2f} |")
    print(f"\nDAVIS, 345 masks on SQLite: import_coco (images hashed and stored, masks validated) {t_import:.2f} s, "
          f"export_coco RLE {t_export:.3f} s, polygons {t_poly:.2f} s ({len(res.warnings)} warnings: holes or tiny parts)")


if __name__ == "__main__":
    main()
