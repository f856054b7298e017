"""Training-step benchmark: seconds per step of ``training.finetune`` on ECSSD objects, side by side in one process.

    python bench/bench_training.py [--steps 20] [--batch-size 8] [--device cpu|cuda] [--vit-b]

Rows (each after a warm-up that also fills the decoder-mode embedding cache, so encoding is not timed):
``sam_mini`` decoder-only (the reference row), ``sam_mini`` full (encoder trains too), and with ``--vit-b``
``sam_vit_b`` decoder-only (random weights; on a CPU its warm-up encodes batch-size images at ~18 s each).
Reports median / p95 seconds per step, steps per second, samples per second, the ratio to the reference,
and peak memory (CUDA: ``max_memory_allocated``; CPU: the process's peak RSS so far).
"""
from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import data_dir, print_table, summary  # noqa: E402
from iseg_core.models import load_model  # noqa: E402
from iseg_core.runtime import tune_allocator  # noqa: E402
from training.data import folder_objects, split  # noqa: E402
from training.finetune import FinetuneConfig, Trainer  # noqa: E402


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(name, mode, objects, args, device):
    torch.manual_seed(0)
    model = load_model(name, device=device)
    # a fixed pool of objects: the warm-up encodes them all (decoder mode), the timed steps reuse them
    pool = objects[: args.batch_size * 2] if mode == "decoder" else objects
    trainer = Trainer(model, pool, FinetuneConfig(steps=10**6, batch_size=args.batch_size, mode=mode, lr=1e-4),
                      starting_from="bench" if mode == "decoder" else None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer.precompute()  # decoder mode: the pool encoded once, untimed
    for _ in range(args.warmup):
        trainer.train_step()
    secs = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        secs.append(trainer.train_step()["seconds"])
    return secs, peak_mb(device), trainer.history[-1]["loss"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--vit-b", action="store_true", help="add sam_vit_b decoder-only")
    args = ap.parse_args()
    tune_allocator()
    device = torch.device(args.device)
    objects, _ = split(folder_objects(data_dir() / "ECSSD", masks="ground_truth_mask"), 0.2)
    cases = [("sam_mini", "decoder"), ("sam_mini", "full")] + ([("sam_vit_b", "decoder")] if args.vit_b else [])
    rows, ref = [], None
    for name, mode in cases:
        secs, mem, loss = run(name, mode, objects, args, device)
        med, p95 = summary(secs)
        ref = ref or med
        rows.append((f"{name} {mode}", med, p95, 1 / med, args.batch_size / med, med / ref, mem, float(loss)))
    print(f"device {device} ({torch.get_num_threads()} threads), batch {args.batch_size}, {args.steps} timed steps, "
          f"torch {torch.__version__}")
    print_table(rows, ["run", "s/step median", "p95", "steps/s", "samples/s", "x reference", "peak MB", "last loss"])


if __name__ == "__main__":
    main()
