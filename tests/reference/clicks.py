"""Shared by the reference scripts beside it (each runs as ``python tests/reference/<script>.py``, so this folder
is on its path): RITM-style point tensors and the two plain network calls every equality test checks."""
import sys

import torch


def use_reference(official: str, folder: str) -> None:
    """Put the official folder's shims in place and its ``folder`` (the one that holds an ``isegm``) on the path."""
    sys.path.insert(0, official)
    import shims

    shims.install()
    sys.path.insert(0, f"{official}/{folder}")


def points(cl):
    """(row, col, positive) in click order -> (1, 2N, 3): positives then negatives, each padded with -1s."""
    pos = [(r, c, k) for k, (r, c, p) in enumerate(cl) if p]
    neg = [(r, c, k) for k, (r, c, p) in enumerate(cl) if not p]
    n = max(1, len(pos), len(neg))
    pad = [(-1, -1, -1)]
    return torch.tensor([pos + pad * (n - len(pos)) + neg + pad * (n - len(neg))], dtype=torch.float32)


def one_and_three(net, image, clicks):
    """Logits (H, W) for the first click alone, then for three clicks with its probabilities as the previous
    mask: the network's own forward (image with the previous-mask channel), no predictor."""
    with torch.no_grad():
        prev = torch.zeros_like(image[:, :1])
        one = net(torch.cat([image, prev], 1), points(clicks[:1]))["instances"]
        three = net(torch.cat([image, torch.sigmoid(one)], 1), points(clicks))["instances"]
    return one[0, 0].numpy(), three[0, 0].numpy()


def predictor_sequence(isegm_inference, net, photo, click_list, zoom_in_params, with_flip=False):
    """Clicks one by one through the official NoBRS predictor of ``isegm_inference`` (the reference's
    ``isegm.inference`` package) -> per click (probabilities, ZoomIn crop or -1s)."""
    import numpy as np

    predictor = isegm_inference.predictors.get_predictor(net, "NoBRS", torch.device("cpu"), with_flip=with_flip,
                                                         zoom_in_params=zoom_in_params)
    predictor.set_input_image(photo)
    clicker = isegm_inference.clicker.Clicker()
    steps = []
    for r, c, p in click_list:
        clicker.add_click(isegm_inference.clicker.Click(is_positive=p, coords=(r, c)))
        with torch.no_grad():
            prob = predictor.get_prediction(clicker)
        roi = predictor.zoom_in._object_roi if predictor.zoom_in is not None else None
        steps.append((prob, np.array(roi if roi is not None else (-1, -1, -1, -1))))
    return steps


def randomize_norms(net):
    """Seeded random affines (and BatchNorm statistics) for every norm layer, so that none is an identity."""
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm, torch.nn.LayerNorm)):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.1)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)


def spread_plain_vit(net, photo, quantile):
    """SimpleClick-lineage network (PlainVitModel, MST's AdaptiveVitModel) made to answer visibly: the click
    maps weigh in, the image less, and its logits spread and centred so that about ``1 - quantile`` of the
    frame is the object after a first click. Returns the photo squashed to the 448 frame ``(1, 3, 448, 448)``."""
    with torch.no_grad():
        net.patch_embed_coords.proj.weight.mul_(200)  # clicks weigh in visibly, and make a compact object
        net.backbone.patch_embed.proj.weight.mul_(0.05)
    net.eval()
    image = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    square = torch.nn.functional.interpolate(image, size=(448, 448), mode="bilinear", align_corners=True)
    with torch.no_grad():  # a random net answers nearly the same everywhere: spread and centre its logits
        net.head.conv_seg.weight.mul_(100)
        first = net(torch.cat([square, torch.zeros_like(square[:, :1])], 1),
                    torch.tensor([[[150.0, 220.0, 0.0], [-1.0, -1.0, -1.0]]]))["instances"]
        net.head.conv_seg.bias.sub_(first.quantile(quantile))
    return square
