"""SAM-family prompt encoder + mask decoder as one ONNX graph, for the page (onnxruntime-web in a web worker).

The server encodes an image once; the page gets the embedding (and SAM 2's high-resolution features, HQ-SAM's
HQ features) as raw float32 arrays and answers every click, box and scribble itself with this graph. The
graph is the server's decode step by step (``SamSegmenter.decode`` then ``upsample_logits``), written with
the same modules and weights:

inputs
    ``image_tokens`` (1, h*w, C) token-major embedding; ``skip0``/``skip1`` the decoder's per-image extras
    (SAM 2: (1, 4hw, C/4) and (1, 16hw, C/8) in block order; HQ-SAM: (1, C/8, 4h, 4w)), absent for SAM;
    ``points`` (1, N, 2) in the model's input frame (what ``to_sam_inputs`` makes of image pixels) and
    ``labels`` (1, N) float: -1 padding, 0 negative, 1 positive, 2 / 3 a box's corners, in the order
    :meth:`SamPromptEncoder.embed_sparse` puts its tokens (the page builds it: :func:`token_order`);
    ``mask_input`` (1, 1, 4h, 4w) the previous low-res logits and ``has_mask`` (1,) 1 or 0;
    ``multimask`` (1,) 1 in SAM's ambiguous case (a lone click, no mask), else 0;
    ``crop`` (2,) int64 the image's size inside the model frame (SAM: the resized image before padding; SAM 2:
    the whole square), ``out_size`` (2,) int64 the mask's (H, W); ``threshold`` (1,) the logit threshold.
outputs
    ``low_res`` (1, 1, 4h, 4w) the chosen logits (fed back as the next ``mask_input``), ``score`` (1,), and
    ``mask`` (H, W) uint8: the logits resized as ``upsample_logits`` does (bilinear to the square frame, the
    crop, bilinear to ``out_size``), 1 above the threshold.

The resizes are ONNX ``Resize`` nodes appended to the traced graph (their sizes are runtime inputs, which a
trace would freeze). :func:`export_decoder` writes the file once per model version into a cache folder,
checks it against PyTorch with onnxruntime when that is installed, and records the check beside it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ...errors import IsegError
from ...prompts import Box, Click, Prompt, Scribble
from ..base import PageGraph
from .layers import to_tokens
from .mask_decoder import HqMaskDecoder, Sam2MaskDecoder
from .prompting import to_sam_inputs

log = logging.getLogger(__name__)

#: What the graph answers exactly like the server: clicks, boxes and scribbles (contours rasterise a mask
#: prompt in Python; brush strokes and ZoomIn stay on the server).
PAGE_PROMPTS = (Click, Box, Scribble)
OPSET = 17
GRAPH_VERSION = 1  # bump when the graph's inputs or outputs change: cached exports are then made again


class DecoderGraph(nn.Module):
    """``SamSegmenter.decode`` as a traceable module: label-driven token types instead of Python branching,
    every mask token read and the answer chosen with ``where`` (SAM: token 0, or the best of 1-3 in the
    ambiguous case; SAM 2: token 0 unless unstable; HQ-SAM: plus the HQ token's mask)."""

    def __init__(self, model):
        super().__init__()
        net = model.network
        self.enc, self.dec = net.prompt_encoder, net.mask_decoder
        self.size = (model.config.embedding_size,) * 2
        self.register_buffer("pe", self.enc.dense_pe_tokens().detach().clone(), persistent=False)
        self.sam2 = isinstance(self.dec, Sam2MaskDecoder)
        self.hq = isinstance(self.dec, HqMaskDecoder)
        self.clamp = self.dec.mask_input_clamp

    def forward(self, image_tokens, *rest):
        *skips, points, labels, mask_input, has_mask, multimask = rest  # skips: none, SAM 2's two, HQ-SAM's one
        enc, dec = self.enc, self.dec
        pe = enc._encode_coords(points)
        pe = torch.where((labels == -1).unsqueeze(-1), torch.zeros_like(pe), pe)
        table = torch.cat([enc.not_a_point_embed.weight, enc.point_embeddings[0].weight,
                           enc.point_embeddings[1].weight, enc.point_embeddings[2].weight,
                           enc.point_embeddings[3].weight])  # labels -1, 0, 1, 2, 3
        sparse = pe + table[(labels + 1).long()]
        mask = mask_input if self.clamp is None else mask_input.clamp(-self.clamp, self.clamp)
        dense = torch.where(has_mask.reshape(1, 1, 1) > 0.5, enc.embed_dense_tokens(mask),
                            enc.embed_dense_tokens(None))
        mask_tokens, iou, image = dec.run_transformer(image_tokens, self.pe, sparse, dense)
        pixels = dec.upscale(image, skips)
        masks = dec.read_masks(pixels, mask_tokens, torch.arange(4), self.size)  # (1, 4, 4h, 4w)
        best = 1 + torch.argmax(iou[:, 1:], dim=1)  # (1,)
        single = torch.zeros_like(best)
        if self.sam2:  # token 0 unless its mask is unstable (SAM 2's dynamic multimask)
            single = torch.where(dec.stable(masks[:, 0]), single, best)
        index = torch.where(multimask > 0.5, best, single)
        chosen = torch.gather(masks, 1, index.view(1, 1, 1, 1).expand(1, 1, *masks.shape[-2:]))
        chosen = dec.finish(chosen, pixels, mask_tokens, skips, self.size)
        return chosen, torch.gather(iou, 1, index.view(1, 1)).view(1)


def skip_names(model) -> List[str]:
    return ["skip0", "skip1"][: len(model.network.mask_decoder.skip_shapes(model.config.embedding_size))]


def page_arrays(model, embedding) -> Dict[str, np.ndarray]:
    """The per-image arrays the page's graph reads, float32 C-order, by input name."""
    out = {"image_tokens": to_tokens(embedding.data).detach().float().cpu().contiguous().numpy()}
    for name, t in zip(skip_names(model), embedding.extra.get("skips", [])):
        out[name] = t.detach().float().cpu().contiguous().numpy()
    return out


def token_order(model, prompts: Sequence[Prompt], original_size, input_size) -> Tuple[np.ndarray, np.ndarray, bool]:
    """``points`` (1, N, 2) and ``labels`` (1, N) for the graph, in ``embed_sparse``'s token order, and whether
    it is the ambiguous case. The page's worker builds the same arrays (the test compares them)."""
    x = to_sam_inputs(prompts, original_size, input_size, model._mask_size, model.config.image_size)
    pts = [] if x.points is None else list(x.points)
    labs = [] if x.labels is None else [float(v) for v in x.labels]
    corners, corner_labels = ([], []) if x.box is None else (list(x.box.reshape(2, 2)), [2.0, 3.0])
    if model.network.prompt_encoder.box_first:  # SAM 2: box corners, points, one padding point always
        pts, labs = corners + pts + [np.zeros(2)], corner_labels + labs + [-1.0]
    elif x.box is None:  # SAM: points then one padding point
        pts, labs = pts + [np.zeros(2)], labs + [-1.0]
    else:  # SAM: points then the box's corners
        pts, labs = pts + corners, labs + corner_labels
    points = np.asarray(pts, np.float32).reshape(1, -1, 2)
    return points, np.asarray(labs, np.float32).reshape(1, -1), bool(x.single_click)


def _crop(model, embedding) -> Tuple[int, int]:
    s = model.config.image_size
    return (s, s) if model.config.squash else tuple(int(v) for v in embedding.extra["input_size"])


def graph_feeds(model, embedding, prompts: Sequence[Prompt], prev_logits=None, out_size=None,
                threshold: Optional[float] = None) -> Dict[str, np.ndarray]:
    """Every input of the graph for one decode, as the page feeds it."""
    points, labels, single = token_order(model, prompts, embedding.original_size, embedding.extra["input_size"])
    h4, w4 = model._mask_size
    has = prev_logits is not None
    feeds = dict(page_arrays(model, embedding))
    feeds.update(points=points, labels=labels,
                 mask_input=(np.asarray(prev_logits.detach().cpu() if torch.is_tensor(prev_logits) else prev_logits,
                                        np.float32).reshape(1, 1, h4, w4) if has else np.zeros((1, 1, h4, w4), np.float32)),
                 has_mask=np.array([1.0 if has else 0.0], np.float32),
                 multimask=np.array([1.0 if single and not has else 0.0], np.float32),
                 crop=np.array(_crop(model, embedding), np.int64),
                 out_size=np.array(out_size or embedding.original_size, np.int64),
                 threshold=np.array([model.default_threshold if threshold is None else threshold], np.float32))
    return feeds


def _example(model) -> Tuple[tuple, List[str]]:
    s = model.config.embedding_size
    c = model.config.prompt_dim
    shapes = model.network.mask_decoder.skip_shapes(s)
    skips = tuple(torch.randn(1, *shape) for shape in shapes)
    h4, w4 = model._mask_size
    args = (torch.randn(1, s * s, c), *skips, torch.rand(1, 3, 2) * 1000,
            torch.tensor([[1.0, 0.0, -1.0]]), torch.randn(1, 1, h4, w4), torch.ones(1), torch.zeros(1))
    names = ["image_tokens"] + skip_names(model) + ["points", "labels", "mask_input", "has_mask", "multimask"]
    return args, names


def _share_constants(g, min_bytes: int = 1 << 16) -> None:
    """One copy of each large constant (the trace repeats the positional encoding once per attention layer:
    8 MB of a 29 MB file)."""
    seen, rename = {}, {}
    for node in list(g.node):
        if node.op_type != "Constant" or not node.attribute or not node.attribute[0].t.dims:
            continue
        t = node.attribute[0].t
        if len(t.raw_data) < min_bytes:
            continue
        key = (tuple(t.dims), t.data_type, hashlib.blake2b(t.raw_data, digest_size=16).digest())
        if key in seen:
            rename[node.output[0]] = seen[key]
            g.node.remove(node)
        else:
            seen[key] = node.output[0]
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]


