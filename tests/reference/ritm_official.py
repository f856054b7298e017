"""Run RITM's official HRNet model (from ../shared/reference/official/ritm) for the equality test; test-only,
run in a subprocess because the reference code owns the top-level package name ``isegm``.

    python ritm_official.py OFFICIAL_DIR PHOTO.npy OUT_DIR

Builds ``HRNetModel`` as models/iter_mask/hrnet18s_cocolvis_itermask_3p.py does, with seeded random weights
(BatchNorm statistics too), saves it the way the official trainer does (``{"state_dict", "config"}``), and
writes the network's logits for: one positive click; three clicks of both signs with the previous
probabilities; a three-click sequence through the official NoBRS predictor (no flip, no ZoomIn); and the
probabilities and crop of a four-click sequence through it with its ZoomIn (target size 400), without and with
its flip averaging.
"""
import sys
from pathlib import Path

import numpy as np
import torch

official, photo_path, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
from clicks import one_and_three, predictor_sequence, randomize_norms, use_reference  # noqa: E402

use_reference(official, "ritm")
import isegm.inference.clicker  # noqa: E402
import isegm.inference.predictors  # noqa: E402
from isegm.model.is_hrnet_model import HRNetModel  # noqa: E402

torch.manual_seed(0)
net = HRNetModel(width=18, ocr_width=48, small=True, with_aux_output=True, use_leaky_relu=True,
                 use_rgb_conv=False, use_disks=True, norm_radius=5, with_prev_mask=True)
with torch.no_grad():
    randomize_norms(net)
    net.maps_transform[3].scale.fill_(8.0)  # clicks weigh in visibly (initialised at 0.05)
net.eval()
torch.save({"state_dict": net.state_dict(), "config": net._config}, out / "ritm_h18s.pth")

photo = np.load(photo_path)
image = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
clicks = [(120, 200, True), (60, 40, False), (250, 300, True)]  # (row, col, positive)


results = {}
results["one"], results["three"] = one_and_three(net, image, clicks)

seen = []
net.register_forward_hook(lambda mod, inp, outp: seen.append(outp["instances"][0, 0].detach().clone().numpy()))


def sequence(prefix, click_list, zoom_in_params, with_flip=False):
    """Probabilities, the ZoomIn crop (-1s when none) and, without ZoomIn, the network's logits after each click."""
    for k, (prob, roi) in enumerate(predictor_sequence(isegm.inference, net, photo, click_list, zoom_in_params,
                                                       with_flip)):
        results[f"{prefix}{k}_prob"], results[f"{prefix}{k}_roi"] = prob, roi
        if zoom_in_params is None:  # one network call per click
            results[f"{prefix}{k}"] = seen[len(seen) - len(click_list) + k]


sequence("seq", clicks, None)
# through the official ZoomIn (crop resized to long side 400, from the second click on)
zoom_clicks = [(150, 240, True), (40, 420, False), (200, 100, True), (300, 460, True)]
sequence("zoom", zoom_clicks, {"target_size": 400})
# RITM's evaluation setting: ZoomIn and horizontal-flip averaging
sequence("flipzoom", zoom_clicks, {"target_size": 400}, with_flip=True)
np.savez(out / "ritm_h18s.npz", **results)
