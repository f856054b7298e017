"""Encode every image of a project into the embedding store before anyone clicks.

    python -m iseg_core.precompute --project NAME --model NAME [--checkpoint hub] [--store URL] [--database URL]
    torchrun --nproc_per_node=N -m iseg_core.precompute --project NAME --model NAME ...

Only images whose embedding the store lacks are encoded (a stopped run, started again, does no image twice;
entries appear whole or not at all). Under torchrun each rank takes every N-th image of the project's order
(rank r: images r, r+N, ...), on GPU ``LOCAL_RANK`` when there are GPUs; the ranks need no communication. A
progress bar per rank says images done / total, the rate and the time left; the last line counts what was
encoded, what was already stored and what failed (a failed image is named, the others go on).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional

import torch

from .embedding_store import EmbeddingStore, NotStorable, default_store_url
from .errors import IsegError
from .image import load_image


def _rank() -> tuple:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def precompute(store_db, project: str, model, embeddings: EmbeddingStore, rank: int = 0, world: int = 1,
               limit: Optional[int] = None, progress: bool = True) -> dict:
    """Encode this rank's share of ``project``'s images that ``embeddings`` lacks for ``model``; returns the
    counts {encoded, stored, failed, total} and the failures' messages."""
    from tqdm.auto import tqdm

    images = store_db.images_of(store_db.project(project))
    if limit is not None:
        images = images[:limit]
    mine = images[rank::world]
    have = embeddings.keys(model.cache_key)
    counts = {"encoded": 0, "stored": 0, "failed": 0, "total": len(mine), "errors": []}
    bar = tqdm(mine, desc=f"rank {rank}/{world}" if world > 1 else "encoding", unit="image", position=rank,
               disable=not progress, file=sys.stderr)
    for rec in bar:
        if rec.sha256 in have:
            counts["stored"] += 1
            continue
        try:
            embedding = model.encode(load_image(rec.path).rgb)
            embeddings.put(rec.sha256, embedding)
            counts["encoded"] += 1
        except NotStorable as e:
            raise IsegError(f"{model.name}'s embeddings cannot be stored ({e}); it encodes in milliseconds "
                            f"anyway: nothing to precompute") from e
        except (IsegError, OSError) as e:
            counts["failed"] += 1
            counts["errors"].append(f"{rec.file_name}: {e}")
            bar.write(f"skipped {rec.file_name}: {e}", file=sys.stderr)
    return counts


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Encode a project's images into the embedding store.")
    ap.add_argument("--project", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--checkpoint", default="hub", help="hub (default), a known name, a file, or random")
    ap.add_argument("--store", default=None, help=f"folder or fsspec URL (default {default_store_url()})")
    ap.add_argument("--database", default=None, help="database URL (default $ISEG_DATABASE_URL or $ISEG_HOME/iseg.db)")
    ap.add_argument("--limit", type=int, default=None, help="only the project's first N images")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads per process (default: torch's)")
    args = ap.parse_args(argv)
    from storage import StorageError, Store

    from .models import load_model, takes_weights

    rank, world = _rank()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = None
    if torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    try:
        ckpt = None if args.checkpoint == "random" or not takes_weights(args.model) else args.checkpoint
        model = load_model(args.model, ckpt, device=device)
        embeddings = EmbeddingStore(args.store)
        db = Store(args.database)
    except (IsegError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        c = precompute(db, args.project, model, embeddings, rank, world, args.limit)
    except (IsegError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        db.close()
    dt = time.perf_counter() - t0
    who = f"rank {rank} of {world}: " if world > 1 else ""
    print(f"{who}{c['encoded']} encoded, {c['stored']} already stored, {c['failed']} failed of {c['total']} "
          f"images ({model.cache_key} into {embeddings.url}) in {dt:.1f} s")
    return 1 if c["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
