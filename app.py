"""iseg: start the annotation studio with ``python app.py`` (also the Hugging Face Spaces ``app_file``).

Defaults work offline on a fresh machine: the best model whose weights are already on disk (``weights/`` or the
Hub cache; on a CPU the light MobileSAM first, on a GPU the largest), else the ``classical`` engine (no
weights, and the page says in one line how to get a model); on a Hugging Face Space (``SPACE_ID`` set) with
the Hub reachable, MobileSAM is fetched first (its progress in the log); a SQLite database and image store under
``$ISEG_HOME`` (``data/``), and the bundled sample images on the first run. ``--model`` / ``ISEG_MODEL`` picks a
model explicitly (weights from ``weights/`` or the Hub); when weights are missing the app says so and keeps
the model it has.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

from iseg_core import IsegError  # noqa: E402
from iseg_core.embedding_store import EmbeddingStore, default_store_url  # noqa: E402
from iseg_core.models import best_available_model, default_device, fetch_light_model  # noqa: E402
from iseg_core.runtime import bf16_is_fast, tune_allocator  # noqa: E402
from iseg_core.zerogpu import maybe_offload  # noqa: E402
from storage import StorageError, Store, default_url  # noqa: E402
from storage.database import sqlite_file  # noqa: E402
from storage.errors import DatabaseUnusable  # noqa: E402
from storage.users import UsersFile  # noqa: E402
from storage.snapshot import Snapshotter, restore_latest, snapshots  # noqa: E402
from ui import Studio, build_app, launch_options, model_loader  # noqa: E402
from ui.studio import MAX_UPLOAD_MB  # noqa: E402


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _restore_hint(db_file, snapshot_dir) -> str:
    """What to restore a damaged database from: the newest snapshot, when snapshots are kept."""
    if db_file is None:
        return "Restore the database from your backup."
    if not snapshot_dir:
        return (f"No snapshot folder is set (ISEG_SNAPSHOT_DIR), so there is no snapshot to restore from: restore "
                f"{db_file} from your backup, or move it away to start with an empty database.")
    found = snapshots(Path(snapshot_dir))
    if not found:
        return f"There is no snapshot in {snapshot_dir} yet: restore {db_file} from your backup, or move it away."
    return f"The newest snapshot is {found[-1]}: move {db_file} away and copy that snapshot in its place."


def main() -> None:
    ap = argparse.ArgumentParser(description="Start the iseg annotation studio.")
    ap.add_argument("--model", default=os.environ.get("ISEG_MODEL"),
                    help="a model name (see README); default: the best one whose weights are on disk, else classical")
    ap.add_argument("--checkpoint", default=os.environ.get("ISEG_CHECKPOINT"),
                    help="SAM weights: hub (default for SAM), a known name, a path, or random")
    ap.add_argument("--bf16", choices=["auto", "1", "0"], default=os.environ.get("ISEG_BF16", "auto"),
                    help="image encoder in bfloat16: auto (default) = only where the CPU/GPU runs bf16 natively")
    ap.add_argument("--project", default=os.environ.get("ISEG_PROJECT", "default"))
    ap.add_argument("--database", default=None, help="database URL (default $ISEG_DATABASE_URL or $ISEG_HOME/iseg.db)")
    # on Hugging Face Spaces (SPACE_ID set) and in Docker the app must listen on all interfaces
    host = (os.environ.get("ISEG_HOST") or os.environ.get("GRADIO_SERVER_NAME")
            or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1"))
    port = os.environ.get("PORT") or os.environ.get("ISEG_PORT") or os.environ.get("GRADIO_SERVER_PORT") or "7860"
    ap.add_argument("--import-dir", action="append", default=[d for d in os.environ.get("ISEG_IMPORT_DIRS", "")
                                                                .split(os.pathsep) if d],
                    help="a folder the API may import images from by path (repeatable; default: none, the API "
                         "takes uploads only)")
    ap.add_argument("--max-upload-mb", type=float, default=float(os.environ.get("ISEG_MAX_UPLOAD_MB", MAX_UPLOAD_MB)),
                    help=f"size limit of one uploaded image file in MB (default {MAX_UPLOAD_MB})")
    ap.add_argument("--users", default=os.environ.get("ISEG_USERS_FILE"),
                    help="sign-in on, with this users file (python -m storage users add NAME); default: off")
    on_space_oauth = "1" if os.environ.get("SPACE_ID") and os.environ.get("OAUTH_CLIENT_ID") else "0"
    ap.add_argument("--hf-oauth", action=argparse.BooleanOptionalAction,
                    default=os.environ.get("ISEG_HF_OAUTH", on_space_oauth) == "1",
                    help="sign-in with Hugging Face (default: on in a Space with hf_oauth, else off); with --users "
                         "only the accounts in that file, with their roles (python -m storage users add NAME --hf)")
    ap.add_argument("--lock-minutes", type=float, default=float(os.environ.get("ISEG_LOCK_MINUTES", "15")),
                    help="with sign-in: an image stays locked to a user idle for this long (default 15)")
    ap.add_argument("--workers", type=int, default=int(os.environ.get("ISEG_WORKERS", "0")) or None,
                    help="edits of different users running at once (default: one per CPU core, 1 on a GPU); one "
                         "user's edits always run one at a time, in order")
    ap.add_argument("--embedding-store", default=os.environ.get("ISEG_EMBEDDING_STORE"),
                    help="a folder or fsspec URL of precomputed image embeddings (python -m iseg_core.precompute); "
                         "default: $ISEG_HOME/embeddings when it exists, else none")
    ap.add_argument("--host", default=host)
    ap.add_argument("--port", type=int, default=int(port))
    args = ap.parse_args()
    tune_allocator()
    bf16 = args.bf16 == "1" or (args.bf16 == "auto" and bf16_is_fast(default_device()))
    dtype = torch.bfloat16 if bf16 else torch.float32

    notice = None
    if not args.model:
        args.model, notice = best_available_model("cpu" if os.environ.get("SPACES_ZERO_GPU") else None)
        fetched = None
        if args.model == "classical" and os.environ.get("SPACE_ID"):
            # a Space starts empty: with the Hub reachable its visitors get MobileSAM, not the classical engine
            fetched = fetch_light_model(lambda line: print(line, flush=True))
            if fetched:
                args.model, notice = fetched, None
        print(f"model: {args.model}" + (f" ({notice})" if notice else " (fetched from the Hub)" if fetched
                                        else " (weights found on disk)"))
    models_dir = Path(os.environ.get("ISEG_HOME", "data")) / "models"
    # on ZeroGPU the main process has no GPU of its own: the model lives on the CPU, its encoder is lent one
    # (spaces.GPU calls) and clicks decode on the CPU
    loader = model_loader(args.model, args.checkpoint, models_dir, dtype=dtype, wrap=maybe_offload,
                          device="cpu" if os.environ.get("SPACES_ZERO_GPU") else None)

    snapshot_dir = os.environ.get("ISEG_SNAPSHOT_DIR")
    db_file = sqlite_file(args.database or default_url())
    if snapshot_dir and db_file is not None:
        restored = restore_latest(db_file, Path(snapshot_dir))
        if restored:
            print(f"restored the database from snapshot {restored}")
    try:
        users = UsersFile(args.users) if args.users else None
        if users is not None and not users.names():  # before anything is created
            sys.exit(f"iseg cannot start: the users file {args.users} has no users; add one with "
                     f"`python -m storage users add NAME{' --hf' if args.hf_oauth else ''} --file {args.users}`")
        if args.hf_oauth and not os.environ.get("SPACE_ID"):
            from huggingface_hub import get_token

            if get_token() is None:
                sys.exit("iseg cannot start: Hugging Face sign-in outside a Space signs everyone in as the account "
                         "of this machine's Hub token (Gradio's local stand-in), and there is none: run `hf auth "
                         "login` or set HF_TOKEN, or start without --hf-oauth")
            print("Hugging Face sign-in outside a Space: the Login button signs in as this machine's Hub account")
        store = Store(args.database)
        embeddings = None
        if args.embedding_store or Path(default_store_url()).is_dir():
            embeddings = EmbeddingStore(args.embedding_store or default_store_url())
            print(f"embedding store: {embeddings.url}")
        studio = Studio(store, args.project, args.model, loader=loader, author=os.environ.get("USER", ""),
                        notice=notice, import_dirs=args.import_dir, max_upload_mb=args.max_upload_mb,
                        roles=users.role if users else None, lock_minutes=args.lock_minutes,
                        embedding_store=embeddings)
    except DatabaseUnusable as e:
        sys.exit(f"iseg cannot start: {e} {_restore_hint(e.path, snapshot_dir)}")
    except (IsegError, StorageError) as e:
        sys.exit(f"iseg cannot start: {e}")
    added = studio.ensure_samples()
    if added:
        print(f"first run: added {added} sample images to project {args.project!r}")
    if snapshot_dir and db_file is not None:
        Snapshotter(db_file, Path(snapshot_dir), float(os.environ.get("ISEG_SNAPSHOT_MINUTES", "10"))).start()
        print(f"snapshots of {db_file} go to {snapshot_dir}")
    if args.hf_oauth:
        print("sign-in with Hugging Face: " + (f"the {len(users.names())} account(s) in {args.users}" if users
                                                else "any Hub account (as an annotator)"))
    elif users is not None:
        print(f"sign-in on: {len(users.names())} user(s) in {args.users}")
    elif args.host not in LOOPBACK:
        print(f"WARNING: iseg listens on {args.host} without sign-in: anyone who reaches this port can read and "
              "change every annotation. Start with --users FILE (python -m storage users add NAME) to require "
              "sign-in.", file=sys.stderr)
    demo = build_app(studio, workers=args.workers, hf_oauth=args.hf_oauth)
    demo.queue(default_concurrency_limit=4).launch(server_name=args.host, server_port=args.port, share=False,
                                                   **launch_options(demo), max_file_size=f"{args.max_upload_mb:g}mb",
                                                   auth=users.verify if users and not args.hf_oauth else None,
                                                   auth_message="iseg: sign in with your name and password")


if __name__ == "__main__":
    main()
