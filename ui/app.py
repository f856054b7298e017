"""The Gradio Blocks page of the studio, and the named API endpoints (twins of every action).

The page is a thin layer over :class:`ui.studio.Studio`: each event handler takes the browser session's id
(``gr.Request.session_hash``) and returns the studio's ``View``. Editing events share one queue
(``concurrency_id="edit"``, ``workers`` at once) with ``trigger_mode="multiple"``: clicks made while one is
processed wait their turn instead of being dropped, and one session's edits run one at a time, in order
(``ui.gate``). Frames, exports and uploads are served to the client that made them only (``ui.owned``).
"""
from __future__ import annotations

import functools
import html
import inspect
import json
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import gradio as gr
from gradio.exceptions import InvalidPathError

from iseg_core.image import IMAGE_SUFFIXES
from iseg_core.weights import ProgressText
from storage.exports import FORMATS
from storage.store import IMAGE_STATES, is_colour

from .canvas import CSS, JS, TEMPLATE, frame_value
from .gate import ArrivalOrder, SessionGate, default_workers, ticket_of
from .owned import OWNED, ClientCookie, client_of
from .studio import Studio, View
from .text import html_text, md

TOOLS = ["positive", "negative", "box", "contour", "scribble", "brush", "eraser"]
TOOL_KEYS = dict(zip(TOOLS, "QWBCSDE"))  # the tool bar shows each tool with its key
# one keyboard scheme (listed on the page): digits are labels, letters are tools and actions
SHORTCUTS = [("1-9", "finish the object as label 1-9"), ("Q / W", "positive / negative clicks"),
             ("right-click or Shift+click", "the opposite click (brush: erase)"),
             ("drag", "a box (scribble: a stroke; brush / eraser: paint)"), ("B", "box tool"),
             ("C", "contour tool"), ("S", "scribble tool (click its points; Shift on the first = negative)"),
             ("D / E", "brush / eraser"), ("[ / ]", "smaller / larger brush"),
             ("Enter", "close the contour / end the scribble"), ("Z / Shift+Z", "zoom in on / out of a small object"), ("Ctrl+Z / Ctrl+Y", "undo / redo"),
             ("Space / N", "finish the object as the chosen label"), ("A", "accept the image (saved), next"),
             ("→ / ←", "next / previous image"), ("Esc", "clear the current object"),
             ("P", "accept proposed object 1 as the chosen label")]
# the canvas's own view (the browser's; the image's pixels stay exact)
VIEW_KEYS = [("wheel", "zoom the view at the pointer"), ("middle-drag or Alt+drag", "pan"), ("F", "fit the image")]

# Keyboard shortcuts and the Shift state for clicks (Gradio has no hotkey API: buttons are clicked by id).
HEAD = """<script>
window.__isegShift = false;
document.addEventListener('keyup', e => { if (e.key === 'Shift') window.__isegShift = false; });
document.addEventListener('keydown', e => {
  if (e.key === 'Shift') { window.__isegShift = true; return; }
  const t = e.target; if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
  const click = id => { const b = document.getElementById(id); if (b) { b.click(); e.preventDefault(); } };
  const tool = v => { const r = document.querySelector('#tool input[value="' + v + '"]'); if (r) { r.click(); e.preventDefault(); } };
  const size = d => { const r = document.querySelector('#brush_size input[type=range]'); if (!r) return;
    const v = Number(r.value), step = Math.max(1, Math.round(v * 0.2));
    r.value = Math.max(Number(r.min), Math.min(Number(r.max), v + d * step));
    r.dispatchEvent(new Event('input', { bubbles: true })); r.dispatchEvent(new Event('change', { bubbles: true }));
    e.preventDefault(); };
  const k = e.key.toLowerCase();
  if ((e.ctrlKey || e.metaKey) && k === 'z') return click(e.shiftKey ? 'redo_btn' : 'undo_btn');
  if ((e.ctrlKey || e.metaKey) && k === 'y') return click('redo_btn');
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (k >= '1' && k <= '9') return click('label_key_' + k);
  if (k === ' ' || k === 'n') return click('finish_btn');
  if (k === 'a') return click('accept_btn');
  if (k === 'enter') return click('close_btn');
  if (k === 'escape') return click('clear_btn');
  if (k === 'arrowright') return click('next_btn');
  if (k === 'arrowleft') return click('prev_btn');
  if (k === 'q') return tool('positive');
  if (k === 'w') return tool('negative');
  if (k === 'b') return tool('box');
  if (k === 'c') return tool('contour');
  if (k === 's') return tool('scribble');
  if (k === 'd') return tool('brush');
  if (k === 'e') return tool('eraser');
  if (k === '[') return size(-1);
  if (k === ']') return size(1);
  if (k === 'z') return click(e.shiftKey ? 'unzoom_btn' : 'zoom_btn');
  if (k === 'f') { window.dispatchEvent(new Event('iseg-fit')); e.preventDefault(); }
  if (k === 'p') return click('accept_best_btn');
});
</script>"""

