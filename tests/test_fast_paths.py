"""The decoder's re-associated attention and token-major paths compute the same function as the plain ones."""
import resource
import sys

import pytest
import torch

from iseg_core.models.sam.layers import ProjectedAttention
from iseg_core.models.sam.mask_decoder import SamMaskDecoder
from iseg_core.models.sam.prompt_encoder import SamPromptEncoder
from iseg_core.runtime import tune_allocator


@pytest.mark.parametrize("n_tokens", [1, 7, 15])
def test_folded_cross_attention_equals_standard(n_tokens):
    torch.manual_seed(n_tokens)
    attn = ProjectedAttention(256, 8, downsample=2).double()
    for p in attn.parameters():  # non-zero biases everywhere, so dropping or moving one would show
        torch.nn.init.normal_(p, std=0.2)
    tokens = torch.randn(2, n_tokens, 256, dtype=torch.double)
    image, image2 = torch.randn(2, 2, 1024, 256, dtype=torch.double)
    few_q = attn.few_queries(tokens, image, image2)
    few_k = attn.few_keys(image, tokens, tokens.flip(1))
    torch.testing.assert_close(few_q, attn.standard(tokens, image, image2), rtol=0, atol=1e-12)
    torch.testing.assert_close(few_k, attn.standard(image, tokens, tokens.flip(1)), rtol=0, atol=1e-12)
    # forward picks the folded order only when it is cheaper, and agrees either way
    torch.testing.assert_close(attn(tokens, image, image2), few_q)
    many = torch.randn(1, 40, 256, dtype=torch.double)  # 40 tokens x 8 heads > 128 channels: standard order
    torch.testing.assert_close(attn(many, image[:1], image2[:1]), attn.standard(many, image[:1], image2[:1]))


def test_token_major_dense_embedding_equals_channel_major():
    torch.manual_seed(0)
    enc = SamPromptEncoder(embed_dim=64, embedding_size=(16, 16), input_size=(256, 256))
    masks = torch.randn(2, 1, 64, 64)
    nchw = enc.embed_dense(masks)
    torch.testing.assert_close(enc.embed_dense_tokens(masks), nchw.flatten(2).transpose(1, 2), rtol=0, atol=1e-5)
    torch.testing.assert_close(enc.dense_pe_tokens(), enc.dense_pe().flatten(2).transpose(1, 2))
    no_mask = enc.embed_dense_tokens(None, batch=2)
    assert no_mask.shape == (2, 1, 64)
    torch.testing.assert_close(no_mask.expand(-1, 256, -1), enc.embed_dense(None, batch=2).flatten(2).transpose(1, 2))


def test_decoder_gradients_flow_through_folded_attention():
    """Training uses the same modules: the folded order must stay differentiable, with the same gradients."""
    torch.manual_seed(1)
    dec = SamMaskDecoder(dim=64)
    emb, pe, dense = torch.randn(3, 1, 64, 16, 16)
    sparse = torch.randn(1, 3, 64)
    masks, _ = dec(emb, pe, sparse, dense, multimask_output=False)
    masks.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in dec.named_parameters() if p.grad is not None}
    dec.zero_grad()
    for m in dec.modules():  # force the standard order everywhere and compare
        if isinstance(m, ProjectedAttention):
            m.forward = m.standard
    masks2, _ = dec(emb, pe, sparse, dense, multimask_output=False)
    torch.testing.assert_close(masks2, masks, rtol=0, atol=1e-5)
    masks2.square().mean().backward()
    assert grads.keys() == {n for n, p in dec.named_parameters() if p.grad is not None}
    for n, p in dec.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-3, atol=1e-6, msg=n)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_tuned_allocator_reuses_freed_buffers():
    assert tune_allocator() is True and tune_allocator() is True  # idempotent
    buf = torch.empty(2 << 20)  # 8 MB, above glibc's default mmap threshold
    buf.fill_(1)
    del buf
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        b = torch.empty(2 << 20)
        b.fill_(1)
        del b
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 20 * 2048 // 4, faults  # untuned: ~2048 page faults per 8 MB buffer
