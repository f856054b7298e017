"""Click-to-overlay latency in a real browser: Debian's chromium (Playwright) clicks on the studio's image and
waits until the new overlay is decoded and shown.

    python bench/bench_ui.py [--clicks 20] [--models classical,sam_vit_b] [--windows 1500x1000,1100x800]
                             [--paths page,server] [--rtt 0,100]

``--paths``: for a SAM-family model, each image is clicked twice over in the same page: decoded by the page's
decoder (onnxruntime-web in a web worker; timed from the mouse click to the overlay drawn on the canvas) and by
the server (the page's decoder switched off; timed to the new frame loaded), side by side, the ratio against the
server's row. ``--rtt``: network round-trip times (ms) chromium adds to every request (its network emulation), as
a Space's visitors have them: the server's path pays them on every click, the page's only when an image opens.

For each model (``sam_vit_b`` with random weights: the decoder's cost does not depend on them) and each image
(a 2 MP and a 12 MP resize of GrabCut 124080), the image is opened (encoded once, not timed; the studio's
background encoding of the next image is waited for, as it competes for the CPU), then ``--clicks``
positive clicks are made one after the other, each timed from the mouse click to the overlay's ``load``.
Also printed: the server-side part of the same clicks (the studio's handler: decoding, when the server decodes,
and the frame's rendering), timed in this process. Each browser window size is its own page: the page asks for a display copy as large as its canvas
(1024 to 2048 px on the long side; the "display" column), which is what a click decodes, renders and ships.
Ratios: against the server's path for the same model, image, window and round trip.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import data_dir, print_table, summary  # noqa: E402
from iseg_core.runtime import tune_allocator  # noqa: E402
from storage import Store  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from ui import Studio, build_app, launch_options  # noqa: E402

ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
SIZES = {"2 MP": (1632, 1224), "12 MP": (4000, 3000)}


def _images(tmp: Path):
    photo = np.array(Image.open(data_dir() / "GrabCut" / "data_GT" / "124080.jpg").convert("RGB"))
    paths = {}
    for label, (w, h) in SIZES.items():
        p = tmp / f"photo_{w}x{h}.png"
        Image.fromarray(cv2.resize(photo, (w, h), interpolation=cv2.INTER_CUBIC)).save(p, compress_level=1)
        paths[label] = p
    return paths


def _wait_new_overlay(page, old_src: str) -> None:
    page.wait_for_function("""old => { const e = document.querySelector('#canvas img');
        return e && e.getAttribute('src') !== old && e.complete && e.naturalWidth > 0; }""", arg=old_src, timeout=120000)


def _timed(studio) -> list:
    """The studio's gesture handler timed (decode + frame rendering, per click), into the list returned."""
    times, real = [], studio.gesture

    def gesture(*a, **k):
        t0 = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            times.append((time.perf_counter() - t0) * 1e3)

    studio.gesture = gesture
    return times


