"""Run SAIC-IS's official multi-input HRNet (from ../shared/reference/official/saic_is) for the equality test;
test-only, run in a subprocess because the reference code owns the top-level package name ``isegm``.

    python saicis_official.py OFFICIAL_DIR PHOTO.npy OUT_DIR

The reference folder holds SAIC-IS's model and inference code but not its ``isegm.data`` package: stand-in
modules give what the model and predictor read of it (the ``IType`` members, ``Contour.get_mask``). Builds
``HRNetModel`` as models/hrnet/hrnet18_cocolvis_itermask_multi_input.py does (clicks, contours and strokes;
disks of radius 3; strided maps transform) with seeded random weights (BatchNorm statistics too), saves it the
way the official trainer does, and writes the network's logits on the photo squashed to 448 x 448 for: one
positive click; three clicks of both signs with the previous probabilities; a contour as the first
interaction; a stroke as the first interaction (the maps drawn as SAIC-IS's predictor draws them: a filled
polygon, an open polyline 10 px wide, vertices truncated to whole pixels); then two sequences through SAIC-IS's
own predictor with its evaluation transforms (ZoomIn from the second click and from a first contour, crops to
long side 400, ResizeToFixedSize 448, flip averaging: its transforms need the flip to build their batch): three clicks, and a contour followed by two clicks (the folder's missing
``isegm.data`` modules get stand-ins with what the predictor reads of them). Then the four network cases for
its multi-input SegFormer (MiT-B4, aux head).
"""
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

official, photo_path, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
import saicis_data  # noqa: E402
from clicks import points, randomize_norms, use_reference  # noqa: E402
from saicis_data import Contour, IType  # noqa: E402

use_reference(official, "saic_is")


saicis_data.install()
from isegm.model.is_hrnet_model import HRNetModel  # noqa: E402


torch.manual_seed(0)
net = HRNetModel(width=18, ocr_width=64, with_aux_output=True, use_leaky_relu=True, is_strided_maps_transform=True,
                 use_rgb_conv=False, use_disks=True, norm_radius=3, with_prev_mask=True,
                 input_type=[IType.point, IType.contour, IType.stroke], accumulate_multi_input=False)
with torch.no_grad():
    randomize_norms(net)
    net.maps_transform[3].scale.fill_(8.0)  # interactions weigh in visibly (initialised at 0.05)
net.eval()

photo = np.load(photo_path)
image = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
square = torch.nn.functional.interpolate(image, size=(448, 448), mode="bilinear", align_corners=True)
h, w = photo.shape[:2]
clicks = [(120, 200, True), (60, 40, False), (250, 300, True)]  # (row, col, positive) in the 448 frame
contour = [(70, 110), (60, 210), (190, 230), (200, 100)]  # (row, col) in image pixels
stroke = [(140, 90), (130, 150), (150, 200), (135, 240)]  # (row, col) in image pixels, positive


def drawn(coords, filled):
    """(1, 2, 448, 448): the positive channel drawn as SAIC-IS's predictor draws it (vertices mapped as its
    ResizeToFixedSize maps them, then truncated), the negative channel empty."""
    layer = np.zeros((448, 448), np.uint8)
    rc = np.array(coords, np.float64)
    pts = np.stack([448 * rc[:, 1] / w, 448 * rc[:, 0] / h], 1).astype(np.int32)
    if filled:
        cv2.fillPoly(layer, [pts], 1)
    else:
        cv2.polylines(layer, [pts], False, 1, 10)
    return torch.from_numpy(np.stack([layer, np.zeros_like(layer)]).astype(np.float32))[None]


def run(prev, info, kind):
    return net(torch.cat([square, prev], 1), info, kind)["instances"]


results = {}


