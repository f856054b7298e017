"""A killed writer loses nothing it reported saved; two writers at once both succeed; a lock held too long
gives a clear retryable error and writes nothing."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from storage import Database, StorageBusy, Store
from tests.conftest import ROOT
from tests.storage_writer import mask_for


@pytest.fixture
def image(db_url, tmp_path):
    Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(tmp_path / "img.png")
    store = Store(db_url, tmp_path / "images")
    rec = store.add_image(store.project("p"), tmp_path / "img.png")
    store.close()
    return db_url, tmp_path / "images", rec


def _writer(url, images, image_id, seed, count):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "tests.storage_writer", url, str(images), str(image_id), str(seed),
                             str(count)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def _check_all_intact(store, image):
    """Every stored annotation is whole: its mask is exactly the one its writer made."""
    anns = store.annotations(image.id)
    for a in anns:
        seed, i = map(int, a.author.split(":"))
        assert np.array_equal(a.mask(), mask_for(seed, i, (image.height, image.width))), a.author
    return {a.id for a in anns}


def test_sigkill_during_saves_loses_nothing_reported(image):
    url, images, img = image
    proc = _writer(url, images, img.id, 1, 100000)
    reported = []
    for line in proc.stdout:
        if line.startswith("saved"):
            reported.append(int(line.split()[1]))
        if len(reported) >= 60:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    store = Store(url, images)
    stored = _check_all_intact(store, img)
    assert set(reported) <= stored
    assert len(stored) - len(reported) <= 1  # at most the save in flight, committed but not yet reported
    store.close()


def test_two_writers_at_once_both_succeed(image):
    url, images, img = image
    procs = [_writer(url, images, img.id, seed, 40) for seed in (2, 3)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.count("saved") == 40
    store = Store(url, images)
    assert len(_check_all_intact(store, img)) == 80
    store.close()


def test_lock_held_too_long_gives_a_retryable_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'iseg.db'}"
    Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(tmp_path / "img.png")
    holder = Store(url, tmp_path / "images")
    img = holder.add_image(holder.project("p"), tmp_path / "img.png")
    impatient = Store(Database(url, busy_timeout=0.2), tmp_path / "images")
    with holder.db.transaction() as s:  # another writer holds the database (BEGIN IMMEDIATE on first use)
        s.execute(text("SELECT 1"))
        with pytest.raises(StorageBusy, match="nothing was saved, try again") as err:
            impatient.save_annotation(img.id, mask_for(9, 0, (48, 64)), "thing", author="9:0")
        assert err.value.retryable
    assert impatient.annotations(img.id) == []
    impatient.save_annotation(img.id, mask_for(9, 0, (48, 64)), "thing", author="9:0")  # the retry succeeds
    assert len(_check_all_intact(holder, img)) == 1
