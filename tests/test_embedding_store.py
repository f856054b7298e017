"""The embedding store: entries round-trip bit-exactly for every kind of embedding (SAM's map and early
features, a click-map model's frame, InterFormer's FPN maps), damaged or foreign entries are never served
(the Predictor re-encodes and rewrites them), a team URL (fsspec) works like a folder, the precompute CLI
encodes only what is missing (a resumed run does no image twice; two torchrun ranks give the same entries as
one process), and the studio opens a precomputed image with no encoder run."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from iseg_core import Predictor, load_model
from iseg_core.cache import EmbeddingCache
from iseg_core.embedding_store import EmbeddingStore
from iseg_core.prompts import Click
from storage import Store
from tests.conftest import ROOT, tiny_segmenter

KEY = "ab" + "0" * 62


def _tensors(value, out=None):
    """Every tensor / array inside an embedding's data or extra, in order."""
    out = [] if out is None else out
    if isinstance(value, (torch.Tensor, np.ndarray)):
        out.append(torch.as_tensor(value))
    elif isinstance(value, dict):
        for v in value.values():
            _tensors(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _tensors(v, out)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            _tensors(getattr(value, name), out)
    return out


@pytest.mark.parametrize("name", ["sam_tiny", "sam2.1_hiera_tiny", "ritm_hrnet18s_cocolvis"])
def test_round_trip_is_bit_exact_and_decodes_the_same(name, photo, tmp_path):
    model = tiny_segmenter() if name == "sam_tiny" else load_model(name, device="cpu")
    image = photo[:200, :300]
    emb = model.encode(image)
    store = EmbeddingStore(tmp_path / "store")
    path = store.put(KEY, emb)
    back = store.get(model.cache_key, KEY)
    assert back is not None and back.original_size == emb.original_size and back.nbytes == emb.nbytes
    before, after = _tensors((emb.data, emb.extra)), _tensors((back.data, back.extra))
    assert len(before) == len(after) > 0
    assert all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(before, after))
    clicks = [Click(150, 100), Click(40, 30, positive=False)]
    assert torch.equal(model.decode(emb, clicks).logits, model.decode(back, clicks).logits)
    print(f"{name}: {os.path.getsize(path) / 1e6:.2f} MB per image")
    assert store.keys(model.cache_key) == {KEY}


