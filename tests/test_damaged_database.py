"""A database the app cannot use stops it with one message that names the file, says what is wrong and names
the newest snapshot to restore from; the file is left byte for byte as it was."""
import os
import sqlite3
import subprocess
import sys

import pytest
from sqlalchemy import text

from storage import Store
from storage.errors import DatabaseUnusable
from storage.snapshot import take_snapshot
from tests.conftest import ROOT


def _good_db(path):
    store = Store(f"sqlite:///{path}", path.parent / "images")
    project = store.project("p")
    for k in range(40):  # a few pages of rows
        store.category(project, f"label {k} " + "x" * 100)
    store.close()


def _random_bytes(path):
    path.write_bytes(os.urandom(8192))


def _truncated(path):
    _good_db(path)
    data = path.read_bytes()
    assert len(data) >= 4 * 4096
    path.write_bytes(data[: len(data) // 2])


def _newer_schema(path):
    _good_db(path)
    con = sqlite3.connect(path)
    con.execute("UPDATE alembic_version SET version_num = '0099'")
    con.commit()
    con.close()


CASES = {
    "random bytes": (_random_bytes, "is not a SQLite database"),
    "truncated": (_truncated, "is truncated: the database says it holds"),
    "newer schema": (_newer_schema, "was written by a newer iseg: its schema is revision 0099, this code knows "
                                    "revisions up to"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_store_refuses_it_and_changes_nothing(tmp_path, case):
    make, says = CASES[case]
    db = tmp_path / "iseg.db"
    make(db)
    before = db.read_bytes()
    with pytest.raises(DatabaseUnusable, match=says) as err:
        Store(f"sqlite:///{db}", tmp_path / "images")
    assert str(db) in str(err.value) and "Nothing was changed" in str(err.value) and err.value.path == db
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("iseg.db")) == ["iseg.db"]


def test_the_app_stops_with_one_message_naming_the_newest_snapshot(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    snaps = tmp_path / "snaps"
    _good_db(tmp_path / "old.db")
    take_snapshot(tmp_path / "old.db", snaps)
    newest = take_snapshot(tmp_path / "old.db", snaps)
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", ISEG_HOME=str(home),
               ISEG_WEIGHTS_DIR=str(tmp_path / "weights"), HF_HUB_CACHE=str(tmp_path / "hub"))
    env.pop("ISEG_DATABASE_URL", None)
    for name, snapshot_dir, hint in [("random bytes", str(snaps), f"The newest snapshot is {newest}"),
                                     ("newer schema", None, "No snapshot folder is set (ISEG_SNAPSHOT_DIR)")]:
        make, says = CASES[name]
        db = home / "iseg.db"
        db.unlink(missing_ok=True)
        make(db)
        before = db.read_bytes()
        run_env = dict(env, ISEG_SNAPSHOT_DIR=snapshot_dir) if snapshot_dir else env
        r = subprocess.run([sys.executable, "app.py", "--port", "1"], cwd=ROOT, env=run_env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 1, r.stdout + r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert "Traceback" not in r.stderr, r.stderr
        assert last.startswith(f"iseg cannot start: {db} ") and says in last and hint in last, last
        assert db.read_bytes() == before


def test_a_server_database_of_a_newer_schema_is_refused(db_url, tmp_path):
    store = Store(db_url, tmp_path / "images")
    with store.db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    store.close()
    with pytest.raises(DatabaseUnusable, match="newer iseg: its schema is revision 0099"):
        Store(db_url, tmp_path / "images")
