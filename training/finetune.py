"""The fine-tuning loop: any model with the training face (:class:`iseg_core.models.TrainableSegmenter`)
learns from masks through simulated interactions.

Each step draws a batch of objects, simulates each one's first prompts (clicks, a box, a scribble or a
contour: :mod:`training.simulate`), then runs 0..``max_corrections`` no-grad rounds in which the model
predicts and the evaluation's clicker adds a correction click at the largest error, with the previous
logits fed back (RITM's iterative training). The last round is the one with gradients. Losses: normalized
focal + soft Dice on the best-fitting of the candidates the model would choose from (SAM: its three masks for
a lone click, else its single mask), MSE of the model's quality (IoU) head on those candidates. The model
says which prompt kinds to simulate and how to weigh the losses (``prompt_kinds``, ``loss_weights``): the
click-map models (RITM, SimpleClick, SegNext) train on clicks with the NFL alone (alpha 0.5, gamma 2), as
their authors' trainers do.

Modes (the model says which it has: ``model.training_modes``):
- ``decoder`` (default when starting from weights): the image encoder is frozen and runs once per image;
  its features are kept (float16) for the rest of the run, so a step costs only decoding. Fast on a CPU.
- ``full`` (default from random weights, and the only mode of models whose prompts enter at the stem: RITM,
  SimpleClick): the encoder trains too, on augmented crops (scale, flip, colour).

Mixed precision (bfloat16 autocast) on CUDA; ``torchrun --nproc_per_node N -m training.finetune ...`` trains
with DistributedDataParallel (NCCL on GPUs, gloo on CPUs), each rank drawing its own batches.

The data of a step is a pure function of ``(seed, rank, step)``, so a run resumed from a checkpoint goes on
exactly as if it had not stopped. Checkpoints hold the weights under the publisher's key names (``load_model``
reads them), the metadata (base model, data, steps, metrics) and the optimizer state for resuming.
"""
from __future__ import annotations

import datetime
import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from iseg_core.cache import EmbeddingCache
from iseg_core.errors import CheckpointError, IsegError
from iseg_core.eval.datasets import DatasetError, Sample
from iseg_core.eval.loop import ObjectEvaluator
from iseg_core.eval.metrics import summarize
from iseg_core.models import ImageEmbedding, TrainableSegmenter, supports_training, trainable_models
from iseg_core.models.checkpoint import read_checkpoint_object, split_checkpoint
from iseg_core.predictor import Predictor
from iseg_core.prompts import Click, Prompt

from .data import DEFAULT_HELD_OUT, AugmentConfig, TrainingObject, augment
from .losses import bilateral_smoothness, dice_loss, hard_iou, iou_head_loss, normalized_focal_loss
from .simulate import SamplerConfig, correction_click, sample_prompts

FORMAT = "iseg-finetune/1"
Progress = Callable[[dict], None]
EmbeddingSource = Callable[[str], Optional[ImageEmbedding]]


