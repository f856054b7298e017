"""Sign-in: a users file of salted scrypt hashes (python -m storage users add NAME), the app behind Gradio's
sign-in with it, the signed-in name as the author of what each user saves, and a warning when the app listens
beyond loopback without sign-in."""
import os
import subprocess
import sys

import pytest
from gradio_client import Client

from storage import StorageError
from storage.users import UsersFile
from tests.conftest import ROOT, free_port, serve_studio


def test_users_file_keeps_salted_hashes_only(tmp_path):
    users = UsersFile(tmp_path / "users.json")
    users.add("ann", "correct horse")
    users.add("bob", "correct horse", role="reviewer")
    text = (tmp_path / "users.json").read_text()
    assert "correct horse" not in text and text.count("scrypt$") == 2
    import json

    hashes = [u["hash"] for u in json.loads(text)["users"].values()]
    assert hashes[0] != hashes[1]  # salted: the same password hashes differently
    assert oct((tmp_path / "users.json").stat().st_mode & 0o777) == "0o600"
    assert users.verify("ann", "correct horse") and not users.verify("ann", "correct hors")
    assert not users.verify("carol", "correct horse") and users.role("bob") == "reviewer"
    for bad, match in [(("a b", "long enough"), "without spaces"), (("c", "short"), "at least 8"),
                       (("c", "long enough", "admin"), "role")]:
        with pytest.raises(StorageError, match=match):
            users.add(*bad)
    users.add("hub-user", None)  # a Hugging Face account: no password, never signs in with one
    assert users.role("hub-user") == "annotator"
    assert not users.verify("hub-user", "") and not users.verify("hub-user", "correct horse")
    (tmp_path / "broken.json").write_text("{not json")
    assert not UsersFile(tmp_path / "broken.json").verify("ann", "x")


def test_cli_adds_users(tmp_path):
    f = tmp_path / "u.json"
    run = lambda *a, **k: subprocess.run([sys.executable, "-m", "storage", "users", *a, "--file", str(f)],  # noqa: E731
                                         cwd=ROOT, capture_output=True, text=True, timeout=120, **k)
    r = run("add", "ann", "--password-stdin", input="s3cret-pass\n")
    assert r.returncode == 0 and "ann (annotator) can sign in" in r.stdout, r.stderr
    r = run("add", "rev", "--role", "reviewer", "--password-stdin", input="another-pass\n")
    assert r.returncode == 0, r.stderr
    assert run("list").stdout.split() == ["ann", "annotator", "rev", "reviewer"]
    r = run("add", "alice-hf", "--hf", "--role", "reviewer")
    assert r.returncode == 0 and "alice-hf (reviewer) can sign in with Hugging Face" in r.stdout, r.stderr
    assert run("list").stdout.split() == ["alice-hf", "reviewer", "ann", "annotator", "rev", "reviewer"]
    r = run("add", "x", "--password-stdin", input="short\n")
    assert r.returncode == 2 and "at least 8" in r.stderr
    assert UsersFile(f).verify("ann", "s3cret-pass")


def test_signed_in_users_are_the_authors_of_what_they_save(tmp_path):
    users = UsersFile(tmp_path / "users.json")
    users.add("ann", "ann-password")
    users.add("bob", "bob-password")
    url, studio, store, demo = serve_studio(tmp_path, "team", auth=users.verify)
    try:
        with pytest.raises(Exception):
            Client(url, verbose=False, auth=("ann", "wrong-password"))
        with pytest.raises(Exception):
            Client(url, verbose=False).predict(0, api_name="/open_image")
        for name, image in [("ann", 0), ("bob", 1)]:
            c = Client(url, verbose=False, auth=(name, f"{name}-password"))
            c.predict(image, api_name="/open_image")
            c.predict(250, 200, True, api_name="/add_click")
            info = c.predict("thing", api_name="/finish_object")[3]
            [ann] = store.annotations(info["image_id"])
            assert ann.author == name
    finally:
        demo.close()
        store.close()


def test_the_app_warns_when_it_listens_beyond_loopback_without_sign_in(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", ISEG_HOME=str(tmp_path / "home"),
               ISEG_WEIGHTS_DIR=str(tmp_path / "w"), HF_HUB_CACHE=str(tmp_path / "hub"))
    env.pop("ISEG_USERS_FILE", None)
    (tmp_path / "empty.json").write_text('{"users": {}}')
    r = subprocess.run([sys.executable, "app.py", "--port", str(free_port()), "--users", str(tmp_path / "empty.json")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "has no users; add one with `python -m storage users add NAME" in r.stderr
    assert not (tmp_path / "home" / "iseg.db").exists()  # refused before anything was created
    proc = subprocess.Popen([sys.executable, "app.py", "--host", "0.0.0.0", "--port", str(free_port())], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = ""
        for line in proc.stdout:
            seen += line
            if "WARNING" in line or "Running on" in line or len(seen) > 20000:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "WARNING: iseg listens on 0.0.0.0 without sign-in" in seen and "--users FILE" in seen, seen[-2000:]