# the page: the canvas takes the window's height below the tool bar; the side panel scrolls on its own
PAGE_CSS = """
#header { align-items: center; gap: 12px; }
#header { min-height: 0; }
#title { flex-grow: 0 !important; min-width: 50px !important; }
#title p, #title { margin: 0; font-size: 18px; }
#status p { margin: 1px 0; }
#toolbar { align-items: center; gap: 6px; }
#tool .wrap { gap: 2px; flex-wrap: nowrap; }
#tool label { padding: 3px 6px; }
#brush_size { padding: 0 6px; }
#object_row { align-items: center; }
#sidebar { max-height: calc(100vh - 140px); overflow-y: auto; flex-wrap: nowrap; gap: 8px; }
#sidebar > * { flex-shrink: 0; }
"""

LEGEND_CSS = """
.iseg-label { display: inline-flex; align-items: center; gap: 4px; margin: 0 10px 4px 0; font-size: 14px; }
.iseg-label i { display: inline-block; width: 14px; height: 14px; border-radius: 3px; border: 1px solid #0004; }
.iseg-label b { min-width: 10px; }
"""
# the canvas's long side in device pixels (about three quarters of the window's width, or its height)
SCREEN_JS = ("() => Math.round(Math.max(window.innerWidth * 0.75, window.innerHeight - 160) * "
             "(window.devicePixelRatio || 1))")
PER_PAGE = 48
EDIT = "edit"  # the concurrency group of every event that changes a session's state


def launch_options(demo: gr.Blocks) -> dict:
    """The ``launch`` arguments every server of ``demo`` (a :func:`build_app` page) needs: the keyboard script,
    the middleware that gives each client its cookie and serves frames, exports and uploads to their owner
    only, and the one that numbers each session's edits in the order they arrive."""
    from starlette.middleware import Middleware

    edits = {fn_id for fn_id, fn in demo.fns.items() if fn.concurrency_id == EDIT}
    return {"head": HEAD, "css": PAGE_CSS, "app_kwargs": {"middleware": [
        Middleware(ClientCookie), Middleware(ArrivalOrder, gate=demo.iseg_gate, gated=edits)]}}


def _legend(labels) -> str:
    """The label set as a line of colour swatches with their keys."""
    if not labels:
        return "<div class='iseg-labels'>No labels yet: type a name in Label, or add one under Labels.</div>"
    return "<div class='iseg-labels'>" + "".join(
        f"<span class='iseg-label' title='{html_text(c.name)}'><b>{c.key or '·'}</b><i style='background:"
        f"{c.color if is_colour(c.color) else '#808080'}'></i>{html_text(c.name)}</span>" for c in labels) + "</div>"


def _sid(request: Optional[gr.Request]) -> str:
    return (request.session_hash if request is not None and request.session_hash else "default")


def hf_user(request: Optional[gr.Request]) -> Optional[str]:
    """The Hugging Face account signed in through the page's Login button (Gradio keeps it in its session
    cookie), or None: nobody signed in, the sign-in expired, or Hugging Face sign-in is off."""
    starlette = getattr(request, "request", None) if request is not None else None
    try:
        info = starlette.session.get("oauth_info") if starlette is not None else None
    except AssertionError:  # no session middleware: the page has no Login button
        return None
    if not isinstance(info, dict) or info.get("expires_at", math.inf) < time.time():
        return None
    return (info.get("userinfo") or {}).get("preferred_username") or None


def canvas_value(v: View, request: Optional[gr.Request]) -> dict:
    """The canvas's value for a view: its frame, and the page decoder's settings (arrays for this client)."""
    owner = client_of(request)
    value = frame_value(v.image, owner)
    if v.decoder is not None:
        from .page_decoder import page_decoder

        value["decoder"] = page_decoder().value(v.decoder, owner)
    return value


def _out(v: View, request: Optional[gr.Request]):
    """A view as the page's outputs; its frame is served to the requesting client only."""
    return canvas_value(v, request), v.status, v.objects, v.info


