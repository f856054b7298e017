"""Bad checkpoints fail with messages that say what is wrong."""
import pickle

import pytest
import torch

from iseg_core import CheckpointError, load_model
from iseg_core.models.checkpoint import read_checkpoint

from .conftest import TINY, official_tiny_sam


@pytest.fixture(scope="module")
def vit_b_keys():
    """Official key names and shapes of ViT-B, as our network reports them."""
    from iseg_core.models.sam import SAM_CONFIGS, SamNetwork

    return {k: v.shape for k, v in SamNetwork(SAM_CONFIGS["sam_vit_b"]).official_state_dict().items()}


def test_a_vit_l_file_given_to_vit_b_is_recognised(tmp_path, vit_b_keys):
    # A state dict shaped like ViT-L (only the keys the message needs; content does not matter).
    state = {"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16)}
    state.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1024) for i in range(24)})
    path = tmp_path / "looks_like_l.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_model("sam_vit_b", checkpoint=path)
    msg = str(err.value)
    assert "does not fit sam_vit_b" in msg
    assert "it looks like sam_vit_l (embed 1024, 24 blocks)" in msg
    assert "missing keys: (image_encoder " in msg and "mask_decoder 120, prompt_encoder 17)" in msg
    assert "12 unexpected keys: (image_encoder 12) image_encoder.blocks.12.norm1.weight" in msg
    assert "wrongly shaped keys: image_encoder.blocks.0.norm1.weight (1024,) (expected (768,))" in msg


def test_missing_unexpected_and_wrongly_shaped_keys_are_named(tmp_path):
    ref = official_tiny_sam()
    state = ref.state_dict()
    del state["mask_decoder.iou_token.weight"]
    state["mask_decoder.extra_head.weight"] = torch.zeros(3)
    state["prompt_encoder.no_mask_embed.weight"] = torch.zeros(1, 128)
    from iseg_core.models.sam import SamConfig, SamNetwork

    net = SamNetwork(SamConfig(**TINY))
    with pytest.raises(CheckpointError) as err:
        net.load_official_state_dict(state, "sam_tiny", "edited.pth")
    msg = str(err.value)
    assert "1 missing keys: (mask_decoder 1) mask_decoder.iou_token.weight" in msg
    assert "1 unexpected keys: (mask_decoder 1) mask_decoder.extra_head.weight" in msg
    assert "prompt_encoder.no_mask_embed.weight (1, 128) (expected (1, 256))" in msg


def test_wrapped_checkpoints_and_constant_buffers_are_accepted(tmp_path):
    ref = official_tiny_sam()
    state = dict(ref.state_dict(), pixel_mean=torch.zeros(3, 1, 1), pixel_std=torch.ones(3, 1, 1))
    path = tmp_path / "wrapped.pth"
    torch.save({"model": state, "meta": {"steps": 3}}, path)
    loaded = read_checkpoint(path)
    assert "mask_decoder.iou_token.weight" in loaded
    from iseg_core.models.sam import SamConfig, SamNetwork

    SamNetwork(SamConfig(**TINY)).load_official_state_dict(loaded, "sam_tiny", str(path))


def test_corrupt_truncated_and_foreign_files(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01 definitely not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        load_model("sam_vit_b", checkpoint=garbage)

    good = tmp_path / "good.pth"
    torch.save(official_tiny_sam().state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_checkpoint(truncated)

    code = tmp_path / "code.pth"  # a pickle that would run code if unpickled without weights_only
    code.write_bytes(pickle.dumps(print))
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        read_checkpoint(code)

    not_tensors = tmp_path / "not_tensors.pth"
    torch.save({"a": 1, "b": "two"}, not_tensors)
    with pytest.raises(CheckpointError, match="does not hold a state dict of tensors"):
        read_checkpoint(not_tensors)
