"""Snapshots of a SQLite store for hosts whose disk does not survive a restart (Hugging Face Spaces without
persistent storage): a consistent copy of the database (SQLite's online backup, taken while the app keeps
writing) into a folder such as a mounted storage bucket, and the newest copy restored on start when the
database is missing. Keep the live database on local disk (WAL needs real file locks); only copies go to the
bucket.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import List, Optional

from .errors import StorageError

PREFIX = "iseg-"


def _backup(src_path: Path, dst: Path) -> None:
    """SQLite's online backup of ``src_path`` into ``dst``, written under a temporary name and then renamed, so
    ``dst`` is either absent or complete (a reader or a crash never leaves half a database there)."""
    tmp = dst.with_name(f".{dst.name}.partial")
    try:
        src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
        try:
            out = sqlite3.connect(tmp)
            with out:
                src.backup(out)
            out.close()
        finally:
            src.close()
        tmp.replace(dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def take_snapshot(db_path: Path, dest: Path, keep: int = 10) -> Path:
    """Copy the database at ``db_path`` into ``dest/iseg-<UTC time>.db`` (written under a temporary name,
    then renamed, so a reader never sees half a snapshot); keep the newest ``keep``."""
    dest.mkdir(parents=True, exist_ok=True)
    now = time.time_ns()
    stamp = time.strftime('%Y%m%d-%H%M%S', time.gmtime(now / 1e9))
    name = f"{PREFIX}{stamp}-{now // 1000 % 1_000_000:06d}.db"  # microseconds: names sort in time order
    final = dest / name
    try:
        _backup(db_path, final)
    except (sqlite3.Error, OSError) as e:
        raise StorageError(f"cannot snapshot {db_path} to {dest}: {e}") from None
    for old in snapshots(dest)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def snapshots(dest: Path) -> List[Path]:
    """Snapshots in ``dest``, oldest first."""
    return sorted(p for p in Path(dest).glob(f"{PREFIX}*.db") if not p.name.startswith("."))


def restore_latest(db_path: Path, dest: Path) -> Optional[Path]:
    """When ``db_path`` does not exist, copy the newest snapshot there. Returns the snapshot used."""
    if Path(db_path).exists():
        return None
    found = snapshots(dest)
    if not found:
        return None
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    _backup(found[-1], Path(db_path))
    return found[-1]


class Snapshotter:
    """Takes a snapshot every ``minutes`` in a daemon thread (and one at ``stop``)."""

    def __init__(self, db_path: Path, dest: Path, minutes: float = 10.0, keep: int = 10):
        self.db_path, self.dest, self.interval, self.keep = Path(db_path), Path(dest), minutes * 60, keep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="iseg-snapshot", daemon=True)
        self.last: Optional[Path] = None
        self.error: Optional[str] = None

    def start(self) -> "Snapshotter":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.snap()

    def snap(self) -> None:
        try:
            self.last = take_snapshot(self.db_path, self.dest, self.keep)
            self.error = None
        except StorageError as e:  # reported, retried next time; the app keeps running
            self.error = str(e)

    def stop(self) -> None:
        self._stop.set()
        self.snap()
