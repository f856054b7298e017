"""Encode every image of a project into the embedding store before anyone clicks.

    python -m iseg_core.precompute --project NAME --model NAME [--checkpoint hub] [--store URL] [--database URL]
    torchrun --nproc_per_node=N -m iseg_core.precompute --project NAME --model NAME ...
    python -m iseg_core.precompute --project NAME --model NAME --ray local|ADDRESS [--ray-workers N]
    python -m iseg_core.precompute --project NAME --model NAME --propose [--points-per-side 16]

Only images whose embedding the store lacks are encoded (a stopped run, started again, does no image twice;
entries appear whole or not at all). Under torchrun each rank takes every N-th image of the project's order
(rank r: images r, r+N, ...), on GPU ``LOCAL_RANK`` when there are GPUs; the ranks need no communication. A
progress bar per rank says images done / total, the rate and the time left; the last line counts what was
encoded, what was already stored and what failed (a failed image is named, the others go on).

With ``--ray`` the missing images become a Ray Data dataset mapped by a pool of encoder actors (each loads the
model once; one GPU each where the cluster has GPUs, else one CPU each); ``local`` starts a Ray instance on this
machine with ``--ray-workers`` CPUs. Ray is an optional extra (``pip install -r requirements-ray.txt``); the
nodes of a remote cluster need iseg importable and the database, images and store reachable.
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
               limit: Optional[int] = None, progress: bool = True, stop=None, report=None,
               propose=None) -> dict:
    """Encode this rank's share of ``project``'s images that ``embeddings`` lacks for ``model``; returns the
    counts {encoded, stored, failed, total} and the failures' messages."""
    from tqdm.auto import tqdm

    images = store_db.images_of(store_db.project(project))[:limit]
    mine = images[rank::world]
    have = embeddings.keys(model.cache_key)
    counts = {"encoded": 0, "stored": 0, "failed": 0, "taken": 0, "total": len(mine), "errors": [], "proposed": 0}
    # ``propose``: an EverythingConfig: each image's proposed objects are made and stored too
    # ``stop()`` true: stop after the current image; ``report(counts)`` after each image (the studio's progress)
    bar = tqdm(mine, desc=f"rank {rank}/{world}" if world > 1 else "encoding", unit="image", position=rank,
               disable=not progress, file=sys.stderr)
    for rec in bar:
        if stop is not None and stop():
            break
        if report is not None:
            report(counts)
        if rec.sha256 in have and propose is None:
            counts["stored"] += 1
            if embeddings.on_put is not None:  # written before, perhaps by a process without this database
                embeddings.on_put(rec.sha256, model.cache_key)
            continue
        claimed = False
        try:
            embedding = embeddings.get(model.cache_key, rec.sha256, model.device) if rec.sha256 in have else None
            if embedding is None:
                claimed = embeddings.claim(model.cache_key, rec.sha256)
                if not claimed:  # another job is encoding it right now
                    counts["taken"] += 1
                    continue
                embedding = embeddings.get(model.cache_key, rec.sha256, model.device)  # done meanwhile?
            if embedding is None:
                embedding = model.encode(load_image(rec.path).rgb)
                embeddings.put(rec.sha256, embedding)
                counts["encoded"] += 1
            else:
                counts["stored"] += 1
            if propose is not None:
                from .everything import segment_everything

                found = segment_everything(model, embedding, propose)
                store_db.replace_proposals(rec.id, [{"mask": p.mask, "score": p.score, "stability": p.stability}
                                                    for p in found], model.cache_key)
                counts["proposed"] += len(found)
        except NotStorable as e:
            raise IsegError(f"{model.name}'s embeddings cannot be stored ({e}); it encodes in milliseconds "
                            f"anyway: nothing to precompute") from e
        except (IsegError, OSError) as e:
            counts["failed"] += 1
            counts["errors"].append(f"{rec.file_name}: {e}")
            bar.write(f"skipped {rec.file_name}: {e}", file=sys.stderr)
        finally:
            if claimed:
                embeddings.release(model.cache_key, rec.sha256)
    if report is not None:
        report(counts)
    return counts


def _missing(store_db, project: str, cache_key: str, embeddings: EmbeddingStore, limit: Optional[int]):
    images = store_db.images_of(store_db.project(project))[:limit]
    have = embeddings.keys(cache_key)
    return [r for r in images if r.sha256 not in have], len(images)


