"""The fine-tuning loop: it learns, it resumes exactly, its files load with load_model, bad input is refused
clearly; the command line (also under torchrun with two CPU processes) and the model-version registration."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from iseg_core import load_model
from iseg_core.errors import CheckpointError, IsegError
from iseg_core.eval.datasets import DatasetError
from storage import Store
from tests.conftest import ROOT, free_port
from training.data import folder_objects
from training.finetune import FinetuneConfig, Trainer, evaluate, is_better


def blobs(folder, n=12, seed=0, size=(96, 128)):
    """An images + masks folder: one bright ellipse per image on a textured dark background, and a distractor."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        img = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(0.15, 0.3) * h, rng.uniform(0.15, 0.3) * w
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img[m] = rng.integers(150, 255, 3)
        d = (np.abs(yy - rng.uniform(0, h)) < 6) & (np.abs(xx - rng.uniform(0, w)) < 6) & ~m
        img[d] = rng.integers(150, 255, 3)
        Image.fromarray(img).save(folder / "images" / f"b{i:03d}.png")
        Image.fromarray((m * 255).astype(np.uint8)).save(folder / "masks" / f"b{i:03d}.png")
    return folder


def mini(seed=0):
    torch.manual_seed(seed)
    return load_model("sam_mini", device="cpu")


def weights(model):
    return {k: v.detach().clone() for k, v in model.network.state_dict().items()}


def train_and_evaluate(model, objects, config):
    """Train ``model`` and evaluate it (3 clicks) before and after: (trainer, before, after, mean loss of the
    first ten steps, of the last ten)."""
    before = evaluate(model, objects, max_clicks=3)
    trainer = Trainer(model, objects, config)
    trainer.run()
    after = evaluate(model, objects, max_clicks=3)
    losses = [h["loss"] for h in trainer.history]
    return trainer, before, after, float(np.mean(losses[:10])), float(np.mean(losses[-10:]))


def test_full_training_from_random_weights_learns_the_objects(tmp_path):
    objects = folder_objects(blobs(tmp_path / "d"))
    _, before, after, first, last = train_and_evaluate(
        mini(), objects, FinetuneConfig(steps=60, batch_size=4, lr=1e-3, warmup=5, mode="full"))
    assert last < 0.8 * first, (first, last)
    assert after["mIoU@1"] > before["mIoU@1"] + 0.15, (before, after)
    assert is_better(before, after) or after["NoC@90"] == before["NoC@90"] == 3


def test_resumed_run_continues_exactly_where_it_stopped(tmp_path):
    objects = folder_objects(blobs(tmp_path / "d", n=6))
    cfg = dict(batch_size=2, lr=5e-4, warmup=2, mode="full", save_every=0)
    straight = Trainer(mini(), objects, FinetuneConfig(steps=4, **cfg))
    straight.run()

    first = Trainer(mini(), objects, FinetuneConfig(steps=2, **cfg))
    first.run()
    first.save(tmp_path / "half.pt")
    resumed = Trainer(mini(), objects, FinetuneConfig(steps=4, **cfg))
    meta = resumed.resume(tmp_path / "half.pt")
    assert meta["steps"] == 2 and resumed.step == 2
    resumed.run()
    a, b = weights(straight.model), weights(resumed.model)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert [round(h["loss"], 6) for h in resumed.history] == [round(h["loss"], 6) for h in straight.history[2:]]
    # and it did train: the weights moved from the initialisation
    assert not torch.allclose(weights(mini())["mask_decoder.iou_token.weight"], a["mask_decoder.iou_token.weight"])


def test_decoder_mode_freezes_the_encoder_and_the_file_loads_with_load_model(tmp_path):
    objects = folder_objects(blobs(tmp_path / "d", n=5))
    base = mini()
    start = weights(base)
    twin = base.twin()
    calls = []
    twin.network.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    trainer = Trainer(twin, objects, FinetuneConfig(steps=6, batch_size=3, mode="decoder", max_corrections=2),
                      starting_from="base.pt", data="blobs")
    trainer.run()
    assert len(calls) == len({o.name for o in objects} & set(trainer._features))  # once per image
    after, now = weights(twin), weights(base)
    enc = [k for k in start if k.startswith("image_encoder.")]
    dec = [k for k in start if k.startswith("mask_decoder.")]
    assert all(torch.equal(start[k], after[k]) for k in enc)
    assert any(not torch.equal(start[k], after[k]) for k in dec)
    assert all(torch.equal(start[k], now[k]) for k in start)  # the served model did not change
    meta = trainer.save(tmp_path / "ft.pt", {"note": 1})
    loaded = load_model("sam_mini", tmp_path / "ft.pt", device="cpu")
    assert loaded.version == meta["version"] and meta["steps"] == 6 and meta["mode"] == "decoder"
    assert loaded.cache_key == base.cache_key  # same encoder: embeddings stay valid after a swap
    got = weights(loaded)
    assert all(torch.equal(got[k], after[k]) for k in after)
    with pytest.raises(CheckpointError, match="trained as 'sam_mini'"):
        load_model("sam_vit_b", tmp_path / "ft.pt", device="cpu")


