"""A fine-tuning job on a storage project's accepted annotations, run in a background thread (the app's
Fine-tune button). Any model with the training face works (:class:`iseg_core.models.TrainableSegmenter`).

The job trains a twin of the serving model (decoder only where the model has that mode: the image encoder is
shared and frozen, embeddings the app already computed are reused; models whose prompts enter at the stem,
RITM and SimpleClick, train whole, on a full copy), evaluates base and result on the held-out accepted objects, writes the
checkpoint, registers it as a model version with a training-run record, and hands the result to
``on_better(model, checkpoint)`` only when it beats the base (fewer clicks to 90 % IoU, or as many and a higher IoU after five).
Annotation never waits for it: the serving model is not touched until the swap.

With ``labels="proposals"`` it pre-trains instead (MIS's recipe, :mod:`training.proposals`): on pseudo-objects of
the project's images that have no accepted objects yet (DINO ViT-S/8's published weights needed), checked on
every accepted object there is; with none, the result is saved and registered but never swapped in.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from iseg_core.errors import IsegError
from iseg_core.models import (Segmenter, TrainableSegmenter, list_models, supports_training, takes_weights,
                              trainable_models)

from storage import StorageError

from .data import DEFAULT_HELD_OUT, split, store_objects
from .finetune import EmbeddingSource, FinetuneConfig, Trainer, default_mode, evaluate, is_better

log = logging.getLogger(__name__)


@dataclass
class JobState:
    status: str = "idle"  # idle | preparing | evaluating | training | saving | swapped | kept | failed | cancelled
    step: int = 0
    steps: int = 0
    loss: Optional[float] = None
    message: str = ""
    before: Optional[dict] = None
    after: Optional[dict] = None
    run_id: Optional[int] = None
    version: Optional[str] = None
    checkpoint: Optional[str] = None
    started: float = field(default_factory=time.monotonic)

    @property
    def running(self) -> bool:
        return self.status in ("preparing", "evaluating", "training", "saving")


class FinetuneJob:
    def __init__(self, store, project, model: Segmenter, out_dir: Path, config: FinetuneConfig,
                 on_better: Callable[[TrainableSegmenter, str], None], held_out: float = DEFAULT_HELD_OUT,
                 max_clicks: int = 10, embedding_source: Optional[EmbeddingSource] = None, author: str = "",
                 labels: str = "given"):
        if not supports_training(model):
            weighted = model.name in list_models() and takes_weights(model.name)
            why = "cannot be fine-tuned in iseg yet" if weighted else "has no weights to fine-tune"
            raise IsegError(f"the {model.name} model {why}: pick one of {', '.join(trainable_models())} first")
        self.store, self.project, self.model = store, project, model
        self.out_dir, self.config, self.on_better = Path(out_dir), config, on_better
        self.held_out, self.max_clicks = held_out, max_clicks
        self.embedding_source = embedding_source
        self.author = author  # who started it (the signed-in user), recorded with the run
        self.labels = labels  # "given": accepted annotations; "proposals": pseudo-objects of unlabelled images
        self.word = "Pre-training" if labels == "proposals" else "Fine-tuning"
        self.state = JobState(steps=config.steps)
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="iseg-finetune", daemon=True)

    def start(self) -> "FinetuneJob":
        self.state.status = "preparing"
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)

    def _objects(self):
        """(training objects, held-out objects, a description of the data)."""
        if self.labels != "proposals":
            objects = store_objects(self.store, self.project)
            try:
                train, held = split(objects, self.held_out)
            except IsegError:
                raise IsegError(f"{len(objects)} accepted object(s) are too few to train and also keep some for "
                                "checking the result: accept more images first") from None
            return train, held, f"project {self.project.name!r}: {len(train)} accepted objects"
        from .proposals import dino_features, proposal_objects

        images = self.store.images_of(self.project)
        unlabelled = [Path(img.path) for img in images if not img.done]
        if not unlabelled:
            raise IsegError("every image of this project is accepted already: nothing unlabelled to pre-train on")
        features, version = dino_features()

        def report(done: int, total: int) -> None:
            self.state.message = f"proposal trees: {done}/{total} images"

        train = proposal_objects(unlabelled, self.out_dir / "proposals", features, version, progress=False,
                                 report=report)
        # none of them trains: every accepted object checks it (none yet: nothing to compare, never swapped)
        held = store_objects(self.store, self.project) if any(img.done for img in images) else []
        return train, held, f"project {self.project.name!r}: pseudo-objects of {len(train)} unlabelled images"

    def _progress(self, info: dict) -> None:
        if info.get("phase") == "train":
            self.state.status, self.state.step, self.state.loss = "training", info["step"], info["loss"]
        else:
            self.state.status = "evaluating"
            self.state.message = f"{info['phase']}: {info['done']}/{info['total']} objects"

    def _run(self) -> None:
        st = self.state
        base = (self.model.name, self.model.version)
        try:
            train, held, data = self._objects()
            mode = default_mode(self.model, from_weights=True)
            st.run_id = self.store.record_training_run(base, "running", params={
                "mode": mode, "steps": self.config.steps, "batch_size": self.config.batch_size,
                "lr": self.config.lr, "train_objects": len(train), "held_out_objects": len(held)}, author=self.author)
            twin = self.model.twin()
            if held:
                st.before = evaluate(twin, held, self.max_clicks, progress=self._progress, label="base model")
            trainer = Trainer(twin, train, replace(self.config, mode=mode, labels=self.labels),
                              starting_from=f"{base[0]}@{base[1]}", data=data,
                              progress=self._progress, embedding_source=self.embedding_source)
            trainer.metrics = {"before": {"held-out": st.before}} if held else {}
            st.status = "training"
            trainer.run(stop=self._cancel.is_set)
            if self._cancel.is_set():
                st.status, st.message = "cancelled", f"cancelled at step {trainer.step}; the model in use is unchanged"
                self.store.record_training_run(base, "cancelled", message=st.message, run_id=st.run_id)
                return
            if held:
                st.after = evaluate(twin, held, self.max_clicks, progress=self._progress, label="trained model")
            st.status = "saving"
            better = bool(held) and is_better(st.before, st.after)
            metrics = {"better": better, **({"before": {"held-out": st.before}, "after": {"held-out": st.after}}
                                            if held else {})}
            path = self.out_dir / f"{self.model.name}-{'pt' if self.labels == 'proposals' else 'ft'}-run{st.run_id}.pt"
            meta = trainer.save(path, metrics)
            st.version, st.checkpoint = meta["version"], str(path)
            vid = self.store.register_model_version(self.model.name, meta["version"], str(path), metrics)
            if better:
                twin.version = meta["version"]
                self.on_better(twin, str(path))
            st.status = "swapped" if better else "kept"
            if not held:
                st.message = (f"no accepted objects to check it on, so it is not swapped in: still using "
                              f"{base[0]}@{base[1]} (the result is saved as {path.name}; accept some images and "
                              "pre-train again to compare).")
            else:
                st.message = (f"{self.model.name}@{meta['version']} is better on {len(held)} held-out objects and is "
                              "now in use." if better else f"not better on {len(held)} held-out objects: still using "
                              f"{base[0]}@{base[1]} (the result is saved as {path.name}).")
            self.store.record_training_run(base, "done" if better else "kept", metrics=metrics, message=st.message,
                                           result_version_id=vid, run_id=st.run_id)
        except Exception as e:  # a background thread: reported on the page and in the run record; annotation goes on
            st.status = "failed"
            st.message = str(e) if isinstance(e, IsegError) else f"{type(e).__name__}: {e}"
            log.error("fine-tuning %s failed: %s", base[0], st.message, exc_info=not isinstance(e, IsegError))
            if st.run_id is not None:
                try:
                    self.store.record_training_run(base, "failed", message=st.message, run_id=st.run_id)
                except StorageError as e2:  # the page still says what failed; the record could not
                    st.message += f" (the training-run record was not updated: {e2})"
                    log.error("could not record the failed training run %s: %s", st.run_id, e2)

    def describe(self) -> str:
        """One Markdown paragraph for the page."""
        st = self.state
        w = self.word
        head = {"preparing": f"{w}: preparing…", "evaluating": f"{w}: evaluating…",
                "training": f"{w}: step {st.step}/{st.steps}" + (f", loss {st.loss:.3f}" if st.loss else ""),
                "saving": f"{w}: saving…",
                "swapped": f"**{'Pre-trained' if self.labels == 'proposals' else 'Fine-tuned'} model in use.**",
                "kept": f"**{w} finished: base model kept.**", "failed": f"**{w} failed:**",
                "cancelled": f"{w} cancelled."}.get(st.status, "")
        parts = [head, st.message]
        if st.before and st.after:
            parts.append(f"Held-out NoC@90 {st.before['NoC@90']:.2f} → {st.after['NoC@90']:.2f}, "
                         f"mIoU@5 {st.before['mIoU@5']:.3f} → {st.after['mIoU@5']:.3f} "
                         f"({st.after['objects']} objects, ≤{self.max_clicks} clicks).")
        return " ".join(p for p in parts if p)