def _append_upsampling(graph_path: Path, model) -> None:
    """Add ``crop``, ``out_size`` and ``threshold`` inputs and the ``mask`` output: low-res logits -> the
    square model frame -> the crop -> ``out_size`` (bilinear, half-pixel centres, no antialiasing: what
    cv2.INTER_LINEAR does in ``upsample_logits``; SAM 2 straight to ``out_size``) -> above the threshold."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(str(graph_path))
    g = m.graph
    _share_constants(g)
    s = model.config.image_size
    g.input.extend([helper.make_tensor_value_info("crop", TensorProto.INT64, [2]),
                    helper.make_tensor_value_info("out_size", TensorProto.INT64, [2]),
                    helper.make_tensor_value_info("threshold", TensorProto.FLOAT, [1])])
    g.initializer.extend([helper.make_tensor("one_one", TensorProto.INT64, [2], [1, 1]),
                          helper.make_tensor("zero_one", TensorProto.INT64, [2], [0, 1])])
    linear = dict(mode="linear", coordinate_transformation_mode="half_pixel")
    nodes = []
    src = "low_res"
    if not model.config.squash:
        g.initializer.extend([helper.make_tensor("square", TensorProto.INT64, [4], [1, 1, s, s]),
                              helper.make_tensor("zeros2", TensorProto.INT64, [2], [0, 0]),
                              helper.make_tensor("axes23", TensorProto.INT64, [2], [2, 3])])
        nodes += [helper.make_node("Resize", [src, "", "", "square"], ["up_square"], **linear),
                  helper.make_node("Slice", ["up_square", "zeros2", "crop", "axes23"], ["up_crop"])]
        src = "up_crop"
    nodes += [helper.make_node("Concat", ["one_one", "out_size"], ["out_sizes4"], axis=0),
              helper.make_node("Resize", [src, "", "", "out_sizes4"], ["up_out"], **linear),
              helper.make_node("Greater", ["up_out", "threshold"], ["above"]),
              helper.make_node("Cast", ["above"], ["above_u8"], to=TensorProto.UINT8),
              helper.make_node("Squeeze", ["above_u8", "zero_one"], ["mask"])]
    g.node.extend(nodes)
    g.output.append(helper.make_tensor_value_info("mask", TensorProto.UINT8, ["H", "W"]))
    onnx.checker.check_model(m)
    onnx.save(m, str(graph_path))


def export_graph(model, path: Path) -> Path:
    """Trace ``model``'s decoder into ``path`` (a new ONNX file); the number of prompt tokens stays dynamic."""
    graph = DecoderGraph(model).eval()
    args, names = _example(model)
    dynamic = {"points": {1: "tokens"}, "labels": {1: "tokens"}}
    path = Path(path)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the traced branches are fixed on purpose
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: it traces what we need
        torch.onnx.export(graph, args, str(path), input_names=names, output_names=["low_res", "score"],
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False, do_constant_folding=True)
    _append_upsampling(path, model)
    return path


