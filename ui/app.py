"""The Gradio Blocks page of the studio, and the named API endpoints (twins of every action).

The page is a thin layer over :class:`ui.studio.Studio`: each event handler takes the browser session's id
(``gr.Request.session_hash``) and returns the studio's ``View``. All editing events share one queue
(``concurrency_id="edit"``, limit 1) with ``trigger_mode="multiple"``: clicks made while one is processed wait
their turn in order instead of being dropped.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Optional

import gradio as gr

from iseg_core.image import IMAGE_SUFFIXES
from iseg_core.weights import ProgressText

from .canvas import CSS, JS, TEMPLATE, frame_value
from .studio import Studio, View

TOOLS = ["positive", "negative", "box", "contour", "scribble"]
SHORTCUTS = [("1 / 2", "positive / negative clicks"), ("right-click or Shift+click", "the opposite click"),
             ("drag", "a box (scribble tool: a stroke)"), ("B", "box tool"),
             ("C", "contour tool"), ("S", "scribble tool (click its points; Shift on the first = negative)"),
             ("Enter", "close the contour / end the scribble"), ("Z / Shift+Z", "zoom in on / out of a small object"), ("Ctrl+Z / Ctrl+Y", "undo / redo"),
             ("Space / N", "finish the object (saved)"), ("A", "accept the image (saved), next"),
             ("→ / ←", "next / previous image"), ("Esc", "clear the current object")]

# Keyboard shortcuts and the Shift state for clicks (Gradio has no hotkey API: buttons are clicked by id).
HEAD = """<script>
window.__isegShift = false;
document.addEventListener('keyup', e => { if (e.key === 'Shift') window.__isegShift = false; });
document.addEventListener('keydown', e => {
  if (e.key === 'Shift') { window.__isegShift = true; return; }
  const t = e.target; if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
  const click = id => { const b = document.getElementById(id); if (b) { b.click(); e.preventDefault(); } };
  const tool = v => { const r = document.querySelector('#tool input[value="' + v + '"]'); if (r) { r.click(); e.preventDefault(); } };
  const k = e.key.toLowerCase();
  if ((e.ctrlKey || e.metaKey) && k === 'z') return click(e.shiftKey ? 'redo_btn' : 'undo_btn');
  if ((e.ctrlKey || e.metaKey) && k === 'y') return click('redo_btn');
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (k === ' ' || k === 'n') return click('finish_btn');
  if (k === 'a') return click('accept_btn');
  if (k === 'enter') return click('close_btn');
  if (k === 'escape') return click('clear_btn');
  if (k === 'arrowright') return click('next_btn');
  if (k === 'arrowleft') return click('prev_btn');
  if (k === '1') return tool('positive');
  if (k === '2') return tool('negative');
  if (k === 'b') return tool('box');
  if (k === 'c') return tool('contour');
  if (k === 's') return tool('scribble');
  if (k === 'z') return click(e.shiftKey ? 'unzoom_btn' : 'zoom_btn');
});
</script>"""


def _sid(request: Optional[gr.Request]) -> str:
    return (request.session_hash if request is not None and request.session_hash else "default")


def _out(v: View):
    return frame_value(v.image), v.status, v.objects, v.info


def _handler(action, n_inputs: int, convert=None):
    """A Gradio handler for ``action(session_id, *inputs)``. Gradio passes the request to a parameter annotated
    ``gr.Request``; the signature is written out so that it finds it after the ``n_inputs`` values."""

    def handler(*args):
        *values, request = args
        if convert is not None:
            values = convert(*values)
        return _out(action(_sid(request), *values))

    params = [inspect.Parameter(f"v{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in range(n_inputs)]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request))
    handler.__signature__ = inspect.Signature(params)
    handler.__annotations__ = {"request": gr.Request}
    return handler


def _points(text: str):
    try:
        pts = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as e:
        raise gr.Error(f"points must be JSON like [[x, y], [x, y]]: {e}")
    return pts


def build_app(studio: Studio) -> gr.Blocks:
    keys = " · ".join(f"**{k}** {v}" for k, v in SHORTCUTS)
    with gr.Blocks(title="iseg", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# iseg: interactive segmentation studio\n" + keys)
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            with gr.Column(scale=3):
                view = gr.HTML({"src": ""}, html_template=TEMPLATE, css_template=CSS, js_on_load=JS,
                               elem_id="canvas", apply_default_css=False, padding=False)
            with gr.Column(scale=1, min_width=300):
                tool = gr.Radio(TOOLS, value="positive", label="Tool", elem_id="tool")
                with gr.Row():
                    undo_btn = gr.Button("Undo", elem_id="undo_btn", size="sm")
                    redo_btn = gr.Button("Redo", elem_id="redo_btn", size="sm")
                    clear_btn = gr.Button("Clear", elem_id="clear_btn", size="sm")
                with gr.Row():
                    close_btn = gr.Button("Close shape", elem_id="close_btn", size="sm")
                    zoom_btn = gr.Button("Zoom in", elem_id="zoom_btn", size="sm")
                    unzoom_btn = gr.Button("Zoom out", elem_id="unzoom_btn", size="sm")
                category = gr.Textbox("object", label="Category", elem_id="category")
                finish_btn = gr.Button("Finish object", variant="primary", elem_id="finish_btn")
                accept_btn = gr.Button("Accept image", variant="primary", elem_id="accept_btn")
                with gr.Row():
                    prev_btn = gr.Button("← Previous", elem_id="prev_btn", size="sm")
                    next_btn = gr.Button("Next →", elem_id="next_btn", size="sm")
                objects = gr.Dataframe(headers=["#", "category", "pixels", "prompts", "state"], interactive=False,
                                       label="Objects", elem_id="objects")
                with gr.Row():
                    obj_num = gr.Number(1, precision=0, label="Object #", minimum=1, elem_id="obj_num")
                    edit_btn = gr.Button("Edit", size="sm", elem_id="edit_btn")
                    delete_btn = gr.Button("Delete", size="sm", elem_id="delete_btn")
                opacity = gr.Slider(0.0, 1.0, 0.5, step=0.05, label="Overlay opacity", elem_id="opacity")
                contours = gr.Checkbox(True, label="Contour lines", elem_id="contours")
                threshold = gr.Slider(-4.0, 4.0, 0.0, step=0.25, label="Mask threshold (logits; higher = tighter)",
                                      elem_id="threshold")
                model = gr.Dropdown(_model_choices(), value=studio.default_model, label="Model", elem_id="model")
                with gr.Row():
                    finetune_btn = gr.Button("Fine-tune on accepted images", size="sm", elem_id="finetune_btn")
                    cancel_ft_btn = gr.Button("Cancel fine-tuning", size="sm", elem_id="cancel_finetune_btn")
                train_status = gr.Markdown(studio.finetune_status(), elem_id="train_status")
                train_timer = gr.Timer(2.0, active=False)
                with gr.Row():
                    upload = gr.File(file_count="multiple", label="Add images", elem_id="upload")
                    upload_dir = gr.File(file_count="directory", label="Add a folder", elem_id="upload_dir")
                with gr.Row():
                    export_btn = gr.Button("Export COCO", elem_id="export_btn")
                    polygons = gr.Checkbox(False, label="as polygons")
                export_file = gr.File(label="COCO file", interactive=False, elem_id="export_file")
        info = gr.JSON(visible=False)
        # inputs of the API twins (hidden on the page)
        hx, hy, hx1, hy1 = (gr.Number(0, visible=False) for _ in range(4))
        hpos = gr.Checkbox(True, visible=False)
        hpoints = gr.Textbox("[]", visible=False)
        outs = [view, status, objects, info]
        edit = dict(concurrency_id="edit", concurrency_limit=1, trigger_mode="multiple")

        def on_select(tool_name, evt: gr.SelectData, request: gr.Request):
            v = studio.gesture(_sid(request), tool_name, evt.value if isinstance(evt.value, dict) else
                               {"kind": "click", "point": evt.index, "negative": False})
            # a gesture never changes the object table: skipping it (and the hidden state) saves Gradio's
            # DataFrame round trip on every click
            return frame_value(v.image), v.status, gr.skip(), gr.skip()

        view.select(on_select, [tool], outs, api_visibility="private", show_progress="hidden", **edit)

        def bind(button, fn, inputs, api_name):
            button.click(fn, inputs, outs, api_name=api_name, **edit)

        bind(undo_btn, _handler(studio.undo, 0), [], "undo")
        bind(redo_btn, _handler(studio.redo, 0), [], "redo")
        bind(clear_btn, _handler(studio.clear, 0), [], "clear")
        bind(close_btn, _handler(studio.close_contour, 0), [], "close_contour")
        bind(zoom_btn, _handler(studio.zoom, 0), [], "zoom_in")
        bind(unzoom_btn, _handler(lambda sid: studio.zoom(sid, False), 0), [], "zoom_out")
        bind(finish_btn, _handler(studio.finish_object, 1), [category], "finish_object")
        bind(accept_btn, _handler(studio.accept_image, 1), [category], "accept_image")
        bind(prev_btn, _handler(lambda sid: studio.next_image(sid, -1), 0), [], "previous_image")
        bind(next_btn, _handler(studio.next_image, 0), [], "next_image")
        bind(edit_btn, _handler(studio.edit_object, 1), [obj_num], "edit_object")
        bind(delete_btn, _handler(studio.delete_object, 1), [obj_num], "delete_object")
        opacity.release(_handler(studio.set_options, 2), [opacity, contours], outs,
                        api_visibility="private", **edit)
        contours.change(_handler(studio.set_options, 2), [opacity, contours], outs,
                        api_visibility="private", **edit)
        threshold.release(_handler(studio.set_threshold, 1), [threshold], outs, api_name="set_threshold", **edit)
        def on_model(name, request: gr.Request, progress=gr.Progress()):
            # a model whose weights are not here yet downloads now: the bar shows MB done, total and time left
            text = ProgressText(f"Downloading {name} weights")

            def report(done, total):
                progress(done / total if total else None, desc=text(done, total))

            return _out(studio.set_model(_sid(request), name, progress=report))

        model.change(on_model, [model], outs, api_name="set_model", **edit)
        upload.upload(_handler(studio.upload, 1, lambda files: ([getattr(f, "name", f) for f in files or []],)),
                      [upload], outs, api_visibility="private", **edit)
        # a folder: only its image files (the rest of a folder is not worth a "skipped" line each)
        upload_dir.upload(_handler(studio.upload, 1, lambda files: ([
            getattr(f, "name", f) for f in files or [] if Path(getattr(f, "name", f)).suffix.lower() in IMAGE_SUFFIXES],)),
            [upload_dir], outs, api_visibility="private", **edit)

        def on_export(poly, request: gr.Request):
            v, path = studio.export(_sid(request), bool(poly))
            return (*_out(v), path)

        export_btn.click(on_export, [polygons], outs + [export_file], api_name="export_coco", **edit)

        # fine-tuning runs in a background thread; the page polls its progress every 2 s while it runs
        def on_finetune(request: gr.Request):
            v = studio.start_finetune(_sid(request))
            return (*_out(v), studio.finetune_status(), gr.Timer(active=True))

        finetune_btn.click(on_finetune, [], outs + [train_status, train_timer], api_name="finetune",
                           concurrency_id="train", concurrency_limit=1)

        def on_cancel(request: gr.Request):
            return (*_out(studio.cancel_finetune(_sid(request))), studio.finetune_status())

        cancel_ft_btn.click(on_cancel, [], outs + [train_status], api_name="cancel_finetune",
                            concurrency_id="train_status", concurrency_limit=None)

        def on_tick():
            return studio.finetune_status(), gr.Timer(active=studio.finetune_running)

        train_timer.tick(on_tick, [], [train_status, train_timer], api_visibility="private", show_progress="hidden",
                         concurrency_id="train_status", concurrency_limit=None)
        gr.Button(visible=False).click(studio.finetune_status, [], train_status, api_name="training_status",
                                       concurrency_id="train_status", concurrency_limit=None)

        # API twins: image coordinates in original pixels, called by name from gradio_client
        api = gr.Button(visible=False)
        api.click(_handler(studio.add_click, 3), [hx, hy, hpos], outs,
                  api_name="add_click", **edit)
        api.click(_handler(studio.add_box, 4),
                  [hx, hy, hx1, hy1], outs, api_name="add_box", **edit)
        api.click(_handler(studio.add_scribble, 2, lambda pts, p: (_points(pts), p)), [hpoints, hpos],
                  outs, api_name="add_scribble", **edit)
        api.click(_handler(studio.add_contour, 1, lambda pts: (_points(pts),)), [hpoints], outs,
                  api_name="add_contour", **edit)
        api.click(_handler(studio.open_index, 1, lambda i: (int(i),)), [hx], outs, api_name="open_image",
                  **edit)
        api.click(_handler(studio.upload, 1, lambda paths: (_points(paths),)), [hpoints], outs,
                  api_name="add_images", **edit)
        api.click(_handler(studio.view, 0), [], outs, api_name="get_state", **edit)

        def on_load(request: gr.Request):
            sid = _sid(request)
            if studio.tab(sid).index < 0:
                return _out(studio.open_index(sid, 0))
            return _out(studio.view(sid))

        demo.load(on_load, [], outs, api_visibility="private")
        def on_unload(request: gr.Request):  # a closed tab: its unsaved drawing and undo history go
            studio.drop(_sid(request))

        demo.unload(on_unload)
    return demo


def _model_choices():
    from iseg_core.models import list_models

    return list_models()
