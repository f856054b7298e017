"""Run SegNext's official model (from ../shared/reference/official/segnext) for the equality test; test-only,
run in a subprocess because the reference code owns the top-level package name ``isegm``.

    python segnext_official.py OFFICIAL_DIR PHOTO.npy OUT_DIR

Builds ``PlainVitModel`` as segnext/models/default/plainvit_base1024_cocolvis_sax2.py does (ViT-B, 1024 px,
two self-attention fusion blocks) with seeded random weights (norm affines too), saves it the way the official
trainer does (``{"state_dict", "config"}``), and writes the logits (at the photo's size) for one positive click
and for three clicks of both signs with the previous probabilities, then the probabilities of a three-click
sequence through the official predictor (image encoded once, previous mask fed back).
"""
import sys
from pathlib import Path

import numpy as np
import torch

official, photo_path, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
from clicks import points, randomize_norms, use_reference  # noqa: E402

use_reference(official, "segnext/segnext")
from isegm.inference.clicker import Click, Clicker  # noqa: E402
from isegm.inference.predictor import BasePredictor  # noqa: E402
from isegm.model.is_plainvit_model import PlainVitModel  # noqa: E402


torch.manual_seed(0)
net = PlainVitModel(
    backbone_params=dict(img_size=(1024, 1024), patch_size=(16, 16), in_chans=3, embed_dim=768, depth=12,
                         global_atten_freq=3, num_heads=12, mlp_ratio=4, qkv_bias=True),
    neck_params=dict(in_dim=768, out_dims=[128, 256, 512, 1024]),
    head_params=dict(in_channels=[128, 256, 512, 1024], in_select_index=[0, 1, 2, 3], dropout_ratio=0.1,
                     num_classes=1, out_channels=256),
    fusion_params=dict(type="self_attention", depth=2, params=dict(dim=768, num_heads=12, mlp_ratio=4, qkv_bias=True)),
    use_disks=True, norm_radius=5)
with torch.no_grad():
    randomize_norms(net)
    net.visual_prompts_encoder.proj.weight.mul_(50)  # clicks weigh in visibly
net.eval()

photo = np.load(photo_path)
image = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
clicks = [(120, 200, True), (60, 40, False), (250, 300, True)]  # (row, col, positive), image pixels


def logits(feats, prev, cl):
    prompts = {"points": points(cl), "prev_mask": prev}
    return net(image.shape, feats, net.get_prompt_feats(image.shape, prompts))["instances"]


with torch.no_grad():
    feats = net.get_image_feats(image)
    zeros = torch.zeros_like(image[:, :1])
    # a random net answers nearly the same everywhere: spread and centre its logits
    net.head.seg_conv.weight.mul_(100)
    net.head.seg_conv.bias.sub_(logits(feats, zeros, clicks[:1]).quantile(0.8))
    one = logits(feats, zeros, clicks[:1])
    three = logits(feats, torch.sigmoid(one), clicks)
torch.save({"state_dict": net.state_dict(), "config": net._config}, out / "segnext_sax2.pth")
results = {"one": one[0, 0].numpy(), "three": three[0, 0].numpy()}

predictor = BasePredictor(net)
with torch.no_grad():
    predictor.set_image(photo)
    clicker = Clicker()
    for k, (r, c, p) in enumerate(clicks):
        clicker.add_click(Click(is_positive=p, coords=(r, c)))
        results[f"seq{k}_prob"] = predictor.predict(clicker)
np.savez(out / "segnext_sax2.npz", **results)