def model_key(model) -> str:
    """Names one model version's graph: its name and version (random models: their random version tag)."""
    raw = f"{model.name}|{model.version}|hq_only={model.hq_token_only}|graph={GRAPH_VERSION}"
    return f"{model.name}-{hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()}"


def random_embedding(model, size: Tuple[int, int], seed: int = 0):
    """An embedding of the model's shapes filled with noise (the decoder's equality holds for any input; the
    check costs no encoder run, so the large variants check in seconds too)."""
    from ..base import ImageEmbedding

    g = torch.Generator().manual_seed(seed)
    s, c = model.config.embedding_size, model.config.prompt_dim
    shapes = model.network.mask_decoder.skip_shapes(s)
    data = torch.randn(1, c, s, s, generator=g).to(model.device)
    skips = [torch.randn(1, *shape, generator=g).to(model.device) for shape in shapes]
    return ImageEmbedding(model.cache_key, tuple(size), data, 0,
                          {"input_size": model.frame_size(*size), "skips": skips})


def check_export(model, path: Path, embedding=None, tol: float = 1e-4) -> dict:
    """Run the exported graph with onnxruntime (CPU) and the PyTorch decoder on the same prompts: a click, a
    negative click, a box, three clicks with the previous mask, and report the largest low-res difference.
    Raises IsegError when it exceeds ``tol``."""
    import onnxruntime as ort

    from ...prompts import Box as B, Click as C

    if embedding is None:
        embedding = random_embedding(model, (480, 640))
    h, w = embedding.original_size
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cases = [[C(w * 0.5, h * 0.5)], [C(w * 0.5, h * 0.5), C(w * 0.2, h * 0.3, False)],
             [B(w * 0.2, h * 0.2, w * 0.7, h * 0.8)]]
    worst, prev = 0.0, None
    runs = [(c, None) for c in cases]
    chain = [C(w * 0.4, h * 0.5), C(w * 0.6, h * 0.4, False), C(w * 0.5, h * 0.7)]
    for k in range(3):
        runs.append((chain[: k + 1], "chain"))
    for prompts, mode in runs:
        p = prev if mode == "chain" else None
        ref = model.decode(embedding, prompts, p)
        feeds = graph_feeds(model, embedding, prompts, p)
        names = {i.name for i in sess.get_inputs()}
        low, score, _ = sess.run(["low_res", "score", "mask"], {k: v for k, v in feeds.items() if k in names})
        worst = max(worst, float(np.abs(low.reshape(-1) - ref.logits.detach().cpu().numpy().reshape(-1)).max()))
        if mode == "chain":
            prev = ref.logits
    report = {"max_abs_diff": worst, "tolerance": tol, "cases": len(runs)}
    if worst > tol:
        raise IsegError(f"the exported decoder of {model.name} differs from PyTorch by {worst:.2e} (> {tol:g})")
    return report


