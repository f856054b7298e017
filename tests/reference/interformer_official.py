"""Run InterFormer's official model (../shared/reference/official/interformer) for the equality test; test-only,
in a subprocess because the reference code needs mmcv 1.x (installed lite for the tests, never for the product)
and InterFormer's own mmsegmentation 0.26 on the path.

    python interformer_official.py OFFICIAL_DIR PHOTO.npy OUT_DIR VARIANT

VARIANT: ``light`` (configs/interformer_light_coco_lvis_320k.py: ViT-B, no refine blocks), ``tiny`` (the ViT-L
configuration), or ``light_ci`` / ``tiny_ci``: that configuration's neck and heads (Tiny's with refine blocks) on a
2-block ViT of width 192, the same code paths at CI size. Builds the network from the config with seeded random weights in every table
(relative position biases, layer scales, every norm, BatchNorm statistics), saves it as mmcv's trainer does
(``{"meta": {"config": cfg.pretty_text, ...}, "state_dict", "optimizer"}``), and writes: the four FPN maps of
the photo (padded to 352 x 512), the label maps and foreground logits of one click and of three clicks of both
signs with the previous prediction merged in, the ROI InterFormer's ZoomIn takes, and a three-click sequence
through the demo's own ``Predictor`` (demo/gui/predictor.py), with its ZoomIn (from the third click) where the
variant has refine blocks.
"""
import sys
from pathlib import Path

import numpy as np
import torch

from clicks import randomize_norms
from interformer_build import build

official, photo_path, out, variant = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
model, mmcv, utils, Click, Predictor = build(official, variant)
cfg = model.cfg
config_file = f"interformer_{variant.split('_')[0]}_coco_lvis_320k.py"
norm = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
with torch.no_grad():
    for name, p in model.named_parameters():
        if "relative_position_bias_table" in name:
            p.normal_(0, 0.5)
        elif name.endswith(("gamma_1", "gamma_2")):
            p.uniform_(0.5, 1.5)
        elif name.endswith(("cls_token", "pos_embed")):
            p.normal_(0, 0.1)
    randomize_norms(model)  # every LayerNorm, GroupNorm and BatchNorm (with its statistics)

photo = np.load(photo_path)
bgr = np.ascontiguousarray(photo[:, :, ::-1])
img = mmcv.imnormalize(bgr.astype(np.float32), np.array(norm["mean"]), np.array(norm["std"]), True)
img = mmcv.impad_to_multiple(img, 32, pad_val=0)
img = torch.from_numpy(img).permute(2, 0, 1)[None].float()
padded = tuple(img.shape[-2:])
clicks = [(150, 240, "positive"), (60, 420, "negative"), (200, 110, "positive")]  # (row, col, mode), image pixels


def paint(ref, click):
    return model.update_ref_label_by_point_lists(ref, [[click]], inner_radius=5, outer_radius=0)


def logits(feats, ref, roi=None):
    out = model.encode_decode(img, None, x=feats, ref_label=ref, roi=roi)
    return out


results = {}
with torch.no_grad():
    feats = model.backbone(img)
    ref0 = utils.REF_UNKNOWN * torch.ones((1, 1) + padded)
    # a random net answers nearly the same everywhere: spread and centre the logit difference
    model.decode_head.conv_seg.weight.mul_(3)
    ref1 = paint(ref0, clicks[0])
    first = logits(feats, ref1)
    model.decode_head.conv_seg.bias[1] -= (first[:, 1] - first[:, 0]).quantile(0.9)
    one = logits(feats, ref1)
    pred1 = one.argmax(1, keepdim=True)
    after1 = model.update_ref_label_by_prediction(ref1, pred1)
    ref3 = paint(paint(after1, clicks[1]), clicks[2])
    three = logits(feats, ref3)
    results.update({f"fpn{i}": f[0].numpy() for i, f in enumerate(feats)})
    results.update(one=(one[0, 1] - one[0, 0]).numpy(), three=(three[0, 1] - three[0, 0]).numpy(),
                   ref1=ref1[0, 0].numpy().astype(np.uint8), after1=after1[0, 0].numpy().astype(np.uint8),
                   ref3=ref3[0, 0].numpy().astype(np.uint8))
    # the box of the clicks alone (the random net's prediction spreads over the whole photo): a ROI that crops
    roi = model.get_roi(pre_label=torch.zeros_like(pred1), ref_label=ref3, expand_ratio=(1.4, 1.4), max_stride=32,
                        min_size=32)
    results["roi3"] = roi[0, 0].numpy() if roi.dim() == 3 else roi[0].numpy()
    roi_logits = logits(feats, ref3, roi)
    results["three_roi"] = (roi_logits[0, 1] - roi_logits[0, 0]).numpy()

meta = {"config": cfg.pretty_text, "CLASSES": ("Background", "Foreground"), "PALETTE": [[0, 0, 0], [255, 255, 255]],
        "mmseg_version": "0.26.0", "mmcv_version": mmcv.__version__, "iter": 320000, "epoch": 1, "seed": 0,
        "exp_name": config_file, "env_info": "test reference"}
optimizer = {"state": {0: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(8)}}, "param_groups": [{"lr": 1e-4}]}
torch.save({"meta": meta, "state_dict": model.state_dict(), "optimizer": optimizer}, out / f"interformer_{variant}.pth")

# The demo's inference loop: paint the click, predict (ZoomIn from click 3 where there are refine blocks), merge.
recorded = []
encode_decode = model.encode_decode


def recording(*args, **kwargs):
    result = encode_decode(*args, **kwargs)
    roi = kwargs.get("roi")
    recorded.append(((result[0, 1] - result[0, 0]).numpy().copy(),
                     np.full(4, -1) if roi is None else roi.reshape(4).numpy().astype(np.int64)))
    return result


model.encode_decode = recording
refines = any(not isinstance(r, torch.nn.Identity) for r in model.neck.refine_stages)
zoom = {"skip_clicks": 2, "expansion_ratio": 1.4, "min_size": 32} if refines else None
predictor = Predictor(model, "cpu", {"inner_radius": 5, "outer_radius": 0, "zoom_in_params": zoom})
with torch.no_grad():
    predictor.set_input_image(bgr)
    assert tuple(predictor.img_pad_shape) == padded
    for k, (r, c, mode) in enumerate(clicks):
        predictor.update_ref_label_by_new_click(Click(mode == "positive", (r, c)))
        results[f"seq{k}_mask"] = predictor.get_prediction(k + 1, None).astype(np.uint8)
        results[f"seq{k}_logits"], results[f"seq{k}_roi"] = recorded[-1]
        results[f"seq{k}_ref"] = predictor.ref_label[0, 0].numpy().astype(np.uint8)
np.savez(out / f"interformer_{variant}.npz", **results)