def _handler(turn, action, n_inputs: int, convert=None):
    """A Gradio handler for ``action(session_id, *inputs)`` run in its session's turn (``turn(request)``: a
    context manager giving the session id). Gradio passes the request to a parameter annotated ``gr.Request``;
    the signature is written out so that it finds it after the ``n_inputs`` values."""

    def handler(*args):
        *values, request = args
        if convert is not None:
            values = convert(*values)
        with turn(request) as sid:
            return _out(action(sid, *values), request)

    params = [inspect.Parameter(f"v{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in range(n_inputs)]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request))
    handler.__signature__ = inspect.Signature(params)
    handler.__annotations__ = {"request": gr.Request}
    return handler


def _file_paths(files, request: Optional[gr.Request], images_only: bool = False) -> List[str]:
    """The local paths of Gradio's uploaded files (only image files with ``images_only``: a folder upload).
    A file the requesting client did not upload itself (another client's upload, frame or export, or a path
    that is not there) fails the whole event the way Gradio fails a path outside its folders: one answer for
    all, nothing used."""
    paths = [getattr(f, "name", f) for f in files or []]
    client = client_of(request)
    for p in paths:
        if not OWNED.owns(p, client):
            raise InvalidPathError(f"Cannot use {p}: it was not uploaded by this client.")
    return [p for p in paths if Path(p).suffix.lower() in IMAGE_SUFFIXES] if images_only else paths


def _points(text: str):
    try:
        pts = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as e:
        raise gr.Error(f"points must be JSON like [[x, y], [x, y]]: {e}")
    return pts


def build_app(studio: Studio, workers: Optional[int] = None, hf_oauth: bool = False) -> gr.Blocks:
    """The page over ``studio``. ``workers``: edits running at once across sessions (default: one per CPU core,
    1 on a GPU); a session's own edits always run one at a time, in order. ``hf_oauth``: sign-in with Hugging
    Face (a Login button; nothing can be seen or changed before it; ``studio.roles``, when set, is the list of
    accounts allowed in)."""
    keys = "  \n".join(f"**{k}** {v}" for k, v in SHORTCUTS + VIEW_KEYS)
    from .page_decoder import enabled, page_decoder

    if enabled() and studio.page is None:  # SAM-family clicks decoded in the page (ui/page_decoder.py)
        studio.page = page_decoder()

    def user_of(request: Optional[gr.Request]) -> Optional[str]:
        """The signed-in name: Gradio's sign-in with the users file, or the Hugging Face account."""
        name = getattr(request, "username", None) if request is not None else None
        return name or (hf_user(request) if hf_oauth else None)

    def refusal(name: Optional[str]) -> Optional[str]:
        """Why the signed-in ``name`` may not use the studio (Hugging Face sign-in missing or not allowed), or
        None."""
        if not hf_oauth:
            return None  # no sign-in, or Gradio's own, which lets nobody in unsigned
        if name is None:
            return "Sign in with Hugging Face (the button at the top of the page) to annotate."
        if studio.roles is not None and studio.roles(name) is None:
            return (f"The Hugging Face account {name} is not on this studio's list of users; ask its operator to "
                    f"add it (python -m storage users add {name} --hf).")
        return None

    def sid_of(request: Optional[gr.Request]) -> str:
        """The tab's session id; with sign-in on, the tab is also tied to the signed-in user (its author).
        Without a required sign-in, the event fails with what to do."""
        name = user_of(request)
        why = refusal(name)
        if why:
            raise gr.Error(why)
        sid = _sid(request)
        if name:
            studio.sign_in(sid, name)
        return sid

    gate = SessionGate()

    @contextmanager
    def turn(request: Optional[gr.Request]) -> Iterator[str]:
        """The session's id, with its turn held: a session's edits run one at a time, in order. The turn is
        taken first, so that an event refused inside it (no sign-in, a file that is not the client's) still
        uses up its number and the session's next edit does not wait for it."""
        with gate.turn(_sid(request), ticket_of(request)):
            yield sid_of(request)

    handler = functools.partial(_handler, turn)
    thumbs = studio.store.images.root / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    # the browser's thumbnails are served as they are (named by content), each to the clients it was shown to
    gr.set_static_paths([thumbs])
    OWNED.protect(thumbs)
    with gr.Blocks(title="iseg", delete_cache=(3600, 3600), fill_width=True) as demo:
        with gr.Row(elem_id="header", equal_height=True):  # the name, the status line, the sign-in
            gr.Markdown("**iseg**", elem_id="title", container=False, min_width=50)
            status = gr.Markdown(elem_id="status", container=False)
            if hf_oauth:
                gr.LoginButton(elem_id="login", scale=0, min_width=200)
        with gr.Tabs(selected="annotate", elem_id="tabs") as tabs:
          with gr.Tab("Annotate", id="annotate", elem_id="annotate_tab"):
            # the tool bar: tools (letter keys), brush size, history, shapes, zoom, images
            with gr.Row(elem_id="toolbar", equal_height=True):
                tool = gr.Radio([(f"{t} {TOOL_KEYS[t]}", t) for t in TOOLS], value="positive", show_label=False,
                                elem_id="tool", container=False, scale=0, min_width=660)
                gr.Slider(1, 100, 12, step=1, label="Brush px ([ ])", elem_id="brush_size", scale=0, min_width=140,
                          container=False)
                undo_btn = gr.Button("↶ Undo", elem_id="undo_btn", size="sm", scale=0, min_width=64)
                redo_btn = gr.Button("↷ Redo", elem_id="redo_btn", size="sm", scale=0, min_width=64)
                clear_btn = gr.Button("Clear", elem_id="clear_btn", size="sm", scale=0, min_width=54)
                close_btn = gr.Button("Close ⏎", elem_id="close_btn", size="sm", scale=0, min_width=70)
                zoom_btn = gr.Button("Zoom Z", elem_id="zoom_btn", size="sm", scale=0, min_width=64)
                unzoom_btn = gr.Button("Unzoom", elem_id="unzoom_btn", size="sm", scale=0, min_width=64)
                prev_btn = gr.Button("← Prev", elem_id="prev_btn", size="sm", scale=0, min_width=60)
                next_btn = gr.Button("Next →", elem_id="next_btn", size="sm", scale=0, min_width=60)
            with gr.Row(elem_id="workspace"):
                with gr.Column(scale=4, min_width=480):
                    view = gr.HTML({"src": ""}, html_template=TEMPLATE, css_template=CSS, js_on_load=JS,
                                   elem_id="canvas", apply_default_css=False, padding=False)
                with gr.Column(scale=1, min_width=330, elem_id="sidebar"):
                    names = [c.name for c in studio.labels(fresh=True)]
                    category = gr.Dropdown(names, value=names[0] if names else "object", allow_custom_value=True,
                                           label="Label (type a new name to add one)", elem_id="category")
                    legend = gr.HTML(_legend(studio.labels()), elem_id="labels", css_template=LEGEND_CSS)
                    label_keys = [gr.Button(f"label {k}", elem_id=f"label_key_{k}", visible="hidden")
                                  for k in range(1, 10)]
                    with gr.Row():
                        finish_btn = gr.Button("Finish object (N)", variant="primary", elem_id="finish_btn",
                                               size="sm", min_width=100)
                        accept_btn = gr.Button("Accept image (A)", variant="primary", elem_id="accept_btn",
                                               size="sm", min_width=100)
                    objects = gr.Dataframe(headers=["#", "category", "pixels", "prompts", "state"],
                                           interactive=False, label="Objects", elem_id="objects", max_height=260)
                    with gr.Row(equal_height=True, elem_id="object_row"):
                        obj_num = gr.Number(1, precision=0, label="Object #", minimum=1, elem_id="obj_num",
                                            min_width=70, container=False)
                        edit_btn = gr.Button("Edit", size="sm", elem_id="edit_btn", min_width=50)
                        delete_btn = gr.Button("Delete", size="sm", elem_id="delete_btn", min_width=50)
                        relabel_btn = gr.Button("Set label", size="sm", elem_id="relabel_btn", min_width=60)
                    with gr.Accordion("Proposed objects", open=True, elem_id="proposals_panel"):
                        with gr.Row(equal_height=True):
                            propose_btn = gr.Button("Propose objects", size="sm", elem_id="propose_btn",
                                                    min_width=120)
                            proposal_num = gr.Number(1, precision=0, minimum=1, label="#", elem_id="proposal_num",
                                                     min_width=50, container=False)
                        with gr.Row():
                            accept_prop_btn = gr.Button("Accept (P)", size="sm", elem_id="accept_proposal_btn",
                                                        min_width=60)
                            refine_prop_btn = gr.Button("Refine", size="sm", elem_id="refine_proposal_btn",
                                                        min_width=60)
                            reject_prop_btn = gr.Button("Reject", size="sm", elem_id="reject_proposal_btn",
                                                        min_width=60)
                    # reviewers only (on_load shows it to a signed-in reviewer)
                    with gr.Group(visible=False, elem_id="review") as review_box:
                        review_comment = gr.Textbox(label="Review comment", elem_id="review_comment", lines=1)
                        with gr.Row():
                            approve_btn = gr.Button("Approve", size="sm", elem_id="approve_btn")
                            send_back_btn = gr.Button("Send back", size="sm", elem_id="send_back_btn")
                    with gr.Accordion("Model", open=True, elem_id="model_panel"):
                        model = gr.Dropdown(model_choices(), value=studio.default_model, show_label=False,
                                            elem_id="model", container=False)
                        threshold = gr.Slider(0.05, 0.95, 0.5, step=0.01, elem_id="threshold",
                                              label="Mask threshold (probability; higher = tighter)")
                    with gr.Accordion("View", open=False, elem_id="view_panel"):
                        opacity = gr.Slider(0.0, 1.0, 0.5, step=0.05, label="Overlay opacity", elem_id="opacity")
                        contours = gr.Checkbox(True, label="Contour lines", elem_id="contours")
                    with gr.Accordion("Keyboard and mouse", open=False, elem_id="keys_panel"):
                        gr.Markdown(keys)
          with gr.Tab("Images", id="images", elem_id="images_tab") as images_tab:
            with gr.Row():
                b_state = gr.Radio(["all", *IMAGE_STATES], value="all", label="State", elem_id="browse_state")
                b_name = gr.Textbox(label="Name contains (Enter)", elem_id="browse_name")
                b_page = gr.Number(1, precision=0, minimum=1, label="Page", elem_id="browse_page")
                b_ready = gr.Checkbox(False, label="Only images ready for the model in use (precomputed)",
                                      elem_id="browse_ready")
            with gr.Row():
                b_prev = gr.Button("← Page", size="sm", elem_id="browse_prev")
                b_next = gr.Button("Page →", size="sm", elem_id="browse_next")
                goto = gr.Number(1, precision=0, minimum=1, label="Go to image #", elem_id="goto_num")
                goto_btn = gr.Button("Open", size="sm", elem_id="goto_btn")
            b_info = gr.Markdown(elem_id="browse_info")
            gallery = gr.Gallery(columns=8, height=720, allow_preview=False, object_fit="contain",
                                 show_label=False, elem_id="browser")
            b_positions = gr.State([])
          with gr.Tab("Project", id="project", elem_id="project_tab"):
            with gr.Row():
                with gr.Column():
                    gr.Markdown("### Add images")
                    with gr.Row():
                        upload = gr.File(file_count="multiple", label="Image files", elem_id="upload")
                        upload_dir = gr.File(file_count="directory", label="A folder", elem_id="upload_dir")
                    gr.Markdown("### Import pre-annotations")
                    import_file = gr.File(file_types=[".json"], label="COCO .json", elem_id="import_file")
                    with gr.Row():
                        on_clash = gr.Radio([("map by name", "map"), ("refuse", "refuse")], value="map",
                                            label="Categories unlike the label set", elem_id="on_clash")
                        import_btn = gr.Button("Import", size="sm", elem_id="import_btn", scale=0, min_width=90)
                with gr.Column():
                    gr.Markdown("### Export")
                    with gr.Row(equal_height=True):
                        export_fmt = gr.Dropdown([(v, k) for k, v in FORMATS.items()], value="coco",
                                                 label="Format", elem_id="export_format")
                        export_btn = gr.Button("Export", elem_id="export_btn", scale=0, min_width=100)
                    export_file = gr.File(label="Exported file", interactive=False, elem_id="export_file")
                    gr.Markdown("### Labels")
                    with gr.Group(elem_id="label_editor"):
                        with gr.Row():
                            label_name = gr.Textbox(label="Name", elem_id="label_name")
                            label_rename = gr.Textbox(label="Rename to (optional)", elem_id="label_rename")
                        with gr.Row():
                            label_colour = gr.ColorPicker("#e6194b", label="Colour", elem_id="label_colour")
                            label_key = gr.Dropdown([("none", 0)] + [(str(k), k) for k in range(1, 10)],
                                                    value=None, label="Key", elem_id="label_key")
                        label_save = gr.Button("Save label", size="sm", elem_id="label_save_btn")
            gr.Markdown("### Prepare")
            with gr.Row(equal_height=True):
                prepare_btn = gr.Button("Prepare project", size="sm", elem_id="prepare_btn", scale=0, min_width=160)
                prepare_status = gr.Markdown(studio.prepare_status(), elem_id="prepare_status")
            prepare_timer = gr.Timer(2.0, active=False)
          with gr.Tab("Training", id="training", elem_id="training_tab"):
            gr.Markdown("Teach the open model this project's objects: fine-tune on accepted images, or pre-train "
                        "on images nobody labelled yet; the result replaces the model only if it scores better.",
                        elem_id="train_help")
            with gr.Row():
                finetune_btn = gr.Button("Fine-tune on accepted images", size="sm", elem_id="finetune_btn")
                pretrain_btn = gr.Button("Pre-train on unlabelled images", size="sm", elem_id="pretrain_btn")
                cancel_ft_btn = gr.Button("Cancel fine-tuning", size="sm", elem_id="cancel_finetune_btn")
            train_status = gr.Markdown(studio.finetune_status(), elem_id="train_status")
            train_timer = gr.Timer(2.0, active=False)
        info = gr.JSON(visible=False)
        # inputs of the API twins (hidden on the page)
        hx, hy, hx1, hy1 = (gr.Number(0, visible=False) for _ in range(4))
        hpos = gr.Checkbox(True, visible=False)
        hpoints = gr.Textbox("[]", visible=False)
        outs = [view, status, objects, info]
        edit = dict(concurrency_id=EDIT, concurrency_limit=workers or default_workers(), trigger_mode="multiple")

        def on_select(tool_name, evt: gr.SelectData, request: gr.Request):
            with turn(request) as sid:
                v = studio.gesture(sid, tool_name, evt.value if isinstance(evt.value, dict) else
                                   {"kind": "click", "point": evt.index, "negative": False})
            # a gesture never changes the object table: skipping it (and the hidden state) saves Gradio's
            # DataFrame round trip on every click
            return canvas_value(v, request), v.status, gr.skip(), gr.skip()

        view.select(on_select, [tool], outs, api_visibility="private", show_progress="hidden", **edit)

        # the label set: the dropdown's names and the legend follow every change
        def label_widgets():
            labels = studio.labels(fresh=True)
            return gr.update(choices=[c.name for c in labels]), _legend(labels)

        label_outs = [category, legend]

        def bind(button, fn, inputs, api_name):
            button.click(fn, inputs, outs, api_name=api_name, **edit)

        bind(undo_btn, handler(studio.undo, 0), [], "undo")
        bind(redo_btn, handler(studio.redo, 0), [], "redo")
        bind(clear_btn, handler(studio.clear, 0), [], "clear")
        bind(close_btn, handler(studio.close_contour, 0), [], "close_contour")
        bind(zoom_btn, handler(studio.zoom, 0), [], "zoom_in")
        bind(unzoom_btn, handler(lambda sid: studio.zoom(sid, False), 0), [], "zoom_out")
        finish_btn.click(handler(studio.finish_object, 1), [category], outs, api_name="finish_object", **edit
                         ).then(label_widgets, [], label_outs, api_visibility="private")
        bind(accept_btn, handler(studio.accept_image, 1), [category], "accept_image")
        bind(prev_btn, handler(lambda sid: studio.next_image(sid, -1), 0), [], "previous_image")
        bind(next_btn, handler(studio.next_image, 0), [], "next_image")
        bind(edit_btn, handler(studio.edit_object, 1), [obj_num], "edit_object")
        bind(approve_btn, handler(lambda sid, c: studio.review(sid, True, c), 1), [review_comment], "approve_image")
        bind(send_back_btn, handler(lambda sid, c: studio.review(sid, False, c), 1), [review_comment],
             "send_back_image")
        bind(delete_btn, handler(studio.delete_object, 1), [obj_num], "delete_object")

        def on_propose(request: gr.Request, progress=gr.Progress()):
            with turn(request) as sid:
                return _out(studio.propose(sid, progress=lambda d, t: progress(d / t, desc=f"Proposing: {d} of {t} "
                                                                                           "clicks")), request)

        propose_btn.click(on_propose, [], outs, api_name="propose_objects", **edit)
        accept_prop_btn.click(handler(studio.accept_proposal, 2, lambda n, c: (int(n or 1), c)),
                              [proposal_num, category], outs, api_name="accept_proposal", **edit
                              ).then(label_widgets, [], label_outs, api_visibility="private")
        refine_prop_btn.click(handler(studio.refine_proposal, 1, lambda n: (int(n or 1),)), [proposal_num], outs,
                              api_name="refine_proposal", **edit)
        reject_prop_btn.click(handler(studio.reject_proposal, 1, lambda n: (int(n or 1),)), [proposal_num], outs,
                              api_name="reject_proposal", **edit)
        # key P: the best proposal (number 1) accepted with the chosen label
        accept_best = gr.Button("accept proposal 1", elem_id="accept_best_btn", visible="hidden")
        accept_best.click(handler(lambda sid, c: studio.accept_proposal(sid, 1, c), 1), [category], outs,
                          api_visibility="private", **edit).then(label_widgets, [], label_outs,
                                                                 api_visibility="private")

        for k, button in enumerate(label_keys, start=1):
            button.click(handler(lambda sid, k=k: studio.label_key(sid, k), 0), [], outs,
                         api_name=f"label_key_{k}", api_visibility="private", **edit
                         ).then(label_widgets, [], label_outs, api_visibility="private")
        relabel_btn.click(handler(studio.set_object_label, 2), [obj_num, category], outs,
                          api_name="set_object_label", **edit).then(label_widgets, [], label_outs,
                                                                     api_visibility="private")
        label_save.click(handler(studio.set_label, 4, lambda n, c, k, r: (n, c, None if k is None else int(k), r)),
                         [label_name, label_colour, label_key, label_rename], outs, api_name="set_label", **edit
                         ).then(label_widgets, [], label_outs, api_visibility="private")
        opacity.release(handler(studio.set_options, 2), [opacity, contours], outs,
                        api_visibility="private", **edit)
        contours.change(handler(studio.set_options, 2), [opacity, contours], outs,
                        api_visibility="private", **edit)
        threshold.release(handler(studio.set_threshold, 1), [threshold], outs, api_name="set_threshold", **edit)
        def on_model(name, request: gr.Request, progress=gr.Progress()):
            # a model whose weights are not here yet downloads now: the bar shows MB done, total and time left
            text = ProgressText(f"Downloading {name} weights")

            def report(done, total):
                progress(done / total if total else None, desc=text(done, total))

            with turn(request) as sid:
                return (*_out(studio.set_model(sid, name, progress=report), request),
                        studio.threshold_probability(sid), gr.Dropdown(choices=model_choices()))

        # the slider follows the model (each family starts at its own threshold); the picker says what is here now
        model.change(on_model, [model], outs + [threshold, model], api_name="set_model", **edit)
        def on_files(images_only: bool):
            def on_upload(files, request: gr.Request):
                with turn(request) as sid:
                    return _out(studio.upload(sid, _file_paths(files, request, images_only)), request)
            return on_upload

        upload.upload(on_files(False), [upload], outs, api_visibility="private", **edit)
        # a folder: only its image files (the rest of a folder is not worth a "skipped" line each)
        upload_dir.upload(on_files(True), [upload_dir], outs, api_visibility="private", **edit)

        # exports are written into one folder served to the client that asked for each file only
        gr.set_static_paths([studio.export_dir])
        OWNED.protect(studio.export_dir)

        def exported(request, v, path):
            if path is not None:
                OWNED.give(path, client_of(request))
            return (*_out(v, request), path)

        def on_export(fmt, request: gr.Request, progress=gr.Progress()):
            with turn(request) as sid:
                return exported(request, *studio.export(sid, fmt=fmt,
                                                         progress=lambda d, t: progress(d / t, desc="Exporting")))

        export_btn.click(on_export, [export_fmt], outs + [export_file], api_name="export", **edit)

        def on_export_coco(poly, request: gr.Request):  # the API twin of earlier versions: COCO, RLE or polygons
            with turn(request) as sid:
                return exported(request, *studio.export(sid, bool(poly)))

        gr.Button(visible=False).click(on_export_coco, [hpos], outs + [export_file], api_name="export_coco", **edit)

        def on_import(file, clash, request: gr.Request, progress=gr.Progress()):
            with turn(request) as sid:
                paths = _file_paths([file] if file is not None else [], request)
                if not paths:
                    return _out(studio.view(sid, "Choose a COCO .json file to import first."), request)
                return _out(studio.import_coco(sid, paths[0], clash, progress=lambda d, t: progress(
                    d / t, desc=f"Importing: {d} of {t} steps")), request)

        import_btn.click(on_import, [import_file, on_clash], outs, api_name="import_coco", **edit
                         ).then(label_widgets, [], label_outs, api_visibility="private")

        # the image browser: a page of thumbnails at a time; a click (or "go to") opens the image
        def on_browse(state, name, page, ready, request: gr.Request):
            why = refusal(user_of(request))
            if why:
                return [], f"**{why}**", [], 1
            page = max(1, int(page or 1))
            ready_for = studio.tab(_sid(request)).model if ready else None
            res = studio.browse(state, name, page, PER_PAGE, ready_for)
            pages = max(1, -(-res.total // PER_PAGE))
            if page > pages:
                page = pages
                res = studio.browse(state, name, page, PER_PAGE, ready_for)
            items, positions, client = [], [], client_of(request)
            for row in res.rows:
                thumb = studio.thumbnail(row.image)  # made once, then read from its cache file
                if thumb is not None:
                    OWNED.give(thumb, client)
                    items.append((thumb, f"#{row.position + 1} {row.image.file_name} · {row.state} · "
                                         f"{row.objects} object(s)"))
                    positions.append(row.position)
            info = (f"{res.total} image(s) · page {page} of {pages}" if res.total else
                    "No image matches." if (name or state != "all") else "The project has no images yet.")
            return items, info, positions, page

        browse_outs = [gallery, b_info, b_positions, b_page]
        browse = dict(api_visibility="private", show_progress="hidden", concurrency_id="browse",
                      concurrency_limit=None)
        def turn_page(by: Optional[int]):  # by: pages forward (None: the first page)
            def on_page(st, n, p, r, request: gr.Request):
                return on_browse(st, n, 1 if by is None else (p or 1) + by, r, request)
            return on_page

        b_inputs = [b_state, b_name, b_page, b_ready]
        b_state.change(turn_page(None), b_inputs, browse_outs, **browse)
        b_ready.change(turn_page(None), b_inputs, browse_outs, **browse)
        b_name.submit(turn_page(None), b_inputs, browse_outs, **browse)
        b_page.submit(on_browse, b_inputs, browse_outs, **browse)
        b_prev.click(turn_page(-1), b_inputs, browse_outs, **browse)
        b_next.click(turn_page(1), b_inputs, browse_outs, **browse)
        images_tab.select(on_browse, b_inputs, browse_outs, **browse)  # fresh on every visit

        def open_from_browser(positions, evt: gr.SelectData, request: gr.Request):
            pos = positions[evt.index] if 0 <= evt.index < len(positions) else 0
            with turn(request) as sid:
                return (*_out(studio.open_index(sid, pos), request), gr.Tabs(selected="annotate"))

        gallery.select(open_from_browser, [b_positions], outs + [tabs], api_visibility="private", **edit)

        def goto_image(n, request: gr.Request):
            with turn(request) as sid:
                if n is None or int(n) < 1:
                    return (*_out(studio.view(sid, "Type an image number first."), request), gr.skip())
                total = studio.counts(fresh=True)[0]
                if int(n) > total:
                    return (*_out(studio.view(sid, f"There are {total} images; no image {int(n)}."), request),
                            gr.skip())
                return (*_out(studio.open_index(sid, int(n) - 1), request), gr.Tabs(selected="annotate"))

        goto_btn.click(goto_image, [goto], outs + [tabs], api_visibility="private", **edit)
        goto.submit(goto_image, [goto], outs + [tabs], api_visibility="private", **edit)

        # preparing the project (every image encoded into the store) runs in a background thread, polled
        def on_prepare(request: gr.Request):
            v = studio.start_prepare(sid_of(request))
            return (*_out(v, request), studio.prepare_status(), gr.Timer(active=True))

        prepare_btn.click(on_prepare, [], outs + [prepare_status, prepare_timer], api_name="prepare_project",
                          concurrency_id="prepare", concurrency_limit=1)
        prepare_timer.tick(lambda: (studio.prepare_status(), gr.Timer(active=studio.prepare_running)), [],
                           [prepare_status, prepare_timer], api_visibility="private", show_progress="hidden",
                           concurrency_id="train_status", concurrency_limit=None)
        gr.Button(visible=False).click(studio.prepare_status, [], prepare_status, api_name="prepare_status",
                                       concurrency_id="train_status", concurrency_limit=None)

        # fine-tuning runs in a background thread; the page polls its progress every 2 s while it runs
        def on_finetune(request: gr.Request):
            v = studio.start_finetune(sid_of(request))
            return (*_out(v, request), studio.finetune_status(), gr.Timer(active=True))

        finetune_btn.click(on_finetune, [], outs + [train_status, train_timer], api_name="finetune",
                           concurrency_id="train", concurrency_limit=1)

        def on_pretrain(request: gr.Request):
            v = studio.start_pretrain(sid_of(request))
            return (*_out(v, request), studio.finetune_status(), gr.Timer(active=True))

        pretrain_btn.click(on_pretrain, [], outs + [train_status, train_timer], api_name="pretrain",
                           concurrency_id="train", concurrency_limit=1)

        def on_cancel(request: gr.Request):
            return (*_out(studio.cancel_finetune(sid_of(request)), request), studio.finetune_status())

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
        api.click(handler(studio.add_click, 3), [hx, hy, hpos], outs,
                  api_name="add_click", **edit)
        api.click(handler(studio.add_box, 4),
                  [hx, hy, hx1, hy1], outs, api_name="add_box", **edit)
        api.click(handler(studio.add_scribble, 2, lambda pts, p: (_points(pts), p)), [hpoints, hpos],
                  outs, api_name="add_scribble", **edit)
        api.click(handler(studio.add_contour, 1, lambda pts: (_points(pts),)), [hpoints], outs,
                  api_name="add_contour", **edit)
        api.click(handler(studio.add_stroke, 3, lambda pts, r, erase: (_points(pts), r, erase)),
                  [hpoints, hx, hpos], outs, api_name="add_stroke", **edit)
        api.click(handler(studio.open_index, 1, lambda i: (int(i),)), [hx], outs, api_name="open_image",
                  **edit)
        # images by path only from the operator's --import-dir folders; otherwise as uploads (upload_images)
        api.click(handler(studio.import_paths, 1, lambda paths: (_points(paths),)), [hpoints], outs,
                  api_name="add_images", **edit)
        hfiles = gr.File(file_count="multiple", visible=False)
        api.click(on_files(False), [hfiles], outs, api_name="upload_images", **edit)
        api.click(handler(studio.view, 0), [], outs, api_name="get_state", **edit)

        def on_load(screen, request: gr.Request):
            why = refusal(user_of(request))
            if why:  # the page says what to do; nothing is opened
                return (*_out(View(None, f"**{why}**", [], {}), request), gr.skip(), gr.skip(), gr.skip())
            with turn(request) as sid:
                studio.set_screen(sid, screen)
                v = studio.open_index(sid, 0) if studio.tab(sid).index < 0 else studio.view(sid)
                # review controls for reviewers only; the threshold slider at the tab's model's
                return (*_out(v, request), gr.Group(visible=studio.is_reviewer(sid)),
                        studio.threshold_probability(sid), gr.Dropdown(choices=model_choices(),
                                                                       value=studio.tab(sid).model))

        # the page tells the server how many device pixels its canvas spans: the display copy is made that large
        screen = gr.Number(0, visible=False)
        demo.load(on_load, [screen], outs + [review_box, threshold, model], api_visibility="private",
                  js=SCREEN_JS).then(label_widgets, [], label_outs, api_visibility="private")
        def on_unload(request: gr.Request):  # a closed tab: its unsaved drawing and undo history go
            studio.drop(_sid(request))
            gate.forget(_sid(request))

        demo.unload(on_unload)
    demo.iseg_gate = gate  # for launch_options: the door numbers each session's edits for this gate
    return demo


# the model picker's groups, in the order shown: the SAM family first, the classical engine last
FAMILIES = [("sam_hq_", "HQ-SAM"), ("sam2.1_", "SAM 2.1"), ("sam_", "SAM"), ("mobile_sam", "MobileSAM"),
            ("segnext_", "SegNext"), ("simpleclick_", "SimpleClick"), ("mst_", "MST"), ("mis_", "MIS"),
            ("interformer_", "InterFormer"), ("saicis_", "SAIC-IS"), ("ritm_", "RITM"), ("classical", "Classical")]
FAMILY_ORDER = ["SAM", "MobileSAM", "HQ-SAM", "SAM 2.1", "SegNext", "SimpleClick", "MST", "MIS", "InterFormer",
                "SAIC-IS", "RITM", "Classical"]


def model_family(name: str) -> str:
    return next((family for prefix, family in FAMILIES if name.startswith(prefix)), "Other")


def weights_note(name: str) -> str:
    """Its weights in a few words: size, and here / downloads / by hand / never published."""
    from iseg_core import weights

    spec = weights.KNOWN_CHECKPOINTS.get(name)
    if spec is None:
        return "no weights" if name == "classical" else "no published file"
    size = weights._human(spec.size, spec.published_size) if (spec.size or spec.published_size) else "size n/a"
    if weights.on_disk(name) is not None:
        return f"{size}, here"
    if spec.unpublished:
        return "never published"
    if spec.manual_page or (spec.repo_id is None and not spec.url):
        return f"{size}, get by hand"
    return f"{size}, downloads"


def model_choices() -> List[tuple]:
    """The model picker's entries ``(label, name)``: grouped by family, each with its size and whether its
    weights are on this machine."""
    from iseg_core.models import list_models

    names = sorted(list_models(), key=lambda n: (FAMILY_ORDER.index(model_family(n))
                                                 if model_family(n) in FAMILY_ORDER else len(FAMILY_ORDER), n))
    return [(f"{model_family(n)} · {n} ({weights_note(n)})", n) for n in names]
