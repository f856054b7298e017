"""``python -m storage import-coco|export|export-coco|export-png|import-images|labels|stats`` on the store of
``--database`` (default ``$ISEG_DATABASE_URL`` or ``$ISEG_HOME/iseg.db``)."""
from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from .coco import export_coco, import_coco, write_json_atomic
from .database import data_home
from .errors import StorageError
from .users import ROLES, UsersFile
from .exports import FORMATS, export, export_folder, export_png
from iseg_core.image import IMAGE_SUFFIXES
from .store import Store


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m storage", description=__doc__)
    ap.add_argument("--database", help="database URL (sqlite:///path.db or postgresql://user:pass@host/db)")
    ap.add_argument("--images-dir", help="where image files are stored (default $ISEG_HOME/images)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("import-coco", help="import a COCO instances JSON and its images (all or nothing)")
    p.add_argument("--project", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--images", help="folder the file_name entries are relative to (without: pre-annotations of "
                                    "the project's images, matched by file name)")
    p.add_argument("--on-clash", choices=["map", "refuse"], default="map",
                   help="categories that differ from the label set: match by name, adding new ones (map), or "
                        "import nothing (refuse)")
    p = sub.add_parser("export", help="export a project: " + ", ".join(f"{k} ({v})" for k, v in FORMATS.items()))
    p.add_argument("--project", required=True)
    p.add_argument("--format", required=True, choices=list(FORMATS))
    p.add_argument("--out", required=True, help="a .json (coco), a .zip, or a folder (yolo, voc, objects)")
    p = sub.add_parser("labels", help="list the label set, or add / change a label")
    p.add_argument("--project", required=True)
    p.add_argument("--set", metavar="NAME", help="the label to add or change")
    p.add_argument("--color", help="#rrggbb")
    p.add_argument("--key", type=int, help="1-9 (0: no key)")
    p.add_argument("--rename", help="a new name for the label")
    p = sub.add_parser("export-coco", help="write the project as COCO JSON (RLE unless --polygons)")
    p.add_argument("--project", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--polygons", action="store_true", help="polygons instead of RLE (warns where lossy)")
    p = sub.add_parser("export-png", help="0/255 PNG per object and an indexed PNG per image (export --format "
                                          "objects into a folder)")
    p.add_argument("--project", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("import-images", help="add image files (or every image in folders) to a project")
    p.add_argument("--project", required=True)
    p.add_argument("paths", nargs="+")
    p = sub.add_parser("users", help="the sign-in users file: add (or change) / remove / list users")
    p.add_argument("action", choices=["add", "remove", "list"])
    p.add_argument("name", nargs="?")
    p.add_argument("--role", choices=list(ROLES), default="annotator")
    p.add_argument("--file", default=None, help="default $ISEG_HOME/users.json")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin (scripts)")
    p.add_argument("--hf", action="store_true",
                   help="a Hugging Face user name (app.py --hf-oauth): signs in with the Hub, no password")
    p = sub.add_parser("stats", help="counts of projects, images and annotations")
    p.add_argument("--project")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "users":  # a file of its own: no database needed
            return _users(args)
        store = Store(args.database, args.images_dir)
        return _run(store, args)
    except StorageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _users(args) -> int:
    users = UsersFile(args.file or data_home() / "users.json")
    if args.action == "list":
        for name in users.names():
            print(f"{name}\t{users.role(name)}")
        return 0
    if not args.name:
        raise StorageError(f"users {args.action} needs a NAME")
    if args.action == "remove":
        users.remove(args.name)
        print(f"removed {args.name} from {users.path}")
        return 0
    if args.hf:
        users.add(args.name, None, args.role)
        print(f"{args.name} ({args.role}) can sign in with Hugging Face; users file {users.path}")
        return 0
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise StorageError("the two passwords differ; nothing was changed")
    users.add(args.name, password, args.role)
    print(f"{args.name} ({args.role}) can sign in; users file {users.path}")
    return 0


def _run(store: Store, args) -> int:
    if args.cmd == "import-coco":
        r = import_coco(store, store.project(args.project), args.json, args.images, on_clash=args.on_clash)
        print(f"images: {r.images_added} added, {r.images_existing} already there; annotations: "
              f"{r.annotations_added} added, {r.annotations_existing} already there; categories added: "
              f"{r.categories_added}")
        for note in r.notes:
            print(f"note: {note}")
    elif args.cmd == "export-coco":
        res = export_coco(store, store.project(args.project, create=False), polygons=args.polygons)
        write_json_atomic(args.out, res.coco)
        for w in res.warnings:
            print(f"warning: {w}", file=sys.stderr)
        print(f"wrote {args.out}: {len(res.coco['images'])} images, {len(res.coco['annotations'])} annotations, "
              f"{'polygons' if args.polygons else 'RLE'}")
    elif args.cmd == "export":
        project = store.project(args.project, create=False)
        out = Path(args.out)
        if args.format.startswith("coco") or out.suffix.lower() == ".zip":
            out, warnings = export(store, project, args.format, out)
        else:
            warnings = export_folder(store, project, args.format, out)
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        print(f"wrote {out} ({FORMATS[args.format]})")
    elif args.cmd == "labels":
        project = store.project(args.project)
        if args.set:
            store.set_label(project, args.set, args.color, args.key, args.rename)
        for c in store.categories(project):
            print(f"{c.key or '-'}  {c.color or '-':7}  {c.coco_id:>4}  {c.name}")
    elif args.cmd == "export-png":
        n = export_png(store, store.project(args.project, create=False), args.out)
        print(f"wrote {n} PNG files under {args.out}")
    elif args.cmd == "import-images":
        project = store.project(args.project)
        files = []
        for p in map(Path, args.paths):
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES) if p.is_dir() else [p]
        added = existing = failed = 0
        for f in files:
            try:
                rec = store.add_image(project, f)
                added += rec.added
                existing += not rec.added
            except StorageError as e:
                failed += 1
                print(f"skipped: {e}", file=sys.stderr)
        print(f"images: {added} added, {existing} already there, {failed} skipped")
        return 1 if failed and not (added or existing) else 0
    elif args.cmd == "stats":
        project = store.project(args.project, create=False) if args.project else None
        s = store.stats(project)
        print(f"projects {s.projects}  images {s.images} (done {s.images_done})  annotations {s.annotations}")
        for name, n in sorted(s.categories.items()):
            print(f"  {name}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