def save_and_run(head, name):
    """Spread and centre the random net's logits with its last conv (a random net answers nearly the same
    everywhere), save it as the trainer does, and write the four cases."""
    zeros = torch.zeros_like(square[:, :1])
    with torch.no_grad():
        head.weight.mul_(30)
        head.bias.sub_(run(zeros, {"point_interactive_info": points(clicks[:1])}, IType.point).quantile(0.7))
    torch.save({"state_dict": net.state_dict(), "config": net._config}, out / f"{name}.pth")
    with torch.no_grad():
        one = run(zeros, {"point_interactive_info": points(clicks[:1])}, IType.point)
        three = run(torch.sigmoid(one), {"point_interactive_info": points(clicks)}, IType.point)
        by_contour = run(zeros, {"contour_interactive_info": drawn(contour, True)}, IType.contour)
        by_stroke = run(zeros, {"stroke_interactive_info": drawn(stroke, False)}, IType.stroke)
    np.savez(out / f"{name}.npz", one=one[0, 0].numpy(), three=three[0, 0].numpy(),
             contour=by_contour[0, 0].numpy(), stroke=by_stroke[0, 0].numpy())


save_and_run(net.feature_extractor.cls_head, "saicis_h18_multi")


class OneClick:  # the parts of SAIC-IS's Click the predictor reads
    def __init__(self, is_positive, coords, indx):
        self.is_positive, self.coords, self.indx = is_positive, coords, indx

    @property
    def coords_and_indx(self):
        return (*self.coords, self.indx)

    def copy(self, coords):
        return OneClick(self.is_positive, coords, self.indx)


class Steps:
    """SAIC-IS's evaluation state after each step: every click, and the current step's contour or stroke."""

    def __init__(self):
        self.clicks, self.outline = [], {}

    def get_interactions(self):
        contours = [[self.outline[IType.contour]]] if IType.contour in self.outline else []
        strokes = [self.outline[IType.stroke]] if IType.stroke in self.outline else []
        return {IType.point: list(self.clicks), IType.contour: contours, IType.stroke: strokes}


from isegm.inference.predictors.base import BasePredictor  # noqa: E402
from isegm.inference.transforms import ZoomIn  # noqa: E402

h, w = photo.shape[:2]
with torch.no_grad():
    for prefix, sequence in (("seq", [("click", (150, 240, True)), ("click", (40, 420, False)),
                                       ("click", (200, 100, True))]),
                             ("contourseq", [("contour", contour), ("click", (150, 160, True)),
                                             ("click", (40, 420, False))])):
        zoom = ZoomIn(target_size=400, skip_interactions={IType.point: 1, IType.contour: -1, IType.stroke: -1})
        predictor = BasePredictor(net, torch.device("cpu"), zoom_in=zoom, fixed_size=(448, 448), with_flip=True)
        predictor.set_input_image(photo)
        steps = Steps()
        for k, (kind, value) in enumerate(sequence):
            steps.outline = {}
            if kind == "click":
                steps.clicks.append(OneClick(value[2], value[:2], len(steps.clicks)))
                itype = IType.point
            else:
                steps.outline[IType.contour] = Contour(True, [tuple(map(float, v)) for v in value])
                itype = IType.contour
            results[f"{prefix}{k}_prob"] = predictor.get_prediction(steps, input_type=itype)
            roi = zoom._object_roi
            results[f"{prefix}{k}_roi"] = np.array(roi if roi is not None else (-1, -1, -1, -1))
np.savez(out / "saicis_h18_multi_seq.npz", **results)

# the multi-input SegFormer (models/segformer/segformer_cocolvis_itermask_multi_input.py, with its aux head)
from isegm.model.is_segformer_model import SegFormerModel  # noqa: E402

torch.manual_seed(1)
net = SegFormerModel(backbone_type="mit_b4", img_size=(448, 448), align_corners=False, with_aux_output=True,
                     use_leaky_relu=True, use_rgb_conv=False, use_disks=True, norm_radius=3, with_prev_mask=True,
                     is_training=True, input_type=[IType.point, IType.contour, IType.stroke],
                     accumulate_multi_input=False)
with torch.no_grad():
    randomize_norms(net)
    net.maps_transform[3].scale.fill_(8.0)
net.eval()
save_and_run(net.feature_extractor.decode_head.linear_pred, "saicis_segformer_multi")
