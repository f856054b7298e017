"""Label-free training (MIS's recipe): pseudo-objects from region trees of unlabelled images, BCE + bilateral
smoothness, through the same trainer and simulated clicks as labelled training (DINO with random weights here:
the path is real, the regions mean nothing)."""
import shutil

import numpy as np
import pytest
import torch

from iseg_core import load_model
from iseg_core.errors import WeightsUnavailableError
from training.finetune import FinetuneConfig, Trainer
from training.losses import bilateral_smoothness
from training.proposals import proposal_objects

from .test_training_finetune import blobs, run_cli


def test_smoothness_rewards_edges_where_the_image_has_them():
    image = torch.zeros(1, 3, 32, 32)
    image[..., 16:] = 255.0  # a vertical edge in the image
    flat = torch.zeros(1, 32, 32)
    along = torch.zeros(1, 32, 32)
    along[..., 16:] = 5.0  # a logit edge on the image's edge
    across = torch.zeros(1, 32, 32)
    across[:, 16:] = 5.0  # a logit edge through a flat part of the image
    assert float(bilateral_smoothness(flat, image)) == 0.0
    assert float(bilateral_smoothness(along, image)) < 1e-3 * float(bilateral_smoothness(across, image))
    valid = torch.ones(1, 32, 32)
    valid[:, 12:] = 0  # pairs that touch invalid (padding) pixels do not count
    assert float(bilateral_smoothness(across, image, valid)) == 0.0


def test_trains_on_pseudo_objects_and_restarts_from_its_trees(tmp_path, capsys):
    folder = blobs(tmp_path / "d", n=4) / "images"
    torch.manual_seed(0)
    objects = proposal_objects(folder, tmp_path / "trees", progress=False)
    assert len(objects) == 4 and len(list((tmp_path / "trees" / "random").glob("*.npz"))) == 4
    image, mask, others = objects[0].load()
    again = objects[0].load()[1]
    assert mask.shape == image.shape[:2] and mask.mean() > 0.04 and others is None
    assert not np.array_equal(mask, again) or mask.all()  # each draw is a new pseudo-object
    (folder / "broken.jpg").write_bytes(b"not an image")
    cached = proposal_objects(folder, tmp_path / "trees", progress=False)  # trees read back, the broken file skipped
    assert len(cached) == 4 and "skipped broken.jpg" in capsys.readouterr().out
    model = load_model("simpleclick_vit_xtiny448_cocolvis", device="cpu")
    trainer = Trainer(model, objects, FinetuneConfig(steps=3, batch_size=2, lr=1e-3, warmup=1, max_corrections=1,
                                                     labels="proposals"), starting_from="random")
    start = {k: v.clone() for k, v in model.network.state_dict().items()}
    trainer.run()
    assert all(np.isfinite(h["loss"]) and h["extra"] > 0 for h in trainer.history)  # the smoothness term at work
    assert any(not torch.equal(v, model.network.state_dict()[k]) for k, v in start.items())
    meta = trainer.save(tmp_path / "mis.pt")
    assert meta["config"]["labels"] == "proposals"
    assert load_model("simpleclick_vit_xtiny448_cocolvis", tmp_path / "mis.pt", device="cpu").version == meta["version"]


def test_cli_label_free_with_a_labelled_evaluation(tmp_path):
    data = blobs(tmp_path / "d", n=6)
    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(data / "images", unlabelled)
    out = tmp_path / "mis.pt"
    r = run_cli(["--model", "simpleclick_vit_xtiny448_cocolvis", "--labels", "proposals", "--images", str(unlabelled),
                 "--out", str(out), "--steps", "2", "--batch-size", "2", "--max-clicks", "3", "--log-every", "1",
                 "--eval", f"folder={data}"])
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout
    assert "RANDOM weights" in r.stdout and "no labelled held-out set" in r.stdout and "step 2/2" in r.stdout
    assert "| folder | before |" in r.stdout and "| folder | after |" in r.stdout
    assert (tmp_path / "mis.proposals" / "random").is_dir()
    load_model("simpleclick_vit_xtiny448_cocolvis", out, device="cpu")
    r = run_cli(["--model", "simpleclick_vit_xtiny448_cocolvis", "--labels", "proposals", "--data", str(data),
                 "--out", str(tmp_path / "x.pt")])
    assert r.returncode == 2 and "--labels proposals trains on --images DIR alone" in r.stderr


def test_mis_entry_says_its_weights_were_never_published(monkeypatch, tmp_path):
    monkeypatch.setenv("ISEG_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match=r"never published .*Upload pre-trained weight.*--labels proposals"):
        load_model("mis_simpleclick_vit_b448_sbd", checkpoint="hub", device="cpu")