class _RayEncoder:
    """A Ray actor: the model loaded once, then each batch of image rows encoded into the store."""

    def __init__(self, model_name: str, checkpoint: Optional[str], store_url: str):
        import torch as _torch

        from .models import load_model

        device = "cuda" if _torch.cuda.is_available() else "cpu"
        self.model = load_model(model_name, checkpoint, device=device)
        self.store = EmbeddingStore(store_url)

    def __call__(self, batch: dict) -> dict:
        status = []
        for path, key, name in zip(batch["path"], batch["key"], batch["name"]):
            try:
                self.store.put(str(key), self.model.encode(load_image(str(path)).rgb))
                status.append("encoded")
            except (IsegError, OSError) as e:
                status.append(f"{name}: {e}")
        return {"key": list(batch["key"]), "status": status}


def precompute_ray(address: str, workers: int, store_db, project: str, model_name: str, checkpoint: Optional[str],
                   embeddings: EmbeddingStore, cache_key: str, limit: Optional[int] = None,
                   progress: bool = True) -> dict:
    """The missing images of ``project`` encoded by a Ray Data job (see the module)."""
    try:
        import ray
    except ImportError:
        raise IsegError("--ray needs Ray: pip install -r requirements-ray.txt") from None
    from pathlib import Path

    from tqdm.auto import tqdm

    todo, total = _missing(store_db, project, cache_key, embeddings, limit)
    counts = {"encoded": 0, "stored": total - len(todo), "failed": 0, "total": total, "errors": []}
    if not todo:
        return counts
    root = str(Path(__file__).resolve().parent.parent)
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0"),
                        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}}
    if address == "local":
        ray.init(num_cpus=workers, include_dashboard=False, runtime_env=env, log_to_driver=False)
    else:
        ray.init(address=address, runtime_env=env, log_to_driver=False)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        pool = min(len(todo), gpus or workers)
        ds = ray.data.from_items([{"path": str(r.path), "key": r.sha256, "name": r.file_name} for r in todo])
        out = ds.map_batches(_RayEncoder, fn_constructor_args=(model_name, checkpoint, embeddings.url),
                             batch_size=1, concurrency=pool, num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)
        bar = tqdm(total=len(todo), desc=f"ray ({pool} {'GPU' if gpus else 'CPU'} workers)", unit="image",
                   disable=not progress, file=sys.stderr)
        for batch in out.iter_batches(batch_size=1, batch_format="numpy"):
            for key, st in zip(batch["key"], batch["status"]):
                if st == "encoded":
                    counts["encoded"] += 1
                    if embeddings.on_put is not None:  # the actors wrote it; the driver notes it
                        embeddings.on_put(str(key), cache_key)
                else:
                    counts["failed"] += 1
                    counts["errors"].append(str(st))
                    bar.write(f"skipped {st}", file=sys.stderr)
                bar.update(1)
        bar.close()
    finally:
        ray.shutdown()
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
    ap.add_argument("--propose", action="store_true",
                    help="also store each image's proposed objects (segment-everything; SAM-family models)")
    ap.add_argument("--points-per-side", type=int, default=16, help="with --propose: the click grid (SAM: 32)")
    ap.add_argument("--ray", default=None, metavar="ADDRESS", help="run as a Ray Data job: 'local' or a cluster address")
    ap.add_argument("--ray-workers", type=int, default=2, help="with --ray: encoder actors where the cluster has "
                                                               "no GPU (default 2; with GPUs: one per GPU)")
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
        if ckpt is not None and os.path.exists(ckpt):
            ckpt = os.path.abspath(ckpt)  # Ray's workers may start elsewhere
        model = load_model(args.model, ckpt, device=device)
        db = Store(args.database)
        embeddings = EmbeddingStore(args.store)
        embeddings.on_put = lambda key, cache_key: db.record_embedding(key, cache_key, embeddings.url)
    except (IsegError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        if args.ray and args.propose:
            raise IsegError("--propose runs in the single-process or torchrun job, not under --ray")
        if args.propose and not hasattr(model, "decode_candidates"):
            raise IsegError(f"--propose needs a SAM-family model (segment-everything); {args.model} is not one")
        if args.ray:
            c = precompute_ray(args.ray, args.ray_workers, db, args.project, args.model, ckpt, embeddings,
                               model.cache_key, args.limit)
        else:
            from .everything import EverythingConfig

            c = precompute(db, args.project, model, embeddings, rank, world, args.limit,
                           propose=EverythingConfig(points_per_side=args.points_per_side) if args.propose else None)
    except (IsegError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        db.close()
    dt = time.perf_counter() - t0
    who = f"rank {rank} of {world}: " if world > 1 else ""
    print(f"{who}{c['encoded']} encoded, {c['stored']} already stored, {c['failed']} failed"
          + (f", {c['taken']} taken by another job" if c.get("taken") else "")
          + f" of {c['total']} images ({model.cache_key} into {embeddings.url}) in {dt:.1f} s"
          + (f"; {c['proposed']} proposed objects stored" if args.propose else ""))
    return 1 if c["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
