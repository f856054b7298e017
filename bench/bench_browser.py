"""Image browser benchmark: a project of 10,000 images opens, pages and jumps without loading them all.

    python bench/bench_browser.py [--images 10000] [--runs 5] [--keep DIR]

Fills a SQLite store with ``--images`` small distinct JPEGs (64x48, through ``Store.add_image``, as an upload
would), marks every 7th image done and gives every 3rd an object, then times, ``--runs`` times each:

- open: a new ``Studio`` on the project (what ``python app.py`` does) and the first image opened and drawn
- first page: the Images tab's first page of 48 (one paged query) with thumbnails, cold (thumbnails made: the
  thumbnail folder is emptied before each run) and warm (read from their cache files)
- filtered page: state "done" + a name filter, page 3
- jump: "go to image 9,000" (``open_index(8999)``: one indexed OFFSET query + load + encode + draw)

Reference, same process: listing every image of the project as the studio did before the browser
(``store.images_of``, which it called on each open and once a second while clicking). Median and p95 in ms.

Then, once, in a fresh project of 100 of these images: a COCO file of 10,000 pre-annotated objects (100 per
image) imported in one transaction, and imported again (every object found already there).
"""
from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import print_table, summary  # noqa: E402
from storage import Store  # noqa: E402


def fill(store: Store, n: int) -> None:
    project = store.project("big")
    have = store.image_count(project)[0]
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for i in range(have, n):
        pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=80)
        rec = store.add_image(project, buf.getvalue(), file_name=f"frame_{i:05d}.jpg")
        mask = np.zeros((48, 64), bool)
        mask[10:30, 20:40] = True
        if i % 3 == 0:
            store.save_annotations(rec.id, [dict(mask=mask, category="thing")], done=i % 7 == 0)
        elif i % 7 == 0:
            store.save_annotations(rec.id, [], done=True)
        if (i + 1) % 1000 == 0:
            print(f"  filled {i + 1} images ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)


def time_import(store: Store) -> None:
    from storage.coco import import_coco

    project = store.project(f"import-{time.time_ns()}")
    images, anns = [], []
    for i, rec in enumerate(store.browse(store.project("big"), limit=100).rows):
        store.add_image(project, rec.image.path, file_name=rec.image.file_name)
        images.append({"id": i + 1, "file_name": rec.image.file_name, "width": 64, "height": 48})
        for k in range(100):
            y, x = divmod(k, 10)
            anns.append({"id": i * 100 + k + 1, "image_id": i + 1, "category_id": 1 + k % 3,
                         "segmentation": [[6.0 * x, 4.0 * y, 6.0 * x + 4, 4.0 * y, 6.0 * x + 4, 4.0 * y + 3]]})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]}
    rows = []
    for what in ("import 10,000 objects (one transaction)", "the same file again (all already there)"):
        t = time.perf_counter()
        r = import_coco(store, project, coco)
        rows.append((what, (time.perf_counter() - t) * 1e3, r.annotations_added, r.annotations_existing))
    print()
    print_table(rows, ["COCO pre-annotations", "ms", "added", "already there"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", help="a folder to keep (and reuse) the filled store in")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    from ui import Studio

    home = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="iseg-bench-browser-"))
    home.mkdir(parents=True, exist_ok=True)
    store = Store(f"sqlite:///{home / 'iseg.db'}", home / "images")
    t0 = time.perf_counter()
    fill(store, args.images)
    print(f"store: {args.images} images in {home} (filled in {time.perf_counter() - t0:.0f} s)\n")
    jump = min(9_000, args.images) - 1
    thumbs = home / "images" / "thumbs"
    rows = {k: [] for k in ("open", "first page, cold thumbnails", "first page, warm thumbnails",
                            "filtered page (done, name '_0', page 3)", f"jump to image {jump + 1}",
                            "reference: list every image")}
    studio = None
    for run in range(args.runs):
        if studio is not None:
            studio.close()
        t = time.perf_counter()
        studio = Studio(store, "big", "classical", export_dir=home / "exports")
        v = studio.open_index(f"s{run}", 0)
        assert v.image is not None and v.info["queue"]["total"] == args.images
        rows["open"].append((time.perf_counter() - t) * 1e3)

        shutil.rmtree(thumbs, ignore_errors=True)
        for key in ("first page, cold thumbnails", "first page, warm thumbnails"):
            t = time.perf_counter()
            page = studio.browse("all", "", 1)
            files = [studio.thumbnail(r.image) for r in page.rows]
            rows[key].append((time.perf_counter() - t) * 1e3)
            assert len(files) == 48 and all(files) and page.total == args.images

        t = time.perf_counter()
        page = studio.browse("done", "_0", 3)
        [studio.thumbnail(r.image) for r in page.rows]
        rows["filtered page (done, name '_0', page 3)"].append((time.perf_counter() - t) * 1e3)
        assert all(r.state == "done" and "_0" in r.image.file_name for r in page.rows)

        t = time.perf_counter()
        v = studio.open_index(f"s{run}", jump)
        rows[f"jump to image {jump + 1}"].append((time.perf_counter() - t) * 1e3)
        assert v.info["file_name"] == f"frame_{jump:05d}.jpg", v.info["file_name"]

        t = time.perf_counter()
        listed = store.images_of(studio.project)
        rows["reference: list every image"].append((time.perf_counter() - t) * 1e3)
        assert len(listed) == args.images
    ref = summary(rows["reference: list every image"])[0]
    table = []
    for name, xs in rows.items():
        med, p95 = summary(xs)
        table.append((name, med, p95, med / ref))
    print(f"{args.images} images, {args.runs} runs each, 2 threads; ms")
    print_table(table, ["step", "median ms", "p95 ms", "ratio to listing every image"])
    studio.close()
    time_import(store)
    store.close()
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
