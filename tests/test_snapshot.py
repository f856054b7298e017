"""Snapshots of the SQLite store into a folder (a mounted bucket on Spaces) while it is written, and restore."""
import threading

import numpy as np
from PIL import Image

from storage import Store
from storage.database import sqlite_file
from storage.snapshot import restore_latest, snapshots, take_snapshot


def test_snapshots_taken_during_writes_are_consistent_and_restore(tmp_path):
    url = f"sqlite:///{tmp_path / 'live' / 'iseg.db'}"
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(tmp_path / "a.png")
    store = Store(url, tmp_path / "images")
    img = store.add_image(store.project("p"), tmp_path / "a.png")
    mask = np.zeros((40, 50), bool)
    mask[5:20, 5:30] = True
    done = threading.Event()

    def writer():
        for k in range(60):
            store.save_annotation(img.id, mask, f"c{k % 3}", author=str(k))
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    bucket = tmp_path / "bucket"
    taken = []
    while not done.is_set():
        taken.append(take_snapshot(sqlite_file(url), bucket, keep=5))
    t.join()
    taken.append(take_snapshot(sqlite_file(url), bucket, keep=5))
    assert len(snapshots(bucket)) == min(5, len(taken)) and snapshots(bucket)[-1] == taken[-1]
    for snap in snapshots(bucket):  # every snapshot opens as a whole store with whole masks
        copy = Store(f"sqlite:///{snap}", tmp_path / "images")
        anns = copy.annotations(img.id)
        assert all(np.array_equal(a.mask(), mask) for a in anns)
        assert [int(a.author) for a in anns] == list(range(len(anns)))
        copy.close()

    fresh = tmp_path / "restarted" / "iseg.db"  # a restarted Space: local disk empty, bucket kept
    assert restore_latest(fresh, bucket) == taken[-1]
    restored = Store(f"sqlite:///{fresh}", tmp_path / "images")
    assert len(restored.annotations(img.id)) == 60
    assert restore_latest(fresh, bucket) is None  # an existing database is never overwritten
    store.close()
    restored.close()
