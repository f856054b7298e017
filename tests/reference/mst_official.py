"""Run MST's official model (../shared/reference/official/mst and mst_448) for the equality test; test-only, in a
subprocess because the reference owns the top-level package ``isegm``.

    python mst_official.py OFFICIAL_DIR PHOTO.npy OUT_DIR VARIANT

VARIANT: ``main`` / ``448`` (branch main's slim ViT-B 448, branch mst-448's ViT-B 448) or ``main_ci`` / ``448_ci``:
that branch's code at CI size (width 192, 3 heads, depth 12: the score blocks stay at 3, 7, 11). MST imports
mmengine (and mst-448 flash_attn, unused in its forward): permissive stand-ins take their place, as the shims
do for mmcv; einops comes from the reference's own packages (tests/reference/packages.py).

Builds ``AdaptiveVitModel`` as its models/adaptivevit_base448_cclvs.py does (upsample x1), with seeded random
weights (every norm, the gates gamma / gamma2: mst-448 starts gamma at zero, which would hide its fusion), saves
it as its trainer does (``{"state_dict", "config"}``), and writes: the network's logits for one positive click,
for three clicks of both signs with the previous probabilities, and for a negative click alone; each score
block's selected token indices and scores; MST's PatchLoss and ScoreLoss on the first click's selection against
a ground truth; and a four-click sequence through its own NoBRS predictor with its evaluation ZoomIn (every
click, crops squashed to 448 x 448, min crop 20, clicks outside the crop dropped) and flip averaging.
"""
import sys
from pathlib import Path

import numpy as np
import torch

official, photo_path, out, variant = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
from clicks import one_and_three, points, predictor_sequence, randomize_norms, spread_plain_vit  # noqa: E402
from mst_shims import install  # noqa: E402

branch = variant.split("_")[0]
install(official, "mst" if branch == "main" else "mst_448")
import isegm.inference.clicker  # noqa: E402
import isegm.inference.predictors  # noqa: E402
from isegm.model.is_adaptivevit_model import AdaptiveVitModel  # noqa: E402
from isegm.model.losses import PatchLoss, ScoreLoss  # noqa: E402
from isegm.model.modeling.transformer_helper.cross_entropy_loss import CrossEntropyLoss  # noqa: E402

ci = variant.endswith("_ci")
dim, heads, fpn = (192, 3, [48, 96, 192, 384]) if ci else (768, 12, [128, 256, 512, 1024])
channels = 64 if ci else 256
torch.manual_seed(0)
net = AdaptiveVitModel(
    use_disks=True, norm_radius=5, with_prev_mask=True,
    backbone_params=dict(img_size=(448, 448), patch_size=(16, 16), in_chans=3, embed_dim=dim, depth=12,
                         num_heads=heads, mlp_ratio=4, qkv_bias=True),
    neck_params=dict(in_dim=dim, out_dims=fpn),
    head_params=dict(in_channels=fpn, in_index=[0, 1, 2, 3], dropout_ratio=0.1, num_classes=1,
                     loss_decode=CrossEntropyLoss(), align_corners=False, upsample="x1", channels=channels),
    random_split=False)
with torch.no_grad():
    randomize_norms(net)
    for name, p in net.named_parameters():
        if name.endswith(("gamma", "gamma2")):
            p.uniform_(0.5, 1.5)
photo = np.load(photo_path)
square = spread_plain_vit(net, photo, 0.99)
torch.save({"state_dict": net.state_dict(), "config": net._config}, out / f"mst_{variant}.pth")

clicks = [(120, 200, True), (60, 40, False), (250, 300, True)]  # (row, col, positive) in the 448 frame
results = {}
results["one"], results["three"] = one_and_three(net, square, clicks)
with torch.no_grad():
    zero = torch.zeros_like(square[:, :1])
    results["negative"] = net(torch.cat([square, zero], 1), points([(200, 150, False)]))["instances"][0, 0].numpy()
    output = net(torch.cat([square, zero], 1), points(clicks[:1]))
    for b, tokens in enumerate(output["tokens"]):
        for key in ("idx_tokens_s", "idx_tokens_l", "pos_scores_s", "pos_scores_l"):
            results[f"block{b}_{key}"] = tokens[key][0].numpy()
        for key in ("sel_tokens_s", "sel_tokens_l"):
            results[f"block{b}_{key}"] = tokens[key][0].numpy()
    gt = torch.zeros(1, 1, 448, 448)
    gt[..., 60:300, 120:330] = 1  # holds some of the kept tokens, not all
    results["gt"] = gt[0, 0].numpy()
    results["patch_loss"] = np.array(float(PatchLoss()(output["tokens"], gt)))
    results["score_loss"] = np.array(float(ScoreLoss()(output["tokens"], gt)))

# MST's evaluation (evaluate_model.py): ZoomIn on every click, crops squashed to 448, flip averaging
zoom_clicks = [(150, 240, True), (40, 420, False), (200, 100, True), (300, 460, True)]
for k, (prob, roi) in enumerate(predictor_sequence(isegm.inference, net, photo, zoom_clicks,
                                                   {"skip_clicks": -1, "target_size": (448, 448)}, with_flip=True)):
    results[f"zoom{k}_prob"], results[f"zoom{k}_roi"] = prob, roi
np.savez(out / f"mst_{variant}.npz", **results)
