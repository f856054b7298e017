"""The authors' side of bench/bench_models.py, timed on the same photo, clicks and weights as iseg's side
(test-reference code; the official folder is ../shared/reference/official beside the data, or
$ISEG_OFFICIAL_DIR). Per family: RITM's NoBRS predictor with ``LimitLongestSide`` (no flip, no ZoomIn);
SimpleClick's NoBRS predictor with its evaluation ZoomIn (448 squares, no flip); MST's (its branch's code:
main or mst-448) the same way, with its own ZoomIn (min crop 20); SegNext's own predictor (the
ViT in ``set_image``, the fusion per click); SAIC-IS's network in its predictor's steps with
``ResizeToFixedSize(448)`` (its predictor module needs the ``isegm.data`` package that folder lacks, so the
loop is written here). Prints one JSON line: encode, first and fifth click ms per round, peak RSS MB."""
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.bench_models import clicks_px  # noqa: E402
from bench.common import data_dir, report_worker, worker_args  # noqa: E402
from iseg_core.models.clickmap import CLICKMAP_CONFIGS  # noqa: E402
from iseg_core.models.clickmap.mst import MST_CONFIGS  # noqa: E402
from iseg_core.models.clickmap.segnext import SEGNEXT_CONFIGS  # noqa: E402
from iseg_core.models.clickmap.simpleclick import SIMPLECLICK_CONFIGS  # noqa: E402

args = worker_args("--max-side")
official = os.environ.get("ISEG_OFFICIAL_DIR") or str(data_dir().parent / "reference" / "official")
sys.path.insert(0, str(Path(__file__).parent))  # the scripts beside this one
from clicks import use_reference  # noqa: E402

name = args.models
state = torch.load(args.ckpt, weights_only=True)["state_dict"]


def load(net):
    """Our file holds every key the model uses; the plain ViTs' unused classification leftovers stay random."""
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith(("backbone.cls_token", "backbone.fc_norm", "backbone.head"))
                                  for k in missing), (missing, unexpected)
    return net.eval()


def plain_vit_params(c, loss):
    """The constructor arguments SimpleClick's PlainVitModel and MST's AdaptiveVitModel share (disks r=5, previous
    mask, the ViT, SimpleFPN and the x1 head) for iseg's config ``c``."""
    return dict(
        use_disks=True, norm_radius=5, with_prev_mask=True,
        backbone_params=dict(img_size=(c.frame, c.frame), patch_size=(c.patch, c.patch), in_chans=3, embed_dim=c.dim,
                             depth=c.depth, num_heads=c.heads, mlp_ratio=4, qkv_bias=True),
        neck_params=dict(in_dim=c.dim, out_dims=list(c.fpn)),
        head_params=dict(in_channels=list(c.fpn), in_index=[0, 1, 2, 3], dropout_ratio=0.1, num_classes=1,
                         loss_decode=loss, align_corners=False, upsample="x1", channels=c.head_channels))


if name.startswith("ritm_"):
    use_reference(official, "ritm")
    from isegm.model.is_hrnet_model import HRNetModel

    c = CLICKMAP_CONFIGS[name]
    net = load(HRNetModel(width=c.width, ocr_width=c.ocr_width, small=c.small, with_aux_output=True, use_leaky_relu=True,
                          use_rgb_conv=False, use_disks=True, norm_radius=5, with_prev_mask=True))
elif name.startswith("saicis_"):
    import saicis_data
    from saicis_data import IType

    saicis_data.install()
    use_reference(official, "saic_is")
    kinds = dict(use_leaky_relu=True, use_rgb_conv=False, use_disks=True, norm_radius=3, with_prev_mask=True,
                 input_type=[IType.point, IType.contour, IType.stroke], accumulate_multi_input=False)
    if "segformer" in name:
        from isegm.model.is_segformer_model import SegFormerModel

        net = load(SegFormerModel(backbone_type="mit_b4", img_size=(448, 448), with_aux_output=False, **kinds))
    else:
        from isegm.model.is_hrnet_model import HRNetModel

        c = CLICKMAP_CONFIGS[name]
        net = load(HRNetModel(width=c.width, ocr_width=c.ocr_width, with_aux_output=True,
                              is_strided_maps_transform=True, **kinds))
elif name.startswith("mst_"):
    from mst_shims import install

    c = MST_CONFIGS[name]
    install(official, "mst" if c.branch == "main" else "mst_448")
    from isegm.model.is_adaptivevit_model import AdaptiveVitModel
    from isegm.model.modeling.transformer_helper.cross_entropy_loss import CrossEntropyLoss

    net = load(AdaptiveVitModel(**plain_vit_params(c, CrossEntropyLoss())))
