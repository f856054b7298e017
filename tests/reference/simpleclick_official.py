"""Run SimpleClick's official plain-ViT model (from ../shared/reference/official/simpleclick) for the equality
test; test-only, run in a subprocess because the reference code owns the top-level package name ``isegm``.

    python simpleclick_official.py OFFICIAL_DIR PHOTO.npy OUT_DIR

Builds ``PlainVitModel`` as models/iter_mask/plainvit_xtiny448_cocolvis_itermask.py does (upsample x1) with
seeded random weights (GroupNorm affines too), saves it the way the official trainer does
(``{"state_dict", "config"}``: the config pickles the head's loss module), and writes the network's logits
for one positive click and for three clicks of both signs with the previous probabilities, then the
probabilities and crops of a four-click sequence through the official NoBRS predictor with SimpleClick's
evaluation ZoomIn (every click, crops squashed to 448 x 448) without and with flip averaging, and with 672 px
crops (position embedding resized as its evaluation script does).
"""
import sys
from pathlib import Path

import numpy as np
import torch

official, photo_path, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
from clicks import one_and_three, predictor_sequence, randomize_norms, spread_plain_vit, use_reference  # noqa: E402

use_reference(official, "simpleclick")
import isegm.inference.clicker  # noqa: E402
import isegm.inference.predictors  # noqa: E402
from isegm.model.is_plainvit_model import PlainVitModel  # noqa: E402
from isegm.model.modeling.pos_embed import interpolate_pos_embed_inference  # noqa: E402
from isegm.model.modeling.transformer_helper.cross_entropy_loss import CrossEntropyLoss  # noqa: E402

torch.manual_seed(0)
net = PlainVitModel(
    use_disks=True, norm_radius=5, with_prev_mask=True,
    backbone_params=dict(img_size=(448, 448), patch_size=(16, 16), in_chans=3, embed_dim=160, depth=8, num_heads=4,
                         mlp_ratio=4, qkv_bias=True),
    neck_params=dict(in_dim=160, out_dims=[96, 192, 288, 384]),
    head_params=dict(in_channels=[96, 192, 288, 384], in_index=[0, 1, 2, 3], dropout_ratio=0.1, num_classes=1,
                     loss_decode=CrossEntropyLoss(), align_corners=False, upsample="x1", channels=128),
    random_split=False)
with torch.no_grad():
    randomize_norms(net)
photo = np.load(photo_path)
square = spread_plain_vit(net, photo, 0.97)
torch.save({"state_dict": net.state_dict(), "config": net._config}, out / "simpleclick_xtiny.pth")

clicks = [(120, 200, True), (60, 40, False), (250, 300, True)]  # (row, col, positive) in the 448 frame


results = {}
results["one"], results["three"] = one_and_three(net, square, clicks)


def sequence(prefix, click_list, zoom_in_params, with_flip=False):
    """Probabilities and the ZoomIn crop after each click."""
    for k, (prob, roi) in enumerate(predictor_sequence(isegm.inference, net, photo, click_list, zoom_in_params,
                                                       with_flip)):
        results[f"{prefix}{k}_prob"], results[f"{prefix}{k}_roi"] = prob, roi


zoom_clicks = [(150, 240, True), (40, 420, False), (200, 100, True), (300, 460, True)]
# SimpleClick's evaluation ZoomIn (scripts/evaluate_model.py, "cvpr" mode): every click, square crops
sequence("zoom", zoom_clicks, {"skip_clicks": -1, "target_size": (448, 448)})
sequence("flipzoom", zoom_clicks, {"skip_clicks": -1, "target_size": (448, 448)}, with_flip=True)
interpolate_pos_embed_inference(net.backbone, (672, 672), "cpu")  # as its script does for DAVIS
sequence("zoom672", zoom_clicks, {"skip_clicks": -1, "target_size": (672, 672)}, with_flip=True)
np.savez(out / "simpleclick_xtiny.npz", **results)
