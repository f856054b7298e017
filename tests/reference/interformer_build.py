"""InterFormer's official network built from its own configs, for the reference scripts beside this file
(interformer_official.py, interformer_timing.py). Needs mmcv 1.x lite on the path (tests/reference/packages.py)."""
import sys
import types


def build(official: str, variant: str):
    """``(model, mmcv, utils, Click, Predictor)``: the network of ``variant`` (``light``, ``tiny``, or ``light_ci`` /
    ``tiny_ci``: that configuration's neck and heads on a 2-block ViT of width 192) in eval mode, built as its demo
    builds it (``ClickSegmentorZoomIn``, the same network with ``get_roi``), ``model.cfg`` set with the test
    pipeline the demo's predictor reads; then mmcv, InterFormer's utils, and the demo's Click and Predictor."""
    root = f"{official}/interformer"
    sys.path[:0] = [f"{root}/mmsegmentation", root, f"{root}/demo/gui"]
    # mmseg's loss and head modules import mmcv.ops (compiled; absent from mmcv lite) at import time; nothing on
    # InterFormer's model path calls it. InterFormer's datasets package (training data) is not in the reference.
    ops = types.ModuleType("mmcv.ops")
    for name in ("sigmoid_focal_loss", "CrissCrossAttention", "point_sample", "PSAMask"):
        setattr(ops, name, None)
    sys.modules["mmcv.ops"] = ops
    sys.modules["interformer.datasets"] = types.ModuleType("interformer.datasets")
    # mmseg.apis imports matplotlib for its result plots, which the demo's predictor never draws
    sys.modules.setdefault("matplotlib", types.ModuleType("matplotlib"))
    sys.modules.setdefault("matplotlib.pyplot", types.ModuleType("matplotlib.pyplot"))

    import mmcv
    import torch
    from mmcv.cnn.utils import revert_sync_batchnorm

    import interformer  # noqa: F401  (registers its modules)
    from interformer import utils
    from mmseg.models import build_segmentor
    from clicker import Click  # demo/gui/clicker.py
    from predictor import Predictor  # demo/gui/predictor.py

    cfg = mmcv.Config.fromfile(f"{root}/configs/interformer_{variant.split('_')[0]}_coco_lvis_320k.py")
    cfg.model.pretrained = None
    cfg.model.train_cfg = None
    cfg.model.type = "ClickSegmentorZoomIn"
    if variant.endswith("_ci"):
        cfg.model.backbone.update(embed_dims=192, num_layers=2, num_heads=3)
    norm = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
    cfg.data.test = mmcv.ConfigDict(pipeline=[
        dict(type="LoadImageFromFile"), dict(type="Normalize", **norm),
        dict(type="Pad", size_divisor=32, pad_val=0, seg_pad_val=0), dict(type="ImageToTensor", keys=["img"]),
        dict(type="Collect", keys=["img"], meta_keys=("ori_shape", "img_shape", "pad_shape"))])
    torch.manual_seed(0)
    model = revert_sync_batchnorm(build_segmentor(cfg.model)).eval()
    model.cfg = cfg
    return model, mmcv, utils, Click, Predictor
