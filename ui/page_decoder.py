"""The page's decoder, server side: what the browser needs to answer clicks itself with a SAM-family model.

For a tab whose model has a decoder graph (``Segmenter.page_graph``: the SAM family's, made by
iseg_core/models/sam/onnx_decoder.py) the canvas's value carries a ``decoder`` entry: the URLs of the pinned
onnxruntime-web files and of our worker script (public static files), of the model's graph (exported the first
time a model version is used, in one thread; a view waits for it up to ``EXPORT_WAIT`` seconds, the server
decodes meanwhile), and of the open image's arrays (raw float16 files by default, written once per image and
model, served to the tab's client only, like frames), with the frame geometry, the threshold, the colour, and
the current object's prompts as the server holds them. The page decodes while the graph and arrays are loaded
and the object is ``live`` (clicks, boxes and scribbles only: a brush stroke, a contour, ZoomIn or a proposal
being refined hand it back to the server until the object is finished or cleared).

``ISEG_PAGE_DECODER=0`` turns it off (every click decoded on the server, as before).
"""
from __future__ import annotations

import functools
import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from pathlib import Path
from typing import Dict, List, Optional

import gradio as gr

from iseg_core.prompts import prompt_to_dict
from iseg_core.weights import page_graph_dir

from .canvas import ServedFiles, file_url

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
VENDOR = HERE / "vendor" / "onnxruntime-web"
STATIC = HERE / "static"
PAGE_PROMPTS = ("click", "box", "scribble")  # what the page's decoder draws (AnnotationSession.can_defer)
EXPORT_WAIT = 15.0  # seconds a view waits for a model's first export (the server decodes meanwhile)


def enabled() -> bool:
    """On unless ``ISEG_PAGE_DECODER=0``, and only with the runtime's files fetched (their digests checked once)."""
    if os.environ.get("ISEG_PAGE_DECODER", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return _runtime_here()


@functools.lru_cache(maxsize=1)
def _runtime_here() -> bool:
    from .vendor.fetch_onnxruntime_web import present

    if present(VENDOR):
        return True
    log.warning("the page's decoder is off: onnxruntime-web is not in %s (python ui/vendor/fetch_onnxruntime_web.py "
                "fetches it); the server decodes every click", VENDOR)
    return False


def array_dtype() -> str:
    """How the image's arrays travel: ``float16`` (default: half the bytes; measured on GrabCut 124080 with
    random weights, 0.001-0.008 % of mask pixels differ from float32 and the low-res logits by at most 4e-4,
    docs/BENCHMARKS.md) or ``float32`` (``ISEG_PAGE_ARRAYS=float32``: the server's numbers exactly)."""
    value = os.environ.get("ISEG_PAGE_ARRAYS", "float16").strip().lower()
    if value not in ("float16", "float32"):
        raise ValueError(f"ISEG_PAGE_ARRAYS must be float16 or float32, not {value!r}")
    return value


class PageDecoder:
    """Exports (once per model version, in one thread) and per-image array files (the newest ``keep``)."""

    def __init__(self, folder: Optional[Path] = None, keep: int = 24):
        self.folder = Path(folder) if folder is not None else page_graph_dir()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.files = ServedFiles("iseg-embeddings-", keep=3 * keep)  # (at most three arrays an image)
        gr.set_static_paths([VENDOR, STATIC, self.folder])
        self._exports: Dict[str, Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iseg-onnx-export")
        self._arrays: "OrderedDict[tuple, tuple]" = OrderedDict()  # (model, image, client) -> (entries, paths)
        self._lock = threading.Lock()
        self.failed: Dict[str, str] = {}  # model key -> why its export failed (the server decodes for it)
        self.dtype = array_dtype()

    def graph(self, model, wait: float = 0.0) -> Optional[Path]:
        """The model's graph file when it is ready; the first call starts its export and waits for it up to
        ``wait`` seconds (after that the server decodes until a later view finds it ready)."""
        graph = model.page_graph() if enabled() else None
        if graph is None:
            return None
        key = graph.key
        with self._lock:
            fut = self._exports.get(key)
            if fut is None:
                fut = self._exports[key] = self._pool.submit(graph.export, self.folder)
        if wait:
            futures_wait([fut], timeout=wait)
        if not fut.done():
            return None
        if fut.exception() is not None:
            if key not in self.failed:
                self.failed[key] = str(fut.exception())
                log.warning("no page decoder for %s: %s", model.name, fut.exception())
            return None
        return fut.result()

    def arrays(self, model, embedding, image_key: str, owner: str) -> List[dict]:
        """The image's arrays as files only ``owner`` may fetch: ``[{name, url, dims, dtype, bytes}]``."""
        graph = model.page_graph()
        key = (graph.key, image_key, owner)
        with self._lock:
            hit = self._arrays.get(key)
        if hit is not None and all(Path(p).exists() for p in hit[1]):  # (the oldest files are deleted)
            return hit[0]
        out, paths = [], []
        for name, a in graph.arrays(embedding).items():
            a = a.astype(self.dtype)
            path = self.files.put(a.tobytes(), name, "." + self.dtype, owner)
            out.append({"name": name, "url": file_url(path), "dims": list(a.shape), "dtype": self.dtype,
                        "bytes": a.nbytes})
            paths.append(path)
        with self._lock:
            self._arrays[key] = (out, paths)
            while len(self._arrays) > self.files.keep:
                self._arrays.popitem(last=False)
        return out

    def config(self, model, session, options, current_colour) -> Optional[dict]:
        """The page's decoder settings for a tab (None: the server decodes), without the per-client arrays
        (:meth:`value` adds them)."""
        if session.image is None or session.display is None:
            return None
        graph = self.graph(model, wait=EXPORT_WAIT)  # a model version's first use exports it (seconds, once)
        if graph is None:
            return None
        emb = session.predictor._embedding
        if emb is None or session.zoom is not None or emb.model_key != model.cache_key:
            return None
        # the prompts as the stored log writes them (the page builds the same dicts)
        prompts = [prompt_to_dict(p) for p in session.prompts]
        live = (session.base is None and session.seed_logits is None
                and all(p["type"] in PAGE_PROMPTS for p in prompts))
        page_graph = model.page_graph()
        return {
            "worker": file_url(STATIC / "decoder_worker.js"), "ort": file_url(VENDOR / "ort.wasm.min.js"),
            "base": file_url(VENDOR) + "/", "model": file_url(graph),
            "image": f"{page_graph.key}:{session.image_key}", "meta": page_graph.meta(emb),
            "frame": list(session.display.display_size), "threshold": float(session.effective_threshold),
            "colour": list(current_colour), "opacity": float(options.opacity), "contours": bool(options.contours),
            "live": bool(live), "prompts": prompts if live else [], "deferred": bool(session.deferred),
            "_model": model, "_embedding": emb, "_image_key": session.image_key,
        }

    def value(self, config: Optional[dict], owner: str) -> Optional[dict]:
        """``config`` for one client: its arrays' URLs added, the server-side objects removed."""
        if not config:
            return None
        out = {k: v for k, v in config.items() if not k.startswith("_")}
        out["arrays"] = self.arrays(config["_model"], config["_embedding"], config["_image_key"], owner)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


_PAGE: Optional[PageDecoder] = None


def page_decoder() -> PageDecoder:
    """The process's page decoder (made on first use: its folders are served from then on)."""
    global _PAGE
    if _PAGE is None:
        _PAGE = PageDecoder()
    return _PAGE