@dataclass
class FinetuneConfig:
    steps: int = 200
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup: int = 20  # linear warm-up steps, then cosine decay to 5 % of lr
    grad_clip: float = 1.0
    mode: str = "auto"  # one of the model's training_modes, or "auto" (decoder from weights, full from random)
    max_corrections: int = 3  # no-grad correction rounds per sample: uniform in 0..max_corrections
    seed: int = 0
    save_every: int = 100  # steps between checkpoints (0: only at the end)
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on a CPU
    augment: bool = True  # full mode: random scale, flip, crop and colour
    # loss weights (normalized focal, soft Dice, quality head); None = the model's own (``model.loss_weights``)
    focal_weight: Optional[float] = None
    dice_weight: Optional[float] = None
    iou_weight: Optional[float] = None
    # "given": masks someone drew; "proposals": MIS's pseudo-objects (training/proposals.py), trained with MIS's
    # losses instead of the model's mask losses: BCE x 1 + bilateral smoothness of the logits x smooth_weight
    labels: str = "given"
    smooth_weight: float = 10.0

    def check(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise IsegError(f"steps and batch_size must be positive, got {self.steps} and {self.batch_size}")
        if self.labels not in ("given", "proposals"):
            raise IsegError(f"labels must be 'given' or 'proposals', not {self.labels!r}")


@dataclass
class TrainSample:
    """One training object prepared for a step, in the model's training frame."""

    key: str  # the image's key: its cached features in decoder mode
    size: Tuple[int, int]  # (h, w) of the resized image inside the model's canvas
    gt: np.ndarray  # bool (h, w)
    prompts: List[Prompt]
    corrections: int
    pixels: Optional[torch.Tensor] = None  # (1, 3, H, W) network input, full mode
    image: Optional[np.ndarray] = None  # the original image, decoder mode, for a first encoding
    rgb: Optional[np.ndarray] = None  # the image at ``size`` (uint8), for the smoothness loss on pseudo-objects


def _resize_mask(mask: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """A boolean mask at ``size`` (h, w): pixels more than half covered; a thin object keeps any covered pixel."""
    h, w = size
    frac = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    out = frac > 0.5
    return out if out.any() or not mask.any() else frac > 0


def _world() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _to_canvas(size: Tuple[int, int], canvas: Tuple[int, int], out: Tuple[int, int]) -> Tuple[int, int]:
    """(h, w) of an image of ``size`` inside a canvas of ``canvas`` pixels when the canvas is drawn at ``out``."""
    return (max(1, round(size[0] * out[0] / canvas[0])), max(1, round(size[1] * out[1] / canvas[1])))


def default_mode(model: TrainableSegmenter, from_weights: bool) -> str:
    """``auto`` mode: decoder-only from weights where the model has that mode, else the whole model."""
    return "decoder" if from_weights and "decoder" in model.training_modes else "full"


class Trainer:
    """Trains ``model`` (a :class:`TrainableSegmenter`) on ``objects``; see the module docstring."""

    def __init__(self, model: TrainableSegmenter, objects: Sequence[TrainingObject],
                 config: FinetuneConfig = FinetuneConfig(), starting_from: Optional[str] = None, data: str = "",
                 progress: Optional[Progress] = None, embedding_source: Optional[EmbeddingSource] = None):
        if not supports_training(model):
            raise IsegError(f"{model.name} has no trainable weights: fine-tuning works for "
                            f"{', '.join(trainable_models())}")
        if not objects:
            raise DatasetError("no objects to train on")
        config.check()
        self.model, self.objects, self.config = model, list(objects), config
        self.device = model.device
        self.mode = config.mode if config.mode != "auto" else default_mode(model, bool(starting_from))
        model.check_mode(self.mode)
        own = model.loss_weights
        self.weights = {k: (own.get(k, 0.0) if getattr(config, f"{k}_weight") is None else getattr(config, f"{k}_weight"))
                        for k in ("focal", "dice", "iou")}
        self.data = data
        self.base = {"model": model.name, "checkpoint": starting_from or "random initialisation",
                     "version": model.version, "encoder_version": model.encoder_version or model.version}
        self.progress = progress or (lambda info: None)
        self.params = model.parameters_for(self.mode)
        self.opt = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.step = 0
        self.history: List[dict] = []
        self.metrics: dict = {}  # written with every checkpoint (e.g. the evaluation before training)
        self._features: Dict[str, torch.Tensor] = {}  # decoder mode: image key -> frozen encoder features
        self.embedding_source = embedding_source  # decoder mode: image key -> an embedding already computed
        kinds = tuple((k, w) for k, w in SamplerConfig().kinds if k in model.prompt_kinds)
        if not kinds:
            raise IsegError(f"{model.name} takes none of the prompt kinds training simulates")
        self.sampler = SamplerConfig(kinds=kinds)
        self.canvas = model.canvas
        self.rank, self.world = _world()
        self._ddp: Optional[nn.Module] = None
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = nn.parallel.DistributedDataParallel(_Forward(self), device_ids=ids, find_unused_parameters=True)

    # -- data ------------------------------------------------------------------------------------------
    def _rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, self.rank, step])

    def _sample(self, obj: TrainingObject, rng: np.random.Generator) -> TrainSample:
        image, gt, others = obj.load()
        if gt.shape != image.shape[:2]:
            raise DatasetError(f"{obj.name}: the mask is {gt.shape[1]}x{gt.shape[0]}, the image "
                               f"{image.shape[1]}x{image.shape[0]}")
        pixels = None
        if self.mode == "decoder":
            size = self.model.frame_size(*image.shape[:2])
        else:
            if self.config.augment:
                image, gt, others = augment(image, gt, others, rng, AugmentConfig(crop=max(self.canvas)))
            size = self.model.frame_size(*image.shape[:2])
            pixels = self.model.frame_pixels(image)
        gt = _resize_mask(gt, size)
        if not gt.any():
            raise DatasetError(f"{obj.name}: the mask is empty")
        others = _resize_mask(others, size) if others is not None else None
        prompts = sample_prompts(gt, rng, self.sampler, others)
        k = int(rng.integers(0, self.config.max_corrections + 1))
        keep_image = self.mode == "decoder" and obj.key not in self._features
        rgb = None
        if self.config.labels == "proposals":
            rgb = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        return TrainSample(obj.key, size, gt, prompts, k, pixels, image if keep_image else None, rgb)

    def batch(self, step: int) -> List[TrainSample]:
        rng = self._rng(step)
        picks = rng.choice(len(self.objects), size=self.config.batch_size, replace=len(self.objects) < self.config.batch_size)
        return [self._sample(self.objects[int(i)], rng) for i in picks]

    # -- the model -------------------------------------------------------------------------------------
    @torch.no_grad()
    def _frozen_features(self, s: TrainSample) -> torch.Tensor:
        """Decoder mode: the frozen encoder's features of ``s``'s image (computed once, kept as float16)."""
        t = self._features.get(s.key)
        if t is None and self.embedding_source is not None:
            found = self.embedding_source(s.key)  # e.g. the app's cache, made by the same encoder
            feats = self.model.features_of(found) if found is not None else None  # None: another frame
            if feats is not None:
                t = self._features[s.key] = feats[0].to(self.device, torch.float16)
        if t is None:
            with self._autocast():
                feats = self.model.encode_frames(self.model.frame_pixels(s.image))
            t = self._features[s.key] = feats[0].to(torch.float16)
        s.image = None
        return t

    def precompute(self) -> None:
        """Decoder mode: encode every training image now (otherwise each is encoded the first time it is drawn)."""
        if self.mode != "decoder":
            return
        rng = np.random.default_rng(self.config.seed)
        for obj in self.objects:
            if obj.key not in self._features:
                self._frozen_features(self._sample(obj, rng))

    def _features_of(self, samples: List[TrainSample]) -> torch.Tensor:
        if self.mode == "decoder":
            return torch.stack([self._frozen_features(s) for s in samples]).float()
        with self._autocast():
            return self.model.encode_frames(torch.cat([s.pixels for s in samples])).float()

    def _autocast(self):
        on = self.config.amp and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=on)

    def _forward(self, features: torch.Tensor, samples: List[TrainSample], prev: List[Optional[torch.Tensor]]):
        with self._autocast():
            out = self.model.forward_train(features, [s.prompts for s in samples], [s.size for s in samples], prev)
        out.logits = out.logits.float()
        out.scores = out.scores.float() if out.scores is not None else None
        out.aux_logits = out.aux_logits.float() if out.aux_logits is not None else None
        return out

    def _correct(self, features: torch.Tensor, samples: List[TrainSample]) -> List[Optional[torch.Tensor]]:
        """The no-grad rounds: predict, add the evaluation's next click; returns each sample's last logits."""
        prev: List[Optional[torch.Tensor]] = [None] * len(samples)
        rounds = max(s.corrections for s in samples)
        with torch.no_grad():
            for r in range(rounds):
                active = [i for i, s in enumerate(samples) if s.corrections > r]
                out = self._forward(features[active], [samples[i] for i in active], [prev[i] for i in active])
                chosen = out.logits[torch.arange(len(active)), out.chosen()]  # (A, h, w)
                full = F.interpolate(chosen.unsqueeze(1), self.canvas, mode="bilinear", align_corners=False)[:, 0] > 0
                for j, i in enumerate(active):
                    s = samples[i]
                    h, w = s.size
                    clicked = [p for p in s.prompts if isinstance(p, Click)]
                    click = correction_click(s.gt, full[j, :h, :w].cpu().numpy(), clicked=clicked)
                    if click is None:
                        s.corrections = r  # perfect already
                        continue
                    s.prompts.append(click)
                    prev[i] = chosen[j]
        return prev

    def _loss_size(self, logits: torch.Tensor) -> Tuple[int, int]:
        """The canvas at the loss resolution: long side 512 at most, never below the logits' own."""
        ch, cw = self.canvas
        long = max(max(logits.shape[-2:]), min(max(ch, cw), 512))
        return round(ch * long / max(ch, cw)), round(cw * long / max(ch, cw))

    def _targets(self, samples: List[TrainSample], size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Ground truth and valid pixels on the canvas drawn at ``size`` (the image top-left, padding invalid)."""
        gts, valid = [], []
        for s in samples:
            lh, lw = _to_canvas(s.size, self.canvas, size)
            g = np.zeros(size, np.float32)
            v = np.zeros_like(g)
            g[:lh, :lw] = cv2.resize(s.gt.astype(np.float32), (lw, lh), interpolation=cv2.INTER_AREA)
            v[:lh, :lw] = 1
            gts.append(g)
            valid.append(v)
        return (torch.from_numpy(np.stack(gts)).to(self.device), torch.from_numpy(np.stack(valid)).to(self.device))

    def _images(self, samples: List[TrainSample], size: Tuple[int, int]) -> torch.Tensor:
        """The samples' images on the canvas drawn at ``size`` (top-left, zero padding), RGB 0..255 ``(B, 3, L, L)``."""
        out = np.zeros((len(samples), size[0], size[1], 3), np.float32)
        for i, s in enumerate(samples):
            lh, lw = _to_canvas(s.size, self.canvas, size)
            out[i, :lh, :lw] = cv2.resize(s.rgb, (lw, lh), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(self.device)

    def loss(self, samples: List[TrainSample]) -> Tuple[torch.Tensor, dict]:
        features = self._features_of(samples)
        prev = self._correct(features.detach(), samples) if self.config.max_corrections else [None] * len(samples)
        out = self._forward(features, samples, prev)
        b, k = out.logits.shape[:2]
        size = self._loss_size(out.logits)
        flat = F.interpolate(out.logits, size, mode="bilinear", align_corners=False).flatten(0, 1)  # (B*K, L, L)
        gt, valid = self._targets(samples, size)
        gtk, validk = gt.repeat_interleave(k, 0), valid.repeat_interleave(k, 0)
        c = self.weights
        if self.config.labels == "proposals":  # MIS's losses on its pseudo-objects
            bce = F.binary_cross_entropy_with_logits(flat, gtk, reduction="none")
            per = (bce * validk).flatten(1).sum(1) / validk.flatten(1).sum(1).clamp(min=1)
        else:
            per = c["focal"] * normalized_focal_loss(flat, gtk, validk, reduction="none")
            if c["dice"]:
                per = per + c["dice"] * dice_loss(flat, gtk, validk, reduction="none")
        per = per.view(b, k)
        # the candidate that trains: the best-fitting of those inference would choose from
        pick = per.detach().masked_fill(~out.eligible, float("inf")).argmin(1)
        mask_loss = per[torch.arange(b), pick].mean()
        total = mask_loss
        iou_loss = torch.zeros((), device=self.device)
        if out.scores is not None and c["iou"]:  # every eligible candidate's score matters: inference picks by score
            sel = out.eligible.flatten()
            iou_loss = iou_head_loss(out.scores.flatten()[sel], flat[sel], gtk[sel], validk[sel])
            total = total + c["iou"] * iou_loss
        extra = torch.zeros((), device=self.device)
        if out.aux_logits is not None and out.aux_weight:  # an auxiliary head, trained on the same target
            aux = F.interpolate(out.aux_logits, size, mode="bilinear", align_corners=False)[:, 0]
            extra = extra + out.aux_weight * c["focal"] * normalized_focal_loss(aux, gt, valid)
        if out.extra_loss is not None:  # the model's own losses (MST's token losses)
            extra = extra + out.extra_loss(gt, valid)
        if self.config.labels == "proposals" and self.config.smooth_weight:  # MIS: smooth where the image is
            picked = flat.view(b, k, *size)[torch.arange(b), pick]
            extra = extra + self.config.smooth_weight * bilateral_smoothness(picked, self._images(samples, size), valid)
        total = total + extra
        chosen = pick + k * torch.arange(b, device=pick.device)
        return total, {"extra": float(extra.detach()), "loss": float(total.detach()), "mask": float(mask_loss.detach()), "iou": float(iou_loss.detach()),
                       "chosen_iou": float(hard_iou(flat[chosen], gtk[chosen], validk[chosen]).mean())}

    # -- the loop --------------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        c = self.config
        if step < c.warmup:
            return c.lr * (step + 1) / c.warmup
        t = (step - c.warmup) / max(1, c.steps - c.warmup)
        return c.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))

    def train_step(self) -> dict:
        t0 = time.perf_counter()
        net = self.model.network
        net.train()
        samples = self.batch(self.step)
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        self.opt.zero_grad(set_to_none=True)
        total, info = self._ddp(samples) if self._ddp is not None else self.loss(samples)
        total.backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        self.opt.step()
        net.eval()
        self.step += 1
        info.update(step=self.step, steps=self.config.steps, lr=self.opt.param_groups[0]["lr"],
                    seconds=time.perf_counter() - t0)
        self.history.append(info)
        return info

    def run(self, out: Optional[Path] = None, stop: Optional[Callable[[], bool]] = None) -> None:
        """Train until ``config.steps`` (continuing from ``self.step``), saving every ``save_every`` steps."""
        while self.step < self.config.steps:
            if stop is not None and stop():
                break
            info = self.train_step()
            self.progress(dict(info, phase="train"))
            if out is not None and self.config.save_every and self.step % self.config.save_every == 0:
                self.save(out)

    # -- checkpoints -----------------------------------------------------------------------------------
    def meta(self, metrics: Optional[dict] = None) -> dict:
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        ident = f"{self.base['version']}|{self.data}|{self.config}|{self.step}|{created}"
        return {
            "format": FORMAT,
            "model": self.model.name,
            "version": f"ft-{hashlib.blake2b(ident.encode(), digest_size=5).hexdigest()}-s{self.step}",
            # decoder-only: the encoder is the base's, so are its embeddings
            "encoder_version": self.base["encoder_version"] if self.mode == "decoder" else None,
            "base": dict(self.base),
            "mode": self.mode,
            "data": self.data,
            "objects": len(self.objects),
            "steps": self.step,
            "config": asdict(self.config),
            "metrics": metrics or dict(self.metrics),
            "loss_last": self.history[-1]["loss"] if self.history else None,
            "created": created,
            "torch": str(torch.__version__),
        }

    def save(self, path, metrics: Optional[dict] = None) -> dict:
        """Write weights + metadata + optimizer state atomically (a failed write keeps the previous file)."""
        if self.rank != 0:
            return {}
        path = Path(path)
        meta = self.meta(metrics)
        state = {k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()
                 for k, v in self.model.checkpoint_state().items()}
        obj = {"format": FORMAT, "model": self.model.name, "meta": meta, "state_dict": state,
               "trainer": {"step": self.step, "optimizer": self.opt.state_dict(), "mode": self.mode}}
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(obj, tmp)
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise IsegError(f"could not write the checkpoint {path}: {e.strerror or e}; "
                            "the previous checkpoint (if any) is unchanged") from None
        return meta

    def resume(self, path, saved=None) -> dict:
        """Continue a run from a checkpoint this trainer's :meth:`save` wrote (``saved``: the file's content when
        the caller has read it already); returns its metadata."""
        obj = saved if saved is not None else read_checkpoint_object(path)
        state, meta = split_checkpoint(obj, path)
        trainer = obj.get("trainer") if isinstance(obj, dict) else None
        if meta.get("format") != FORMAT or not isinstance(trainer, dict):
            raise CheckpointError(f"{path} is not a training checkpoint of iseg (no optimizer state to resume from); "
                                  "start a new run from it with --checkpoint instead")
        if meta.get("model") != self.model.name:
            raise CheckpointError(f"{path} was trained as {meta.get('model')!r}, not {self.model.name!r}")
        if trainer.get("mode") != self.mode:
            raise CheckpointError(f"{path} trained in {trainer.get('mode')} mode; resume it with --mode {trainer.get('mode')}")
        self.model.load_checkpoint_state(state, str(path))
        self.opt.load_state_dict(trainer["optimizer"])
        self.step = int(trainer["step"])
        self.base = dict(meta.get("base") or self.base)
        return meta


