"""Decoder-only fine-tuning of MobileSAM, SAM 2.1 and HQ-SAM through the model interface: what runs once per
image stays frozen (so embeddings cached by the base model stay valid after the swap; MobileSAM's BatchNorm
statistics too), the rest learns, and the file the trainer writes loads with load_model."""
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
