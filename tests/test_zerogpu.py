"""ZeroGPU's contract: the encoder runs inside the GPU-lending decorator, in a separate (forked) worker process,
and returns the embedding to the main process, which caches it; clicks never call the decorator."""
import os
import pickle

import numpy as np
import torch

from iseg_core import Click, Predictor, load_model
from iseg_core.zerogpu import maybe_offload, offload_encoder


def forked(calls):
    """What ``spaces.GPU`` does to a function, emulated: each call runs in a forked worker and its result is
    pickled back (so a CUDA tensor, an open handle or an unpicklable object would fail here as it does there)."""

    def decorator(fn):
        def call(*args):
            calls.append(1)
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker
                os.close(r)
                try:
                    torch.set_num_threads(1)
                    out = pickle.dumps(("ok", fn(*args), os.getpid()))
                except BaseException as e:  # noqa: BLE001 - reported to the parent
                    out = pickle.dumps(("error", repr(e), os.getpid()))
                with os.fdopen(w, "wb") as f:
                    f.write(out)
                os._exit(0)
            os.close(w)
            with os.fdopen(r, "rb") as f:
                data = f.read()
            os.waitpid(pid, 0)
            kind, value, worker = pickle.loads(data)
            assert kind == "ok", value
            assert worker != os.getpid()
            return value

        return call

    return decorator


def test_encoder_runs_in_the_gpu_worker_and_the_embedding_is_cached_in_the_main_process(photo):
    torch.manual_seed(0)
    reference = load_model("sam_mini", device="cpu")
    torch.manual_seed(0)
    model = load_model("sam_mini", device="cpu")
    calls = []
    offload_encoder(model, forked(calls), device="cpu")  # no GPU here: the process boundary is what is tested
    p = Predictor(model)
    emb = p.set_image(photo)
    assert calls == [1] and emb.data.device.type == "cpu"
    clicks = [Click(240, 150), Click(100, 60, positive=False)]
    got = p.predict(clicks)
    q = Predictor(reference)
    q.set_image(photo)
    want = q.predict(clicks)
    assert torch.allclose(got.logits, want.logits, atol=1e-5) and np.array_equal(got.mask, want.mask)
    p.predict([Click(10, 10)])
    p.set_image(photo)  # cached in this process: no second GPU call
    assert calls == [1]


def test_maybe_offload_is_a_no_op_off_zerogpu(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    model = load_model("sam_mini", device="cpu")
    assert maybe_offload(model) is model and not getattr(model, "zerogpu", False)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")  # set, but the spaces package is not installed here
    assert not getattr(maybe_offload(model), "zerogpu", False)
    classical = load_model("classical")
    assert offload_encoder(classical, forked([])) is classical