class _Forward(nn.Module):
    """The trainer's loss as a module, so DistributedDataParallel can wrap it."""

    def __init__(self, trainer: Trainer):
        super().__init__()
        self.net = trainer.model.network
        object.__setattr__(self, "_trainer", trainer)

    def forward(self, samples):
        return self._trainer.loss(samples)


# -- evaluation ---------------------------------------------------------------------------------------------
def evaluate(model, objects: Sequence[TrainingObject], max_clicks: int = 20, target_iou: float = 0.95,
             progress: Optional[Progress] = None, label: str = "") -> dict:
    """The protocol (first click at the object's centre, clicks at the largest error, previous mask fed back)
    on ``objects``: NoC@85/90/95, NoF, mIoU@1/5, as :func:`iseg_core.eval.metrics.summarize` gives them."""
    if not objects:
        raise DatasetError(f"{label or 'evaluation'}: no objects")
    evaluator = ObjectEvaluator(Predictor(model, EmbeddingCache(max_bytes=256 << 20)))
    ious = []
    for k, obj in enumerate(objects):
        image, gt, third = obj.load()
        ignore = third if isinstance(obj, Sample) else None  # a benchmark's ignore band; not a TrainingObject's others
        run = evaluator.run(obj.name, image, gt, ignore, max_clicks=max_clicks, target_iou=target_iou)
        ious.append(run.ious)
        if progress is not None:
            progress({"phase": f"eval {label}".strip(), "done": k + 1, "total": len(objects)})
    return summarize(ious, max_clicks=max_clicks)