def _clicks(page, n: int, path: str = "server", handler_times=None):
    """``n`` timed clicks (after one warm-up), a fresh object every 5 -> (click-to-overlay ms, the studio's
    handler ms for the click (decode + frame rendering; ``handler_times`` from :func:`_timed`), the frame's long
    side in px). ``path="page"``: drawn by the page's decoder
    (the server's answer to each click is waited for, untimed, before the next, as a person's pace would)."""
    e2e, server, shown = [], [], 0
    page.evaluate("off => { window.__isegDecoderOff = off; }", path != "page")
    for i in range(n + 1):
        if i % 5 == 0:  # a fresh object every 5 clicks (a lone click and 4 refinements)
            page.locator("#clear_btn").click()  # the image may not change: wait on the status
            page.wait_for_function("() => /Cleared/.test(document.querySelector('#status').innerText)",
                                   timeout=60000)
        img = page.locator("#canvas img")
        for _ in range(600):  # the canvas re-renders its <img> when a new frame arrives
            nw, nh = img.evaluate("e => e.complete ? [e.naturalWidth, e.naturalHeight] : [0, 0]")
            if nw:
                break
            time.sleep(0.05)
        shown = max(nw, nh)
        box = img.bounding_box()  # the canvas sizes the frame's box to the frame: box and picture coincide
        s = box["width"] / nw
        x, y = nw * (0.40 + 0.04 * (i % 5)), nh * (0.45 + 0.03 * (i % 3))
        old = img.get_attribute("src")
        drawn = page.evaluate("() => window.__isegDecoder.drawn")
        handled = len(handler_times)
        t0 = time.perf_counter()
        page.mouse.click(box["x"] + x * s, box["y"] + y * s)
        if path == "page":
            page.wait_for_function("n => window.__isegDecoder.drawn > n", arg=drawn, timeout=120000)
            dt = (time.perf_counter() - t0) * 1e3
            page.wait_for_function("() => { const d = window.__isegDecoder; return d.cfg && d.cfg.seq === d.seq; }",
                                   timeout=120000)
            if "decoded in the page" not in page.inner_text("#status"):
                raise RuntimeError("the page's decoder did not answer: " + page.inner_text("#status"))
        else:
            _wait_new_overlay(page, old)
            dt = (time.perf_counter() - t0) * 1e3
        for _ in range(200):  # the handler's time is recorded as it returns
            if len(handler_times) > handled:
                break
            time.sleep(0.01)
        if i:  # the first click warms up
            e2e.append(dt)
            server.append(sum(handler_times[handled:]))
    return e2e, server, shown


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--models", default="classical,sam_vit_b")
    ap.add_argument("--windows", default="1500x1000,1100x800", help="browser window sizes, WxH, comma-separated")
    ap.add_argument("--paths", default="page,server", help="page (the page's decoder) and / or server")
    ap.add_argument("--rtt", default="0", help="round-trip times (ms) added by chromium, comma-separated")
    args = ap.parse_args()
    tune_allocator()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="iseg-bench-ui-"))
    paths = _images(tmp)
    rows = []
    for model_name in args.models.split(","):
        store = Store(f"sqlite:///{tmp / f'{model_name}.db'}", tmp / "images")
        studio = Studio(store, "bench", model_name, checkpoint="random",
                        export_dir=tmp / "exports")
        for p in paths.values():
            store.add_image(studio.project, p)
        handler_times = _timed(studio)
        demo = build_app(studio)
        _, url, _ = demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                                        quiet=True, **launch_options(demo))
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
                for window, rtt in [(w, r) for w in args.windows.split(",") for r in args.rtt.split(",")]:
                    w, h = (int(v) for v in window.split("x"))
                    page = browser.new_page(viewport={"width": w, "height": h})
                    page.on("console", lambda m: m.type in ("error", "warning") and print("page:", m.text[:300],
                                                                                           file=sys.stderr))
                    if float(rtt):
                        cdp = page.context.new_cdp_session(page)
                        cdp.send("Network.enable")
                        cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": float(rtt),
                                                                     "downloadThroughput": -1, "uploadThroughput": -1})
                    page.goto(url, wait_until="load")
                    page.wait_for_selector("#canvas img", timeout=600000)
                    # the studio encodes the next image in the background; clicks are timed once that is done
                    deadline = time.monotonic() + 600
                    while not all(studio.manager(model_name).is_encoded(i.sha256)
                                  for i in studio.store.images_of(studio.project)):
                        if time.monotonic() > deadline:
                            raise RuntimeError("background encoding did not finish in 600 s")
                        time.sleep(0.5)
                    for k, label in enumerate(SIZES):
                        if k:  # next image (encoded in the background meanwhile, or now)
                            old = page.locator("#canvas img").get_attribute("src")
                            page.locator("#next_btn").click()
                            _wait_new_overlay(page, old)
                            page.wait_for_function(
                                "() => /photo_4000/.test(document.querySelector('#status').innerText)", timeout=600000)
                        page_ok = page.evaluate("() => !!(window.__isegDecoder && window.__isegDecoder.cfg)")
                        if page_ok:
                            page.wait_for_function("() => window.__isegDecoder.loaded === window.__isegDecoder.cfg.image",
                                                   timeout=600000)
                        measured = {}
                        for path in [p for p in args.paths.split(",") if p == "server" or page_ok]:
                            measured[path] = _clicks(page, args.clicks, path, handler_times)
                        base = summary(measured["server"][0])[0] if "server" in measured else None
                        for path, (e2e, server, shown) in measured.items():
                            med, p95 = summary(e2e)
                            smed, _ = summary(server)
                            rows.append((model_name if model_name == "classical" else f"{model_name} (random weights)",
                                         label, window, rtt, shown, path, med, p95, smed,
                                         med / base if base else float("nan")))
                    page.close()
                browser.close()
        finally:
            demo.close()
            store.close()
    print(f"\nclick -> overlay shown in chromium, {args.clicks} clicks per row (ms); ratio: against the server's "
          "path for the same model, image, window and round trip\n")
    print_table(rows, ["model", "image", "window", "rtt", "display", "decoded by", "median", "p95",
                       "studio ms / click", "ratio"])


if __name__ == "__main__":
    main()
