"""iseg: start the app with ``python app.py`` (also the Hugging Face Spaces ``app_file``).

Until the full annotation studio lands in ``ui/``, this serves a minimal click-to-segment page on
``iseg_core``: upload an image, click positive or negative points, see the mask. SAM weights are resolved
through ``iseg_core.weights`` (``weights/`` first, then the Hub); without them the page says what to download
and keeps running.
"""
from __future__ import annotations

import argparse
import os
import threading

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import cv2  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from iseg_core import Click, EmbeddingCache, IsegError, Predictor, load_model  # noqa: E402
from iseg_core.models import default_device  # noqa: E402
from iseg_core.runtime import bf16_is_fast, tune_allocator  # noqa: E402

OVERLAY = np.array([30, 144, 255], np.float32)


class SharedModel:
    """One model per process, loaded on first use; its embedding cache is shared by all sessions."""

    def __init__(self, name: str, checkpoint: str, dtype: torch.dtype):
        self.name, self.checkpoint, self.dtype = name, checkpoint, dtype
        self.cache = EmbeddingCache()
        self._model = None
        self._lock = threading.Lock()

    def predictor(self) -> Predictor:
        with self._lock:
            if self._model is None:
                self._model = load_model(self.name, checkpoint=self.checkpoint, dtype=self.dtype)
        return Predictor(self._model, self.cache)


def overlay(image: np.ndarray, mask: np.ndarray | None, clicks: list) -> np.ndarray:
    out = image.copy()
    if mask is not None and mask.any():
        out[mask] = (0.45 * out[mask] + 0.55 * OVERLAY).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), max(1, image.shape[1] // 500))
    r = max(3, image.shape[1] // 150)
    for c in clicks:
        cv2.circle(out, (int(c.x), int(c.y)), r, (0, 200, 0) if c.positive else (220, 0, 0), -1)
    return out


def build_demo(shared: SharedModel) -> gr.Blocks:
    with gr.Blocks(title="iseg") as demo:
        gr.Markdown("# iseg\nUpload an image, then click on it: positive clicks add to the object, negative clicks remove.")
        status = gr.Markdown()
        with gr.Row():
            upload = gr.Image(type="numpy", label="Image", sources=["upload"], image_mode="RGB")
            view = gr.Image(type="numpy", label="Click here", interactive=False, format="png")
        sign = gr.Radio(["positive", "negative"], value="positive", label="Click type")
        reset = gr.Button("Clear clicks")
        state = gr.State(None)

        def on_upload(image):
            if image is None:
                return None, None, ""
            try:
                predictor = shared.predictor()
                predictor.set_image(np.ascontiguousarray(image[:, :, :3]))
            except IsegError as exc:
                return {"image": image, "error": str(exc)}, image, f"**Cannot segment:** {exc}"
            return {"image": image, "predictor": predictor, "clicks": [], "logits": None}, image, "Image encoded: click on it."

        def on_click(st, kind, evt: gr.SelectData):
            if not st or "predictor" not in st:
                return st, gr.update(), (st or {}).get("error", "Upload an image first.")
            x, y = evt.index
            st["clicks"].append(Click(x, y, positive=(kind == "positive")))
            try:
                pred = st["predictor"].predict(st["clicks"], prev_logits=st["logits"])
            except IsegError as exc:
                st["clicks"].pop()
                return st, gr.update(), f"**{exc}**"
            st["logits"] = pred.logits
            return st, overlay(st["image"], pred.mask, st["clicks"]), f"{len(st['clicks'])} clicks, score {pred.score:.2f}"

        def on_reset(st):
            if st and "predictor" in st:
                st["clicks"], st["logits"] = [], None
                return st, st["image"], ""
            return st, gr.update(), ""

        upload.change(on_upload, upload, [state, view, status], api_visibility="private")
        view.select(on_click, [state, sign], [state, view, status], trigger_mode="multiple", api_visibility="private")
        reset.click(on_reset, state, [state, view, status], api_visibility="private")
    return demo


def main() -> None:
    ap = argparse.ArgumentParser(description="Start the iseg app.")
    ap.add_argument("--model", default=os.environ.get("ISEG_MODEL", "classical"),
                    help="classical (default: no weights, works offline) or sam_vit_b/l/h")
    ap.add_argument("--checkpoint", default=os.environ.get("ISEG_CHECKPOINT"),
                    help="SAM weights: hub (default for SAM), a known name, or a path")
    ap.add_argument("--bf16", choices=["auto", "1", "0"], default=os.environ.get("ISEG_BF16", "auto"),
                    help="image encoder in bfloat16: auto (default) = only where the CPU/GPU runs bf16 natively")
    ap.add_argument("--host", default=os.environ.get("ISEG_HOST", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", os.environ.get("ISEG_PORT", "7860"))))
    args = ap.parse_args()
    if args.checkpoint is None and args.model != "classical":
        args.checkpoint = "hub"
    tune_allocator()
    bf16 = args.bf16 == "1" or (args.bf16 == "auto" and bf16_is_fast(default_device()))
    shared = SharedModel(args.model, args.checkpoint, torch.bfloat16 if bf16 else torch.float32)
    demo = build_demo(shared)
    demo.queue(default_concurrency_limit=4).launch(server_name=args.host, server_port=args.port, share=False)


if __name__ == "__main__":
    main()