def test_sam_vit_b_decoder_only_fine_tune_end_to_end(tmp_path):
    """Random ViT-B weights: one image encoded once (~20 s on 2 CPU cores), three decoder steps, saved, loaded."""
    objects = folder_objects(blobs(tmp_path / "d", n=1))
    torch.manual_seed(0)
    model = load_model("sam_vit_b", device="cpu")
    trainer = Trainer(model, objects, FinetuneConfig(steps=3, batch_size=2, mode="decoder", max_corrections=1))
    trainer.run()
    assert len(trainer._features) == 1 and all(np.isfinite(h["loss"]) for h in trainer.history)
    trainer.save(tmp_path / "vitb.pt")
    loaded = load_model("sam_vit_b", tmp_path / "vitb.pt", device="cpu")
    a, b = model.network.official_state_dict(), loaded.network.official_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in ("mask_decoder.iou_token.weight", "image_encoder.pos_embed"))


def test_bad_input_gets_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with pytest.raises(DatasetError, match="no images in"):
        folder_objects(empty)
    wrong = blobs(tmp_path / "wrong", n=2)
    Image.fromarray(np.zeros((50, 50), np.uint8) + 255).save(wrong / "masks" / "b001.png")
    objects = folder_objects(wrong)
    trainer = Trainer(mini(), objects, FinetuneConfig(steps=4, batch_size=2, mode="full"))
    with pytest.raises(DatasetError, match="b001"):
        trainer.run()
    with pytest.raises(IsegError, match="no trainable weights"):
        Trainer(load_model("classical"), objects)
    with pytest.raises(DatasetError, match="no objects"):
        Trainer(mini(), [])
    with pytest.raises(IsegError, match="mode"):
        Trainer(mini(), objects, FinetuneConfig(mode="lora"))
    # a SAM file that is not a training checkpoint cannot be resumed; another architecture cannot be loaded
    torch.save(mini().network.official_state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        Trainer(mini(), objects).resume(tmp_path / "plain.pt")
    torch.save(load_model("sam_vit_b", device="cpu").network.official_state_dict(), tmp_path / "vitb.pt")
    with pytest.raises(CheckpointError, match="sam_vit_b"):
        load_model("sam_mini", tmp_path / "vitb.pt", device="cpu")


def run_cli(args, env_extra=None, torchrun=False):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **(env_extra or {}))
    head = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
            if torchrun else [sys.executable])
    return subprocess.run(head + ["-m", "training.finetune", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_cli_trains_evaluates_before_and_after_and_registers_the_model_version(tmp_path):
    data = blobs(tmp_path / "d", n=12)
    db = f"sqlite:///{tmp_path / 'iseg.db'}"
    out = tmp_path / "weights" / "mini.pt"
    r = run_cli(["--model", "sam_mini", "--data", str(data), "--out", str(out), "--steps", "4", "--batch-size", "2",
                 "--held-out", "0.3", "--max-clicks", "3", "--log-every", "2", "--database", db])
    assert r.returncode == 0, r.stderr + r.stdout
    assert "before training" in r.stdout and "after training" in r.stdout and "step 4/4" in r.stdout
    assert "| held-out | before |" in r.stdout and "| held-out | after |" in r.stdout
    model = load_model("sam_mini", out, device="cpu")
    runs = Store(db).training_runs()
    assert len(runs) == 1 and runs[0]["status"] == "done" and runs[0]["result"] == f"sam_mini@{model.version}"
    assert set(runs[0]["metrics"]["after"]["held-out"]) >= {"NoC@90", "mIoU@5"}
    # resume the same run for two more steps
    r = run_cli(["--model", "sam_mini", "--data", str(data), "--out", str(out), "--steps", "6", "--batch-size", "2",
                 "--held-out", "0.3", "--no-eval", "--resume", str(out), "--log-every", "1"])
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout and "step 5/6" in r.stdout and "step 1/6" not in r.stdout
    assert torch.load(out, weights_only=True)["meta"]["steps"] == 6
    # bad input: a clear one-line error, exit status 2, nothing written
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    r = run_cli(["--model", "sam_mini", "--data", str(empty), "--out", str(tmp_path / "x.pt")])
    assert r.returncode == 2 and "error:" in r.stderr and "no images in" in r.stderr and not (tmp_path / "x.pt").exists()


def test_torchrun_ddp_on_two_cpu_processes(tmp_path):
    data = blobs(tmp_path / "d", n=8)
    out = tmp_path / "ddp.pt"
    r = run_cli(["--model", "sam_mini", "--data", str(data), "--out", str(out), "--steps", "2", "--batch-size", "2",
                 "--held-out", "0.2", "--no-eval", "--log-every", "1", "--device", "cpu"], torchrun=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "x 2" in r.stdout and r.stdout.count("step 2/2") == 1  # rank 0 speaks
    assert load_model("sam_mini", out, device="cpu").version.startswith("ft-")
