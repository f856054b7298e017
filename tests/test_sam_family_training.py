"""Decoder-only fine-tuning of MobileSAM, SAM 2.1 and HQ-SAM through the model interface: what runs once per
image stays frozen (so embeddings cached by the base model stay valid after the swap; MobileSAM's BatchNorm
statistics too), the rest learns, and the file the trainer writes loads with load_model."""
import time

import numpy as np
import pytest
import torch
from PIL import Image

from iseg_core import Click, load_model
from training.data import folder_objects
from training.finetune import FinetuneConfig, Trainer

from .test_training_finetune import blobs

# per-image parts besides the image encoder (their output is cached in the embedding)
PER_IMAGE = {"mobile_sam": (), "sam2.1_hiera_tiny": ("mask_decoder.conv_s0.", "mask_decoder.conv_s1.", "no_mem_embed"),
             "sam_hq_vit_b": ("mask_decoder.compress_vit_feat.", "mask_decoder.embedding_encoder.")}


@pytest.mark.parametrize("name", list(PER_IMAGE))
def test_decoder_fine_tune_keeps_cached_embeddings_valid_and_loads(name, tmp_path):
    objects = folder_objects(blobs(tmp_path / "d", n=1))
    torch.manual_seed(0)
    base = load_model(name, device="cpu")
    start = {k: v.detach().clone() for k, v in base.network.state_dict().items()}
    twin = base.twin()
    trainer = Trainer(twin, objects, FinetuneConfig(steps=2, batch_size=2, lr=1e-3, warmup=1, mode="decoder",
                                                    max_corrections=1))
    trainer.run()
    assert all(np.isfinite(h["loss"]) for h in trainer.history)
    after = twin.network.state_dict()
    frozen = [k for k in start if k.startswith("image_encoder.") or k.startswith(PER_IMAGE[name])]
    trained = [k for k in start if k.startswith("mask_decoder.") and k not in frozen]
    assert frozen and all(torch.equal(start[k], after[k]) for k in frozen)
    assert any(not torch.equal(start[k], after[k]) for k in trained)

    trainer.save(tmp_path / "ft.pt")
    loaded = load_model(name, tmp_path / "ft.pt", device="cpu")
    assert loaded.cache_key == base.cache_key  # the base's embeddings are reused after the swap
    got = loaded.network.state_dict()
    assert all(torch.equal(got[k], after[k]) for k in after)
    # an embedding the base model made decodes exactly as one the fine-tuned model makes itself
    image = np.array(Image.open(sorted((tmp_path / "d" / "images").iterdir())[0]).convert("RGB"))
    h, w = image.shape[:2]
    prompts = [Click(w / 2, h / 2)]
    cached = loaded.decode(base.encode(image), prompts).logits
    fresh = loaded.decode(loaded.encode(image), prompts).logits
    assert torch.allclose(cached, fresh, atol=1e-5)


@pytest.mark.parametrize("name", ["mobile_sam", "sam2.1_hiera_tiny"])
def test_the_studio_annotates_with_the_new_models(name, tmp_path):
    """Open a sample, two clicks and a box, finish, accept: the mask is stored; the next image was encoded in the
    background meanwhile (the embedding cache serves it)."""
    from storage import Store
    from ui import Studio

    store = Store(f"sqlite:///{tmp_path / 'iseg.db'}", tmp_path / "images")
    try:
        torch.manual_seed(0)
        studio = Studio(store, "p", name, "random", export_dir=tmp_path / "exports")
        assert studio.ensure_samples() == 4
        sid = "tab"
        view = studio.open_index(sid, 0)
        h, w = view.info["image_size"]
        studio.add_click(sid, w / 2, h / 2, True)
        view = studio.add_click(sid, w / 4, h / 4, False)
        assert view.info["model"] == name and view.info["score"] is not None and len(view.info["prompts"]) == 2
        view = studio.add_box(sid, w * 0.2, h * 0.2, w * 0.8, h * 0.8)
        assert len(view.info["prompts"]) == 3 and view.info["mask_area"] > 0
        studio.finish_object(sid, "thing")
        image_id = view.info["image_id"]
        view = studio.accept_image(sid, "thing")
        stored = store.annotations(image_id)
        assert len(stored) == 1 and stored[0].category.name == "thing" and stored[0].n_interactions == 3
        manager = studio.manager(name)
        nxt = store.images_of(studio.project)[1]
        deadline = time.monotonic() + 300
        while not manager.is_encoded(nxt.sha256) and time.monotonic() < deadline:
            time.sleep(0.2)  # the background encode started when image 0 opened
        assert manager.is_encoded(nxt.sha256)
    finally:
        store.close()


def test_eval_cli_runs_hq_sam_with_its_switch_and_refuses_it_elsewhere(tmp_path, capsys):
    """``python -m iseg_core.eval --hq-token-only``: HQ-SAM's own switch, named in the report line; another model
    is refused with a message."""
    from iseg_core.eval.__main__ import main

    from .conftest import data_dir

    torch.manual_seed(0)
    path = tmp_path / "sam_hq_vit_b.pth"
    torch.save(load_model("sam_hq_vit_b", device="cpu").checkpoint_state(), path)
    common = ["--dataset", "grabcut", "--root", str(data_dir() / "GrabCut"), "--limit", "1", "--max-clicks", "2"]
    assert main(["--model", "sam_hq_vit_b", "--checkpoint", str(path), "--hq-token-only", *common]) == 0
    assert "HQ token only" in capsys.readouterr().out
    assert main(["--model", "mobile_sam", "--hq-token-only", *common]) == 2
    assert "--hq-token-only is HQ-SAM's switch" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["mobile_sam", "sam2.1_hiera_tiny"])
def test_bfloat16_encoder_runs_and_stays_close(name):
    """``dtype=torch.bfloat16`` (what the app picks on a GPU) runs the encoder in bf16 and decodes in fp32: the
    answer stays near the fp32 one (SAM 2 folds its float32 high-resolution convs into the bf16 neck)."""
    import warnings

    torch.manual_seed(0)
    fp32 = load_model(name, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no native bf16 on this CPU: slow, and it says so
        bf16 = load_model(name, device="cpu", dtype=torch.bfloat16)
    bf16.network.load_state_dict(fp32.network.state_dict())
    bf16.network.image_encoder.to(torch.bfloat16)
    image = (np.random.default_rng(0).random((240, 320, 3)) * 255).astype(np.uint8)
    prompts = [Click(160, 120), Click(60, 40, positive=False)]
    a = fp32.decode(fp32.encode(image), prompts).logits
    b = bf16.decode(bf16.encode(image), prompts).logits
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    assert float((a - b).abs().mean()) < 0.05 * float(a.abs().mean()) + 1e-3