def test_damaged_and_foreign_entries_are_never_served(photo, tmp_path, caplog):
    model = tiny_segmenter()
    store = EmbeddingStore(tmp_path / "store")
    path = store.put(KEY, model.encode(photo))
    blob = open(path, "rb").read()
    # a flipped bit in the arrays, a truncated file, an entry copied under another image's key
    other = "cd" + "1" * 62
    damaged = {KEY: blob[:-10] + bytes([blob[-10] ^ 1]) + blob[-9:], other: blob}
    for key, data in damaged.items():
        target = store.path(model.cache_key, key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "wb").write(data)
        assert store.get(model.cache_key, key) is None
    assert "do not match their digest" in caplog.text and f"written for image {KEY}" in caplog.text
    open(path, "wb").write(blob[: len(blob) // 2])
    assert store.get(model.cache_key, KEY) is None and "unreadable" in caplog.text
    assert store.get("sam_tiny@another-version", KEY) is None  # another model version has its own entries
    # the Predictor meets the damaged entry: encodes again and rewrites it, then it is served
    p = Predictor(model, EmbeddingCache(store=store))
    p.set_image(photo, KEY)
    assert p.source == "encoded" and store.get(model.cache_key, KEY) is not None
    p2 = Predictor(model, EmbeddingCache(store=store))
    p2.set_image(photo, KEY)
    assert p2.source == "store"


def test_a_team_url_works_like_a_folder(photo):
    model = tiny_segmenter()
    store = EmbeddingStore("memory://iseg-test/embeddings")
    emb = model.encode(photo)
    store.put(KEY, emb)
    assert EmbeddingStore("memory://iseg-test/embeddings").get(model.cache_key, KEY) is not None


def _project(tmp_path, n=4):
    store = Store(f"sqlite:///{tmp_path / 'iseg.db'}", tmp_path / "images")
    project = store.project("pre")
    rng = np.random.default_rng(0)
    from PIL import Image

    for k in range(n):
        path = tmp_path / f"img{k}.png"
        Image.fromarray(rng.integers(0, 255, (96 + 8 * k, 128, 3), dtype=np.uint8)).save(path)
        store.add_image(project, path)
    store.close()
    return tmp_path / "iseg.db"


def _weights(tmp_path):
    """MobileSAM with random weights saved to a file: every process loads the same version (a model built with
    random weights gets a version of its own, and with it a folder of its own in the store)."""
    from iseg_core.models.sam import SAM_CONFIGS, SamNetwork

    path = tmp_path / "mobile_sam.pt"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(SamNetwork(SAM_CONFIGS["mobile_sam"]).official_state_dict(), path)
    return path


def _cli(tmp_path, db, out, *args, torchrun=0):
    env = dict(os.environ, HF_HUB_OFFLINE="1", ISEG_HOME=str(tmp_path), ISEG_IMAGE_DIR=str(tmp_path / "images"),
               OMP_NUM_THREADS="1")
    head = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={torchrun}", "--master_port",
             str(_port())] if torchrun else [sys.executable])
    cmd = head + ["-m", "iseg_core.precompute", "--project", "pre", "--model", "mobile_sam",
                  "--checkpoint", str(_weights(tmp_path)), "--store", str(out), "--database", f"sqlite:///{db}", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _noted(db):
    from sqlalchemy import select

    from storage import models as m

    with db.db.session() as s:
        return [(r.sha256, r.cache_key, r.store_url) for r in s.scalars(select(m.StoredEmbedding))]


def _port():
    from tests.conftest import free_port

    return free_port()


def _entries(folder):
    """Each entry's metadata (model, image, shapes, the digest of its arrays' bytes) with the digest checked
    against the arrays (the files' bytes may differ: safetensors writes the metadata in no fixed order)."""
    from safetensors.torch import load

    from iseg_core.embedding_store import _digest, _metadata

    out = {}
    for p in folder.rglob("*.safetensors"):
        meta = _metadata(p.read_bytes())
        assert _digest(load(p.read_bytes())) == meta["digest"]
        out[str(p.relative_to(folder))] = meta
    return out


def test_precompute_resumes_and_two_torchrun_ranks_give_the_same_entries(tmp_path):
    db = _project(tmp_path)
    one = tmp_path / "one"
    r = _cli(tmp_path, db, one, "--limit", "2")  # stopped half way (the first two images)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 encoded, 0 already stored, 0 failed of 2 images" in r.stdout
    first = _entries(one)
    r = _cli(tmp_path, db, one)  # started again: only the other two
    assert r.returncode == 0 and "2 encoded, 2 already stored, 0 failed of 4 images" in r.stdout, r.stdout
    assert len(_entries(one)) == 4 and all(_entries(one)[k] == v for k, v in first.items())  # untouched
    assert "encoding: 100%" in r.stderr and "image/s" in r.stderr  # the progress bar
    with_db = Store(f"sqlite:///{db}", tmp_path / "images")  # the database notes what the store holds
    project = with_db.project("pre")
    url = str(one)
    noted = _noted(with_db)
    assert len(noted) == 4 and {r[2] for r in noted} == {url}
    cache_key = noted[0][1]
    assert with_db.ready_count(project, cache_key, url) == 4
    assert with_db.browse(project, ready=(cache_key, url)).total == 4
    assert with_db.browse(project, ready=(cache_key, "s3://elsewhere")).total == 0
    with_db.close()
    two = tmp_path / "two"
    r = _cli(tmp_path, db, two, torchrun=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rank 0 of 2: 2 encoded" in r.stdout and "rank 1 of 2: 2 encoded" in r.stdout, r.stdout
    assert _entries(two) == _entries(one)  # the same entries: same places, metadata and arrays


def test_a_local_ray_job_with_two_workers_gives_the_same_entries(tmp_path):
    pytest.importorskip("ray")
    db = _project(tmp_path)
    r = _cli(tmp_path, db, tmp_path / "one")
    assert r.returncode == 0, r.stderr[-2000:]
    r = _cli(tmp_path, db, tmp_path / "ray", "--ray", "local", "--ray-workers", "2")
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "4 encoded, 0 already stored, 0 failed of 4 images" in r.stdout
    assert "ray (2 CPU workers): 100%" in r.stderr
    assert _entries(tmp_path / "ray") == _entries(tmp_path / "one")
    r = _cli(tmp_path, db, tmp_path / "ray", "--ray", "local", "--ray-workers", "2")  # nothing left: no job at all
    assert r.returncode == 0 and "0 encoded, 4 already stored" in r.stdout


def test_the_studio_opens_a_precomputed_image_without_encoding(tmp_path, caplog):
    from ui import Studio

    model = tiny_segmenter()
    db = Store(f"sqlite:///{tmp_path / 'iseg.db'}", tmp_path / "images")
    embeddings = EmbeddingStore(tmp_path / "store")
    studio = Studio(db, "p", "sam_tiny", loader=lambda name: model, export_dir=tmp_path / "ex",
                    embedding_store=embeddings)
    studio.ensure_samples()
    from iseg_core.precompute import precompute

    counts = precompute(db, "p", model, embeddings, progress=False)
    assert counts["encoded"] == 4 and counts["stored"] == 0
    assert precompute(db, "p", model, embeddings, progress=False)["stored"] == 4  # nothing twice

    def no_encoder(image):
        raise AssertionError("the encoder ran")

    model.encode = no_encoder
    v = studio.open_index("a", 1)
    assert "Embedding from the store" in v.status, v.status
    v = studio.add_click("a", 200, 150)
    assert "1 prompt(s)" in v.status and v.info["mask_area"] > 0
    assert studio.browse(ready_for="sam_tiny").total == 4
    db.close()


def test_prepare_project_in_the_studio_encodes_in_the_background_and_notes_it(tmp_path):
    import time

    from ui import Studio

    model = tiny_segmenter()
    db = Store(f"sqlite:///{tmp_path / 'iseg.db'}", tmp_path / "images")
    studio = Studio(db, "p", "sam_tiny", loader=lambda name: model, export_dir=tmp_path / "home" / "exports")
    studio.ensure_samples()
    assert studio.browse(ready_for="sam_tiny").total == 0  # no store yet
    v = studio.start_prepare("a")
    assert "Preparing the project for sam_tiny in the background" in v.status
    assert "already" in studio.start_prepare("a").status or not studio.prepare_running
    deadline = time.monotonic() + 120
    while studio.prepare_running and time.monotonic() < deadline:
        time.sleep(0.2)
    text = studio.prepare_status()
    assert "Project prepared." in text and "4 / 4 images (4 encoded, 0 already stored)" in text, text
    assert (tmp_path / "home" / "embeddings").is_dir()  # the default store, made when asked
    assert studio.browse(ready_for="sam_tiny").total == 4
    v = studio.open_index("a", 2)
    assert "Embedding from the store" in v.status or studio._session("a").predictor.source in ("memory", "store")
    db.close()


def test_bad_stores_and_missing_images_are_named_and_lose_nothing(photo, tmp_path, caplog, monkeypatch):
    import errno

    from iseg_core.errors import IsegError
    from iseg_core.precompute import precompute

    (tmp_path / "a-file").write_text("x")
    with pytest.raises(IsegError, match="cannot be used"):  # a store that cannot be reached or made
        EmbeddingStore(tmp_path / "a-file" / "store")
    model = tiny_segmenter()
    store = EmbeddingStore(tmp_path / "store")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.fs, "open", full)  # a full disk: the click is answered, the store is skipped
    p = Predictor(model, EmbeddingCache(store=store))
    p.set_image(photo, KEY)
    assert p.source == "encoded" and p.predict([Click(100, 80)]).mask.any()
    assert "could not keep" in caplog.text and "No space left" in caplog.text
    assert not list((tmp_path / "store").rglob("*.partial"))  # nothing half-written left behind
    monkeypatch.undo()
    db_path = _project(tmp_path, n=3)
    db = Store(f"sqlite:///{db_path}", tmp_path / "images")
    gone = db.images_of(db.project("pre"))[1]
    gone.path.unlink()  # an image file removed under the project
    c = precompute(db, "pre", model, store, progress=False)
    assert (c["encoded"], c["failed"]) == (2, 1) and gone.file_name in c["errors"][0]
    db.close()


def test_two_jobs_on_one_project_share_the_work_without_doubles(tmp_path):
    """Two precompute processes started together on one project and store: every image encoded once in all
    (a job skips an image the other has claimed, or finds it written), and a stale claim is taken over."""
    db = _project(tmp_path, n=4)
    out = tmp_path / "shared"
    env = dict(os.environ, HF_HUB_OFFLINE="1", ISEG_HOME=str(tmp_path), ISEG_IMAGE_DIR=str(tmp_path / "images"),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "iseg_core.precompute", "--project", "pre", "--model", "mobile_sam", "--checkpoint",
           str(_weights(tmp_path)), "--store", str(out), "--database", f"sqlite:///{db}"]
    jobs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outs = [j.communicate(timeout=600) for j in jobs]
    assert all(j.returncode == 0 for j in jobs), [o[1][-2000:] for o in outs]
    encoded = [int(o[0].split(" encoded")[0].split()[-1]) for o in outs]
    assert sum(encoded) == 4, [o[0] for o in outs]
    assert len(_entries(out)) == 4 and not list(out.rglob("*.claim"))
    # a claim left by a killed job is taken over once it is stale
    store = EmbeddingStore(out)
    assert store.claim("m@v", KEY) and not store.claim("m@v", KEY)
    claim = store.path("m@v", KEY) + ".claim"
    os.utime(claim, (0, 0))  # as if written long ago
    assert store.claim("m@v", KEY)
    store.release("m@v", KEY)
    assert not os.path.exists(claim)
