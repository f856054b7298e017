"""Clicks decoded in the page: chromium (Playwright) on the studio with MobileSAM and SAM 2.1 tiny (random
weights). The server's edit handler is held while the page answers, so an overlay that appears was drawn by the
page's decoder (onnxruntime-web in a web worker) before any edit event reached the server; the object saved at
finish (the server's own decode of the same prompts) equals the page's last mask outside the threshold band.
Without WebAssembly, and for a model without a page decoder, the server draws as before."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from tests.conftest import serve_studio
from tests.test_ui_browser import ARGS, CHROMIUM, _status, _to_page, _wait_status, playwright_api

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

OVERLAY = """() => { const c = document.querySelector('#canvas canvas.iseg-mask');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let k = 3; k < d.length; k += 4) if (d[k] > 0) n++; return n; }"""
LAST = """() => { const l = window.__isegDecoder.last; let a = 0; for (const v of l.mask) a += v;
  return { id: l.id, area: a, w: l.w, h: l.h, decodes: l.decodes, serverSeq: l.serverSeq, prompts: l.prompts,
           ms: l.ms, seq: window.__isegDecoder.seq, drawn: window.__isegDecoder.drawn }; }"""


class Held:
    """The studio's canvas-gesture handler held until released, and the model's decoder calls counted."""

    def __init__(self, studio, model):
        self.gate = threading.Event()
        self.gate.set()
        self.decodes = 0
        self.gestures = 0
        real_gesture, real_decode = studio.gesture, model.decode

        def gesture(*a, **k):
            self.gate.wait(60)
            self.gestures += 1
            return real_gesture(*a, **k)

        def decode(*a, **k):
            self.decodes += 1
            return real_decode(*a, **k)

        studio.gesture, model.decode = gesture, decode


STATE = """() => { const d = window.__isegDecoder; const i = document.querySelector('#canvas img');
  const r = i.getBoundingClientRect(); const e = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
  return JSON.stringify({ img: [r.x, r.y, r.width, r.height, i.complete, i.hidden], centre: e && (e.tagName + '.' + e.className),
  events: (window.__dbg || []).filter(x => x.startsWith('ERR') && !x.includes('ResizeObserver')).concat((window.__dbg || []).slice(-4)), nevents: (window.__dbg || []).length, failed: d.failed, loaded: d.loaded,
  drawn: d.drawn, seq: d.seq, req: d.req, shown: d.shown, prompts: d.prompts.length, local: d.local.length,
  cfg: d.cfg && { seq: d.cfg.seq, live: d.cfg.live, deferred: d.cfg.deferred, prompts: d.cfg.prompts.length } }); }"""


def _wait(page, js, arg=None, timeout=60000):
    """wait_for_function, saying the page decoder's state and the status when it times out."""
    try:
        page.wait_for_function(js, arg=arg, timeout=timeout)
    except playwright_api.TimeoutError:
        raise AssertionError(f"timed out on {js}: {page.evaluate(STATE)}; status: {_status(page)!r}") from None


def _drawn(page, n):
    _wait(page, "n => window.__isegDecoder.drawn >= n", n)
    return page.evaluate(LAST)


def _held_gesture(page, held, act, n_drawn):
    """Do ``act`` with the server's handler held: the page draws the overlay on its own; nothing was decoded
    (or even received) by the server before it appeared. Then let the server catch up."""
    held.gate.clear()
    before = (held.decodes, held.gestures)
    act()
    last = _drawn(page, n_drawn)
    assert page.evaluate(OVERLAY) > 0
    assert (held.decodes, held.gestures) == before  # the server has not handled the gesture yet
    assert last["serverSeq"] < last["seq"]  # the page drew before the server's answer to it came
    held.gate.set()
    _wait(page, "() => { const d = window.__isegDecoder; return d.cfg && d.cfg.seq === d.seq; }")
    assert held.decodes == before[0]  # the server kept the prompt without decoding it
    assert "decoded in the page" in _status(page)
    return last


