"""One model interface for every family: ``training/`` and ``ui/`` reach models only through it (checked on the
source), and a second, tiny model that is not SAM (``tests/clickmap_model.py``) trains, saves, loads and is
fine-tuned by the app's job through it."""
import ast
from pathlib import Path

import pytest
import torch

from iseg_core import load_model
from iseg_core.cache import EmbeddingCache
from iseg_core.errors import CheckpointError, IsegError
from iseg_core.models import supports_training, trainable_models
from iseg_core.session import SessionManager
from tests import clickmap_model
from tests.conftest import ROOT
from tests.test_finetune_app import accepted_project
from tests.test_training_finetune import blobs, train_and_evaluate
from training.data import folder_objects
from training.finetune import FinetuneConfig, Trainer

FAMILIES = sorted(p.name for p in (ROOT / "iseg_core" / "models").iterdir() if (p / "__init__.py").is_file())


def imported_modules(path: Path):
    """Every module a file imports (top level or inside functions), as dotted names, with line numbers."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            yield base, node.lineno
            for a in node.names:  # ``from iseg_core.models import sam`` imports the family too
                yield f"{base}.{a.name}", node.lineno


def offending(place: str, forbidden) -> list:
    """``file:line imports name`` for every import of a ``forbidden`` module (or below) in a folder or file."""
    out = []
    root = ROOT / place
    for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
        for name, line in imported_modules(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return out


def test_training_and_ui_import_nothing_below_a_model_family():
    assert {"sam", "classical"} <= set(FAMILIES)
    forbidden = [f"iseg_core.models.{f}" for f in FAMILIES]
    assert offending("training", forbidden) == []
    assert offending("ui", forbidden) == []
    # the walk does see imports: iseg_core's registry imports both families (lazily, inside builders)
    assert any("iseg_core.models.sam" in o for o in offending("iseg_core/models", forbidden))


def test_the_session_does_not_import_the_evaluation():
    assert offending("iseg_core/session.py", ["iseg_core.eval"]) == []
    # ZoomIn geometry comes from the module the evaluation uses too
    assert offending("iseg_core/session.py", ["iseg_core.geometry.zoom_roi"])
    assert offending("iseg_core/eval/loop.py", ["iseg_core.geometry.zoom_roi"])


@pytest.fixture
def clickmap():
    clickmap_model.register()
    yield clickmap_model.NAME
    clickmap_model.unregister()


def params(model):
    return {k: v.detach().clone() for k, v in model.network.state_dict().items()}


def test_a_model_that_is_not_sam_trains_saves_and_loads_through_the_face(tmp_path, clickmap):
    objects = folder_objects(blobs(tmp_path / "d", n=10))
    torch.manual_seed(0)
    model = load_model(clickmap, device="cpu")
    assert supports_training(model) and clickmap in trainable_models()
    trainer, before, after, first, last = train_and_evaluate(
        model, objects, FinetuneConfig(steps=60, batch_size=4, lr=3e-3, warmup=5, mode="full"))
    assert last < 0.8 * first, (first, last)
    assert after["mIoU@1"] > before["mIoU@1"] + 0.1, (before, after)
    assert all(h["iou"] == 0.0 for h in trainer.history)  # no quality head: no IoU-head loss

    meta = trainer.save(tmp_path / "clickmap.pt")
    loaded = load_model(clickmap, tmp_path / "clickmap.pt", device="cpu")
    assert loaded.version == meta["version"] and meta["model"] == clickmap and meta["mode"] == "full"
    a, b = params(model), params(loaded)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(CheckpointError, match=f"trained as '{clickmap}'"):
        load_model("sam_mini", tmp_path / "clickmap.pt", device="cpu")
    # resume goes on from the saved step with the saved optimizer state
    again = Trainer(load_model(clickmap, device="cpu"), objects, FinetuneConfig(steps=62, batch_size=4, mode="full"))
    again.resume(tmp_path / "clickmap.pt")
    assert again.step == 60 and all(torch.equal(params(again.model)[k], a[k]) for k in a)


def test_decoder_mode_of_the_other_model_trains_its_head_only_on_embeddings_the_app_cached(tmp_path, clickmap):
    objects = folder_objects(blobs(tmp_path / "d", n=6))
    torch.manual_seed(1)
    base = load_model(clickmap, device="cpu")
    manager = SessionManager(lambda: base, EmbeddingCache())
    for obj in objects:  # the app has these images encoded already
        manager.precompute(obj.load()[0], obj.key).result()
    twin = base.twin()
    assert twin.image_encoder is base.image_encoder and twin.network.head is not base.network.head
    calls = []
    twin.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    start = params(base)
    trainer = Trainer(twin, objects, FinetuneConfig(steps=5, batch_size=3, mode="decoder"), starting_from="base",
                      embedding_source=manager.cached_embedding)
    trainer.run()
    assert calls == []  # every image came from the cache
    after, served = params(twin), params(base)
    assert all(torch.equal(start[k], after[k]) for k in start if k.startswith("encoder."))
    assert any(not torch.equal(start[k], after[k]) for k in start if k.startswith("head."))
    assert all(torch.equal(start[k], served[k]) for k in start)  # the served model is untouched
    meta = trainer.save(tmp_path / "head.pt")
    assert meta["encoder_version"] == base.encoder_version
    assert load_model(clickmap, tmp_path / "head.pt", device="cpu").cache_key == base.cache_key


def test_the_apps_fine_tune_job_works_for_the_other_model(tmp_path, clickmap, monkeypatch):
    from ui import Studio

    monkeypatch.setenv("ISEG_FINETUNE_STEPS", "60")
    monkeypatch.setenv("ISEG_FINETUNE_BATCH", "4")
    monkeypatch.setenv("ISEG_FINETUNE_LR", "3e-3")
    monkeypatch.setenv("ISEG_FINETUNE_EVAL_CLICKS", "5")
    store, project = accepted_project(tmp_path)
    torch.manual_seed(2)
    studio = Studio(store, "ft", clickmap, "random", export_dir=tmp_path / "exports")
    sid = "annotator"
    studio.open_index(sid, 0)
    studio.add_click(sid, 40, 40, True)
    base = studio.manager(clickmap).model
    assert "Fine-tuning" in studio.start_finetune(sid).status
    studio._job.join(300)
    st = studio._job.state
    assert st.status == "swapped", (st.status, st.message, st.before, st.after)
    served = studio.manager(clickmap).model
    assert served is not base and served.version == st.version and served.cache_key == base.cache_key
    assert len(studio._session(sid).prompts) == 1  # the object in progress survived the swap
    assert store.training_runs()[0]["result"] == f"{clickmap}@{st.version}"


def test_models_without_the_face_are_refused_by_name(tmp_path):
    objects = folder_objects(blobs(tmp_path / "d", n=2))
    with pytest.raises(IsegError, match="classical has no trainable weights: fine-tuning works for .*sam_mini"):
        Trainer(load_model("classical"), objects)
    with pytest.raises(IsegError, match="sam_mini trains in decoder or full mode, not 'head'"):
        Trainer(load_model("sam_mini", device="cpu"), objects, FinetuneConfig(mode="head"))
    assert "classical" not in trainable_models() and "sam_vit_b" in trainable_models()