def export_decoder(model, folder: Optional[Path] = None, check: bool = True) -> Path:
    """The model's decoder graph, exported once per model version into ``folder`` (default
    :func:`iseg_core.weights.page_graph_dir`)
    and reused after; checked against PyTorch at export when onnxruntime is installed (the result is kept in a
    JSON file beside it). Writes go to a temporary name and are renamed: two processes never see half a file."""
    if not supports(model):
        raise IsegError(f"{getattr(model, 'name', model)} has no page decoder: only the SAM family exports one")
    from ...weights import page_graph_dir

    folder = Path(folder or page_graph_dir())
    path = folder / f"{model_key(model)}.onnx"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".partial")
    os.close(fd)
    try:
        t0 = time.perf_counter()
        export_graph(model, Path(tmp))
        info = {"model": model.name, "version": model.version, "graph": GRAPH_VERSION, "opset": OPSET,
                "export_s": round(time.perf_counter() - t0, 2), "bytes": os.path.getsize(tmp)}
        if check:
            try:
                info["check"] = check_export(model, Path(tmp))
            except ImportError:
                info["check"] = "not run: onnxruntime is not installed"
        os.replace(tmp, path)
        path.with_suffix(".json").write_text(json.dumps(info, indent=1))
        log.info("exported the page decoder of %s to %s (%s)", model.name, path, info)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def supports(model) -> bool:
    """Whether ``model`` has a page decoder (the SAM family: SAM, MobileSAM, HQ-SAM, SAM 2.1)."""
    from .model import SamSegmenter

    return isinstance(model, SamSegmenter)


class SamPageGraph(PageGraph):
    """A SAM-family model's :class:`PageGraph` (what ``SamSegmenter.page_graph`` returns)."""

    def __init__(self, model):
        self.model = model
        self.key = model_key(model)

    def export(self, folder) -> Path:
        return export_decoder(self.model, folder)

    def arrays(self, embedding) -> Dict[str, np.ndarray]:
        return page_arrays(self.model, embedding)

    def meta(self, embedding) -> dict:
        m = self.model
        return {"original_size": list(embedding.original_size), "input_size": list(embedding.extra["input_size"]),
                "crop": list(_crop(m, embedding)), "mask_size": list(m._mask_size),
                "box_first": bool(m.network.prompt_encoder.box_first)}