elif name.startswith("simpleclick_"):
    use_reference(official, "simpleclick")
    from isegm.model.is_plainvit_model import PlainVitModel
    from isegm.model.modeling.transformer_helper.cross_entropy_loss import CrossEntropyLoss

    c = SIMPLECLICK_CONFIGS[name]
    net = load(PlainVitModel(**plain_vit_params(c, CrossEntropyLoss())))
else:
    use_reference(official, "segnext/segnext")
    from isegm.model.is_plainvit_model import PlainVitModel

    c = SEGNEXT_CONFIGS[name]
    net = load(PlainVitModel(
        backbone_params=dict(img_size=(c.frame, c.frame), patch_size=(c.patch, c.patch), in_chans=3, embed_dim=c.dim,
                             depth=c.depth, global_atten_freq=c.global_every, num_heads=c.heads, mlp_ratio=4,
                             qkv_bias=True),
        neck_params=dict(in_dim=c.dim, out_dims=list(c.fpn)),
        head_params=dict(in_channels=list(c.fpn), in_select_index=[0, 1, 2, 3], dropout_ratio=0.1, num_classes=1,
                         out_channels=c.head_channels),
        fusion_params=dict(type="self_attention", depth=c.fusion_depth,
                           params=dict(dim=c.dim, num_heads=c.heads, mlp_ratio=4, qkv_bias=True)),
        use_disks=True, norm_radius=5))
image = np.load(args.image)
if name.startswith("saicis_"):
    # SAIC-IS's predictor steps with ResizeToFixedSize(448) (its predictor module needs the missing isegm.data):
    # per click the image and the previous probabilities squashed to 448, the network, the logits back up
    class Clicker(list):
        add_click = list.append

    def Click(is_positive, coords):
        return (coords[0], coords[1], is_positive)

    state = {}

    def set_image(img):
        state["image"] = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        state["prev"] = torch.zeros_like(state["image"][:, :1])

    def predict(clicker):
        h, w = state["image"].shape[-2:]
        both = torch.nn.functional.interpolate(torch.cat([state["image"], state["prev"]], 1), size=(448, 448),
                                               mode="bilinear", align_corners=True)
        pos = [(448 * r / h, 448 * c / w, k) for k, (r, c, p) in enumerate(clicker) if p]
        neg = [(448 * r / h, 448 * c / w, k) for k, (r, c, p) in enumerate(clicker) if not p]
        n = max(1, len(pos), len(neg))
        pts = torch.tensor([pos + [(-1, -1, -1)] * (n - len(pos)) + neg + [(-1, -1, -1)] * (n - len(neg))])
        logits = net(both, {"point_interactive_info": pts}, IType.point)["instances"]
        state["prev"] = torch.sigmoid(torch.nn.functional.interpolate(logits, size=(h, w), mode="bilinear",
                                                                      align_corners=True))
        return state["prev"]
elif name.startswith("segnext_"):
    from isegm.inference.clicker import Click, Clicker  # SegNext's own predictor: the ViT in set_image, the fusion per click
    from isegm.inference.predictor import BasePredictor

    predictor = BasePredictor(net)
    set_image, predict = predictor.set_image, predictor.predict
else:  # RITM's NoBRS predictor: RITM as its demo (long side 800), SimpleClick as its evaluation (448 squares)
    from isegm.inference.clicker import Click, Clicker
    from isegm.inference.predictors import get_predictor

    zoom = {"skip_clicks": -1, "target_size": (c.frame, c.frame)} if name.startswith(("simpleclick_", "mst_")) else None
    params = {"max_size": args.max_side} if name.startswith("ritm_") else {}
    predictor = get_predictor(net, "NoBRS", torch.device("cpu"), with_flip=False, zoom_in_params=zoom,
                              predictor_params=params)
    set_image, predict = predictor.set_input_image, predictor.get_prediction
encode, first, fifth = [], [], []
pts = clicks_px(*image.shape[:2])
with torch.no_grad():
    for r in range(args.rounds + 1):  # round 0 warms up
        t0 = time.perf_counter()
        set_image(image)
        t_enc = time.perf_counter() - t0
        clicker, times = Clicker(), []
        for y, x, p in pts:
            clicker.add_click(Click(is_positive=p, coords=(y, x)))
            t0 = time.perf_counter()
            predict(clicker)
            times.append(time.perf_counter() - t0)
        if r:
            encode.append(t_enc * 1e3), first.append(times[0] * 1e3), fifth.append(times[4] * 1e3)
report_worker({"encode": encode, "first": first, "fifth": fifth})