# -- the command line ---------------------------------------------------------------------------------------
TABLE_KEYS = ("NoC@85", "NoC@90", "NoF@90", "mIoU@1", "mIoU@5")


def comparison_table(before: Dict[str, dict], after: Dict[str, dict]) -> str:
    """Markdown rows: each evaluation set before and after training."""
    lines = ["| data | model | objects | " + " | ".join(TABLE_KEYS) + " |", "|---|---|---:|" + "---:|" * len(TABLE_KEYS)]
    for name in after:
        for label, m in (("before", before.get(name)), ("after" if before else "start", after[name])):
            if m:
                vals = [f"{m[k]:.2f}" if isinstance(m[k], float) else str(m[k]) for k in TABLE_KEYS]
                lines.append(f"| {name} | {label} | {m['objects']} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def is_better(before: dict, after: dict) -> bool:
    """The fine-tuned model replaces its base when it needs fewer clicks for 90 % IoU, or as many with a
    higher IoU after five."""
    return (after["NoC@90"], -after["mIoU@5"]) < (before["NoC@90"], -before["mIoU@5"])


def _proposal_objects(args, say) -> List[TrainingObject]:
    """``--labels proposals``: MIS's pseudo-objects of the unlabelled images in ``--images`` (their region trees
    built once, kept in ``--proposals-cache``)."""
    from .proposals import DinoFeatures, proposal_objects

    if not args.images or args.data or args.coco or args.store_project:
        raise DatasetError("--labels proposals trains on --images DIR alone (unlabelled images; no --data, --coco "
                           "or --store-project)")
    features = DinoFeatures().eval()
    version = "random"
    if args.dino_checkpoint:
        from iseg_core import weights
        from iseg_core.models.checkpoint import load_checkpoint

        path, version = weights.resolve_checkpoint("dino_vits8", args.dino_checkpoint)
        features.load_dino(load_checkpoint(path)[0], str(path))
        version = version or f"file-{Path(path).stat().st_size}"
    else:
        say("proposal features: DINO ViT-S/8 with RANDOM weights (give --dino-checkpoint hub or a file for DINO's "
            "own): the path is real, the regions are not meaningful")
    cache = Path(args.proposals_cache or Path(args.out).with_suffix(".proposals"))
    return proposal_objects(args.images, cache, features, version, seed=args.seed, limit=args.limit_images)


def _objects_from_args(args) -> List[TrainingObject]:
    from .data import coco_objects, folder_objects, store_objects

    objects: List[TrainingObject] = []
    for root in args.data or []:
        root = Path(root)
        masks = args.masks or next((m for m in ("masks", "ground_truth_mask", "gt", "GT") if (root / m).is_dir()), "masks")
        objects += folder_objects(root, images=args.images_folder, masks=masks)
    if args.coco:
        if not args.images:
            raise DatasetError("--coco needs --images (the folder its file_name entries are relative to)")
        objects += coco_objects(args.coco, args.images)
    if args.store_project:
        from storage import Store

        store = Store(args.database)
        objects += store_objects(store, store.project(args.store_project, create=False))
    if not objects:
        raise DatasetError("nothing to train on: give --data FOLDER, --coco FILE --images DIR, or --store-project NAME")
    return objects


def main(argv=None) -> int:
    import argparse
    import json
    import sys

    from iseg_core.eval.datasets import open_dataset
    from iseg_core.models import load_model
    from iseg_core.runtime import tune_allocator

    from .data import split

    ap = argparse.ArgumentParser(prog="python -m training.finetune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help=f"one of {', '.join(trainable_models())}")
    ap.add_argument("--checkpoint", help="starting weights: a file, 'hub', or none for a random initialisation")
    ap.add_argument("--data", action="append", help="an images + masks folder (masks/ or ground_truth_mask/); repeatable")
    ap.add_argument("--images-folder", default="images", help="the images subfolder of --data (default images)")
    ap.add_argument("--masks", help="the masks subfolder of --data (default: found)")
    ap.add_argument("--coco", help="a COCO JSON of instance masks")
    ap.add_argument("--images", help="the images folder of --coco; with --labels proposals, the unlabelled images")
    ap.add_argument("--labels", choices=("given", "proposals"), default="given",
                    help="given: the masks of --data / --coco / --store-project; proposals: no masks, MIS's "
                         "pseudo-objects of --images (its losses: BCE + bilateral smoothness)")
    ap.add_argument("--dino-checkpoint", help="--labels proposals: DINO ViT-S/8 weights ('hub': the published "
                    "dino_deitsmall8_pretrain.pth; default random)")
    ap.add_argument("--proposals-cache", help="--labels proposals: where region trees are kept (default OUT.proposals/)")
    ap.add_argument("--limit-images", type=int, default=None, help="--labels proposals: the first N images only")
    ap.add_argument("--store-project", help="train on the accepted annotations of this project of --database")
    ap.add_argument("--database", help="storage URL: read --store-project from it, register the result as a model version")
    ap.add_argument("--out", required=True, help="the checkpoint to write (load_model reads it)")
    ap.add_argument("--resume", help="continue a run from its checkpoint (same data, model and mode)")
    ap.add_argument("--mode", default="auto", help="decoder, full (the model's training modes) or auto: decoder "
                    "from weights, full from a random initialisation")
    ap.add_argument("--steps", type=int, default=FinetuneConfig.steps)
    ap.add_argument("--batch-size", type=int, default=FinetuneConfig.batch_size)
    ap.add_argument("--lr", type=float, default=None, help="default 1e-4 for decoder mode, 3e-4 for full")
    ap.add_argument("--max-corrections", type=int, default=FinetuneConfig.max_corrections)
    ap.add_argument("--save-every", type=int, default=FinetuneConfig.save_every)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--held-out", type=float, default=DEFAULT_HELD_OUT,
                    help=f"fraction of the data's images kept for evaluation (default {DEFAULT_HELD_OUT})")
    ap.add_argument("--limit", type=int, default=None, help="train on the first N training objects only")
    ap.add_argument("--eval", action="append", default=[], metavar="NAME=ROOT",
                    help="also evaluate on a benchmark, e.g. grabcut=../shared/data/GrabCut; repeatable")
    ap.add_argument("--eval-limit", type=int, default=None, help="at most this many objects per evaluation set")
    ap.add_argument("--max-clicks", type=int, default=20)
    ap.add_argument("--no-eval", action="store_true", help="skip the evaluations before and after")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads")
    ap.add_argument("--log-every", type=int, default=10)
    args = ap.parse_args(argv)
    tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)

    rank, world = 0, 1
    device = args.device
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun
        use_cuda = torch.cuda.is_available() and device != "cpu"
        dist.init_process_group("nccl" if use_cuda else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if use_cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
    say = (lambda *a: print(*a, flush=True)) if rank == 0 else (lambda *a: None)
    try:
        if args.labels == "proposals":
            train, held = _proposal_objects(args, say), []  # no labels: nothing to hold out
            say("no labelled held-out set: the images are unlabelled; give --eval NAME=ROOT to compare before / after")
        else:
            train, held = split(_objects_from_args(args), args.held_out)
        train = train[:args.limit] if args.limit else train
        mode = args.mode if args.mode != "auto" else ("decoder" if args.checkpoint else "full")
        lr = args.lr or (1e-4 if mode == "decoder" else 3e-4)
        config = FinetuneConfig(steps=args.steps, batch_size=args.batch_size, lr=lr, mode=mode, seed=args.seed,
                                max_corrections=args.max_corrections, save_every=args.save_every, labels=args.labels)
        torch.manual_seed(args.seed)  # the same random initialisation on every rank and on resume
        model = load_model(args.model, checkpoint=args.checkpoint, device=device)
        data = "; ".join(filter(None, [*(args.data or []), args.coco, args.store_project and f"project {args.store_project}",
                                       args.labels == "proposals" and f"proposals of {args.images}"]))
        t_start = time.perf_counter()

        def progress(info: dict) -> None:
            if info.get("phase") == "train" and (info["step"] % args.log_every == 0 or info["step"] == info["steps"]):
                recent = trainer.history[-args.log_every:]
                sps = len(recent) / sum(h["seconds"] for h in recent)
                eta = (info["steps"] - info["step"]) / sps
                say(f"step {info['step']}/{info['steps']}  loss {np.mean([h['loss'] for h in recent]):.4f}  "
                    f"IoU {np.mean([h['chosen_iou'] for h in recent]):.3f}  lr {info['lr']:.2e}  "
                    f"{sps:.2f} steps/s  eta {eta / 60:.1f} min")

        trainer = Trainer(model, train, config, starting_from=args.checkpoint, data=data, progress=progress)
        say(f"{args.model}: {mode} training on {len(train)} objects ({len(held)} held out) from {data}; "
            f"{args.steps} steps of {args.batch_size} on {model.device} x {world}")
        before: Dict[str, dict] = {}
        saved = read_checkpoint_object(args.resume) if args.resume else None
        if saved is not None:  # the starting model's numbers travel in the checkpoint
            before = dict((split_checkpoint(saved, args.resume)[1].get("metrics") or {}).get("before") or {})
        sets = {"held-out": held[:args.eval_limit]} if held else {}
        for spec in args.eval:
            name, _, root = spec.partition("=")
            items = list(open_dataset(name, root))[:args.eval_limit]
            sets[name] = items
        if args.no_eval or rank != 0:
            sets = {}
        for name, items in sets.items():
            if name not in before:  # the model is still the starting one here, also when resuming
                before[name] = evaluate(model, items, args.max_clicks, label=name)
        if saved is not None:
            trainer.resume(args.resume, saved)
            saved = None
            say(f"resumed from {args.resume} at step {trainer.step}")
        trainer.metrics = {"before": before}
        if sets:
            say("before training:\n" + comparison_table({}, before))
        t_train = time.perf_counter()
        trainer.run(Path(args.out), stop=None)
        train_s = time.perf_counter() - t_train
        after = {name: evaluate(model, items, args.max_clicks, label=name) for name, items in sets.items()}
        metrics = {"before": before, "after": after, "train_seconds": round(train_s, 1),
                   "steps_per_second": round(len(trainer.history) / max(train_s, 1e-9), 3)}
        if device and str(device).startswith("cuda"):
            metrics["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        meta = trainer.save(args.out, metrics)
        if rank == 0:
            if sets:
                say("after training:\n" + comparison_table(before, after))
                say("better than the starting model on " + ", ".join(
                    f"{n}: {'yes' if is_better(before[n], after[n]) else 'no'}" for n in after))
            say(f"wrote {args.out} (version {meta['version']}; {metrics['steps_per_second']} steps/s, "
                f"{(time.perf_counter() - t_start) / 60:.1f} min in all)")
            if args.database:
                from storage import Store

                store = Store(args.database)
                vid = store.register_model_version(args.model, meta["version"], checkpoint=str(Path(args.out).resolve()),
                                                   metrics=json.loads(json.dumps(metrics)))
                store.record_training_run(base=(args.model, trainer.base["version"]), result_version_id=vid,
                                          params=json.loads(json.dumps(meta["config"])), metrics=metrics, status="done")
                say(f"registered {args.model}@{meta['version']} in {args.database}")
    except IsegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if world > 1:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
