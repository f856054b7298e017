"""The click-map family trains through the model interface: clicks only, the NFL alone (its authors' loss),
full mode for the networks whose clicks enter at the stem (RITM, SimpleClick), decoder mode (the ViT frozen,
features cached) for SegNext and InterFormer; each result saves under the publisher's key names and loads with load_model."""
import pytest
import torch

from iseg_core import load_model
from iseg_core.errors import IsegError
from iseg_core.prompts import Click
from training.data import folder_objects

from training.finetune import FinetuneConfig, Trainer, evaluate

from .test_training_finetune import blobs


def params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_simpleclick_learns_from_clicks_with_the_nfl(tmp_path):
    objects = folder_objects(blobs(tmp_path / "d", n=6))
    torch.manual_seed(0)
    model = load_model("simpleclick_vit_xtiny448_cocolvis", device="cpu")
    assert model.training_modes == ("full",) and model.canvas == (448, 448)
    with pytest.raises(IsegError, match="trains in full mode, not 'decoder'"):
        Trainer(model, objects, FinetuneConfig(steps=1, mode="decoder"))
    config = FinetuneConfig(steps=20, batch_size=2, lr=1e-3, warmup=3, max_corrections=1, augment=False)
    trainer = Trainer(model, objects, config, starting_from="random")
    assert trainer.mode == "full"  # auto: a model without a decoder mode trains whole even from weights
    assert trainer.weights == {"focal": 1.0, "dice": 0.0, "iou": 0.0}
    assert [k for k, _ in trainer.sampler.kinds] == ["click"]
    assert all(isinstance(p, Click) for s in trainer.batch(0) for p in s.prompts)
    before = evaluate(model, objects, max_clicks=3)
    trainer.run()
    after = evaluate(model, objects, max_clicks=3)
    assert after["mIoU@1"] > before["mIoU@1"] + 0.3, (before, after)
    assert all(h["iou"] == 0.0 for h in trainer.history)
    meta = trainer.save(tmp_path / "sc.pt")
    loaded = load_model("simpleclick_vit_xtiny448_cocolvis", tmp_path / "sc.pt", device="cpu")
    a, b = params(model.network), params(loaded.network)
    assert loaded.version == meta["version"] and all(torch.equal(a[k], b[k]) for k in a)


def test_segnext_decoder_mode_trains_the_fusion_on_cached_features(tmp_path):
    objects = folder_objects(blobs(tmp_path / "d", n=2))
    torch.manual_seed(0)
    model = load_model("segnext_vit_b1024_sax1_cocolvis", device="cpu")
    start = params(model.network)
    trainer = Trainer(model, objects, FinetuneConfig(steps=2, batch_size=1, lr=1e-3, warmup=1, max_corrections=1),
                      starting_from="base")
    assert trainer.mode == "decoder" and trainer.weights["dice"] == 0.0
    trainer.run()
    assert len(trainer._features) <= 2  # each image encoded once, its features kept
    now = params(model.network)
    changed = {k.split(".")[0] for k in now if not torch.equal(now[k], start[k])}
    assert "backbone" not in changed and {"fusion_blocks", "neck", "head"} <= changed
    trainer.save(tmp_path / "sn.pt")
    loaded = load_model("segnext_vit_b1024_sax1_cocolvis", tmp_path / "sn.pt", device="cpu")
    assert loaded.encoder_version == model.version  # embeddings cached before the swap stay valid
    b = params(loaded.network)
    assert all(torch.equal(now[k], b[k]) for k in now)


def test_ritm_trains_whole_at_its_frame(tmp_path):
    objects = folder_objects(blobs(tmp_path / "d", n=2))
    torch.manual_seed(0)
    model = load_model("ritm_hrnet18s_cocolvis", device="cpu")
    assert model.canvas == (800, 800) and model.frame_size(96, 128) == (96, 128)  # native size, top-left
    start = params(model.network)
    trainer = Trainer(model, objects, FinetuneConfig(steps=1, batch_size=1, max_corrections=0, augment=False))
    trainer.run()
    now = params(model.network)
    assert not torch.equal(now["feature_extractor.cls_head.weight"], start["feature_extractor.cls_head.weight"])
    assert not torch.equal(now["maps_transform.0.weight"], start["maps_transform.0.weight"])
    stats = [k for k in now if k.endswith(("running_mean", "running_var"))]  # BatchNorm keeps its statistics
    assert stats and all(torch.equal(now[k], start[k]) for k in stats)
    trainer.save(tmp_path / "ritm.pt")
    loaded = load_model("ritm_hrnet18s_cocolvis", tmp_path / "ritm.pt", device="cpu")
    assert all(torch.equal(now[k], v) for k, v in params(loaded.network).items())