@pytest.mark.parametrize("name", ["mobile_sam", "sam2.1_hiera_tiny"])
def test_clicks_boxes_and_refinements_are_drawn_by_the_page_and_the_saved_object_matches(tmp_path, name):
    torch.manual_seed(0)
    url, studio, store, demo = serve_studio(tmp_path, "page", name)
    model = studio.manager(name).model
    try:
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.add_init_script("""window.__dbg = []; window.addEventListener('error', e => window.__dbg.push('ERR ' + e.message)); for (const t of ['pointerdown', 'pointerup', 'click'])
              document.addEventListener(t, e => window.__dbg.push(t + ':' + e.target.tagName + '.' +
                String(e.target.className).slice(0, 30) + ':' + e.button + ':' + (window.__isegDecoder ? window.__isegDecoder.seq : '-') + ':' + Math.round(performance.now())), true);""")
            page.goto(url, wait_until="load")
            page.wait_for_selector("#canvas img", timeout=60000)
            _wait_status(page, r"astronaut\.jpg", timeout=120000)
            page.wait_for_function("() => window.__isegDecoder && window.__isegDecoder.loaded", timeout=120000)
            held = Held(studio, model)  # (after the export, whose check decodes with PyTorch)
            at = _to_page(page)
            page.evaluate("document.activeElement.blur()")

            # a click; a negative click (right button), the previous mask fed back
            a = _held_gesture(page, held, lambda: page.mouse.click(*at(256, 256)), 1)
            assert a["decodes"] == 1 and a["area"] > 0 and (a["w"], a["h"]) == (512, 512)
            assert page.evaluate("() => document.querySelector('[data-decoder]').dataset.decoder") == "page"
            b = _held_gesture(page, held, lambda: page.mouse.click(*at(80, 90), button="right"), 2)
            assert b["decodes"] == 1 and b["prompts"] == 2  # one decode: the first click's logits were kept
            # Esc clears the object: the overlay goes with it
            page.keyboard.press("Escape")
            _wait_status(page, "Cleared the current object")
            _wait(page, OVERLAY.replace("return n;", "return n === 0;"))

            # a box, dragged
            def drag():
                page.mouse.move(*at(120, 100))
                page.mouse.down()
                page.mouse.move(*at(300, 250), steps=5)
                page.mouse.move(*at(400, 380), steps=5)
                page.mouse.up()
            c = _held_gesture(page, held, drag, 3)
            assert c["prompts"] == 1 and c["area"] > 0
            page.keyboard.press("Escape")
            _wait_status(page, "Cleared the current object")

            # three clicks, each refining the one before (previous mask fed back)
            for k, (x, y) in enumerate([(250, 240), (330, 300), (200, 150)]):
                last = _held_gesture(page, held, lambda x=x, y=y: page.mouse.click(*at(x, y)), 4 + k)
                assert last["prompts"] == k + 1 and last["decodes"] == 1
            assert held.decodes == 0  # not one decode on the server so far

            # the page's last mask, and the server's own decode of the same prompts
            page_mask = np.array(page.evaluate("() => Array.from(window.__isegDecoder.last.mask)"),
                                 np.uint8).reshape(512, 512) > 0
            sess = next(iter(studio.manager(name)._sessions.values()))
            with sess.lock:
                assert sess.deferred and len(sess.prompts) == 3
                sess.settle()
                emb = sess.predictor._embedding
                soft = model.upsample_logits(emb, sess.steps[-1].logits, emb.original_size)
            thr = sess.effective_threshold
            page.keyboard.press("n")
            _wait_status(page, r"Saved object 1")
            assert held.decodes == 3  # at finish: the three prompts, in order
            image = store.images_of(store.project("page"))[0]
            [ann] = store.annotations(image.id)
            saved = ann.mask()
            assert [p["type"] for p in ann.interactions] == ["click", "click", "click"]
            differ = saved != page_mask
            assert differ.sum() <= 0.001 * saved.size  # the same mask ...
            assert np.all(np.abs(soft[differ] - thr) < 1e-3)  # ... but for pixels on the threshold itself
            assert np.array_equal(saved, soft > thr)
            _wait(page, OVERLAY.replace("return n;", "return n === 0;"))
            assert not errors
            browser.close()
    finally:
        demo.close()
        store.close()


def test_without_webassembly_or_a_page_decoder_the_server_draws(tmp_path):
    url, studio, store, demo = serve_studio(tmp_path, "fallback", "mobile_sam")
    try:
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.add_init_script("delete window.WebAssembly")
            page.goto(url, wait_until="load")
            page.wait_for_selector("#canvas img", timeout=60000)
            _wait_status(page, r"astronaut\.jpg", timeout=120000)
            page.wait_for_function("() => window.__isegDecoder && window.__isegDecoder.failed", timeout=60000)
            assert "WebAssembly" in page.evaluate("() => window.__isegDecoder.failed")
            page.evaluate("document.activeElement.blur()")
            page.mouse.click(*_to_page(page)(256, 256))
            _wait_status(page, r"1 prompt\(s\) · mask \d+ px · \d+ ms on the server")
            assert page.evaluate(OVERLAY) == 0  # the frame has the mask; the page draws nothing
            # a model without a page decoder (classical): no decoder settings reach the page at all
            page.locator("#model input").click()
            page.get_by_role("option", name="Classical").first.click()
            page.wait_for_function("() => window.__isegDecoder.cfg === null", timeout=60000)
            browser.close()
    finally:
        demo.close()
        store.close()