def test_saicis_trains_on_clicks_contours_and_strokes(tmp_path):
    """SAIC-IS's multi-input network trains on the kinds of input it takes: its contour and stroke channels
    learn from the simulated contours and strokes."""
    from iseg_core.prompts import Contour, Scribble

    objects = folder_objects(blobs(tmp_path / "d", n=4))
    torch.manual_seed(0)
    model = load_model("saicis_hrnet18_multi_cocolvis", device="cpu")
    start = params(model.network)
    trainer = Trainer(model, objects, FinetuneConfig(steps=1, batch_size=4, max_corrections=0, augment=False, seed=0))
    assert sorted(k for k, _ in trainer.sampler.kinds) == ["click", "contour", "scribble"]
    samples = trainer.batch(0)
    drawn = {type(s.prompts[-1]) for s in samples}
    assert drawn & {Contour, Scribble}, drawn
    loss, _ = trainer.loss(samples)
    loss.backward()
    grad = model.network.maps_transform[0].weight.grad  # input channels: prev, click +/-, contour +/-, stroke +/-
    assert grad[:, 3:].abs().sum() > 0 and grad[:, 1:3].abs().sum() > 0
    trainer.run()
    assert not torch.equal(start["feature_extractor.cls_head.weight"],
                           params(model.network)["feature_extractor.cls_head.weight"])


def test_interformer_trains_its_neck_and_heads_on_cached_features(tmp_path):
    """InterFormer's split: decoder mode keeps the ViT and SimpleFPN frozen (each image encoded once, its four maps
    cached) and trains the I-MSA neck, UPerHead and the FCN auxiliary head (its recipe: NFL, aux NFL x 0.4); it
    learns, and the result loads back (a CI-sized ViT: Light's neck and heads on a 2-block ViT of width 192)."""
    from dataclasses import replace

    from iseg_core.models import read_weights
    from iseg_core.models.interformer import INTERFORMER_CONFIGS, build_interformer

    name = "interformer_light_vitb_cocolvis"
    config = replace(INTERFORMER_CONFIGS[name], dim=192, depth=2, heads=3)
    objects = folder_objects(blobs(tmp_path / "d", n=6))
    torch.manual_seed(0)
    model = build_interformer(name, None, torch.device("cpu"), config=config)
    assert model.training_modes == ("decoder", "full") and model.canvas == (512, 512)
    start = params(model.network)
    trainer = Trainer(model, objects, FinetuneConfig(steps=20, batch_size=2, lr=1e-3, warmup=3, max_corrections=1,
                                                     augment=False), starting_from="base")
    assert trainer.mode == "decoder" and trainer.weights == {"focal": 1.0, "dice": 0.0, "iou": 0.0}
    before = evaluate(model, objects, max_clicks=3)
    trainer.run()
    after = evaluate(model, objects, max_clicks=3)
    assert after["mIoU@1"] > before["mIoU@1"] + 0.2, (before, after)
    assert len(trainer._features) <= 6 and all(h["extra"] > 0 for h in trainer.history)  # the aux head's loss
    now = params(model.network)
    changed = {k.split(".")[0] for k in now if not torch.equal(now[k], start[k])}
    assert changed == {"neck", "decode_head", "auxiliary_head"}
    meta = trainer.save(tmp_path / "if.pt")
    loaded = build_interformer(name, read_weights(name, tmp_path / "if.pt"), torch.device("cpu"), config=config)
    assert loaded.version == meta["version"] and loaded.encoder_version == model.version
    b = params(loaded.network)
    assert all(torch.equal(now[k], b[k]) for k in now)


def test_mst_trains_with_its_token_losses(tmp_path):
    """MST's recipe: the whole network (clicks enter at the stem), NFL + PatchLoss + ScoreLoss (weight 1 each)
    through the trainer's extra-loss hook; the token losses reach the score blocks, the model learns, and the
    result loads back (CI size: width 192, 3 heads, 12 blocks so the score blocks stay at 3, 7, 11)."""
    from dataclasses import replace

    from iseg_core.models import read_weights
    from iseg_core.models.clickmap import build_clickmap
    from iseg_core.models.clickmap.mst import MST_CONFIGS

    name = "mst_vit_b448_slim_cocolvis"
    config = replace(MST_CONFIGS[name], dim=192, heads=3, fpn=(48, 96, 192, 384), head_channels=64)
    objects = folder_objects(blobs(tmp_path / "d", n=6))
    torch.manual_seed(0)
    model = build_clickmap(name, None, torch.device("cpu"), config=config)
    assert model.training_modes == ("full",) and model.canvas == (448, 448)
    trainer = Trainer(model, objects, FinetuneConfig(steps=16, batch_size=2, lr=5e-4, warmup=3, max_corrections=1,
                                                     augment=False), starting_from="random")
    # the token losses alone move the score blocks' streams (their only other path to the mask is the fusion)
    samples = trainer.batch(0)
    out = trainer._forward(trainer._features_of(samples), samples, [None] * len(samples))
    gt, valid = trainer._targets(samples, (448, 448))
    token = out.extra_loss(gt, valid)
    token.backward()
    grads = [p.grad for n, p in model.network.named_parameters() if ".score.cross_attn." in n]
    assert float(token.detach()) > 0 and any(g is not None and g.abs().sum() > 0 for g in grads)
    model.network.zero_grad()
    before = evaluate(model, objects, max_clicks=3)
    trainer.run()
    after = evaluate(model, objects, max_clicks=3)
    assert after["mIoU@1"] > before["mIoU@1"] + 0.2, (before, after)
    assert all(h["extra"] > 0 for h in trainer.history)
    meta = trainer.save(tmp_path / "mst.pt")
    loaded = build_clickmap(name, read_weights(name, tmp_path / "mst.pt"), torch.device("cpu"), config=config)
    a, b = params(model.network), params(loaded.network)
    assert loaded.version == meta["version"] and all(torch.equal(a[k], b[k]) for k in a)
