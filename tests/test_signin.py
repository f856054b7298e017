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


def test_wrong_passwords_lock_a_name_out_for_a_doubling_time(caplog):
    """Three free tries, then 1, 2, 4 ... s (15 min at most) in which even the right password is refused and no
    hash is computed; the right password after the lock lets in and resets the count; every step is logged."""
    from storage.users import SignInThrottle

    now = [0.0]
    throttle = SignInThrottle(clock=lambda: now[0])
    locks = [throttle.failed("mallory") for _ in range(14)]
    assert locks[:3] == [0, 0, 0] and locks[3:8] == [1, 2, 4, 8, 16] and locks[-1] == 900  # the cap
    assert throttle.refuse("mallory") and not throttle.refuse("alice")  # one name's failures lock no other
    now[0] += 899.9
    assert throttle.refuse("mallory")
    now[0] += 0.2
    assert not throttle.refuse("mallory")
    throttle.succeeded("mallory")
    assert throttle.failed("mallory") == 0  # counting starts again
    now[0] += 86400 + 1  # a day without failures forgets them
    throttle.failed("mallory"), throttle.failed("mallory")
    assert throttle.failed("mallory") == 0 and throttle.failed("mallory") == 1
    assert "locked for 900 s" in caplog.text and "sign-in refused: 'mallory'" in caplog.text


def test_sign_in_slows_down_after_wrong_passwords_through_the_login_page(tmp_path, caplog):
    """Through Gradio's login endpoint: after four wrong passwords (three are free) the right one is refused until
    the lock-out (1 s) has passed, then accepted; the times are measured and printed."""
    import time

    import httpx

    from storage.users import UsersFile

    users = UsersFile(tmp_path / "users.json")
    users.add("ann", "ann-password")
    url, studio, store, demo = serve_studio(tmp_path, "team", auth=users.verify)
    try:
        login = lambda pw: httpx.post(url.rstrip("/") + "/login", data={"username": "ann", "password": pw},  # noqa: E731
                                      timeout=30).status_code
        assert login("ann-password") == 200  # a right password first: nothing is locked
        t0 = time.monotonic()
        assert [login(f"guess-{k}") for k in range(4)] == [400] * 4
        locked_at = time.monotonic()
        refused = login("ann-password")  # the right password, inside the lock-out
        while login("ann-password") != 200:
            time.sleep(0.05)
        waited = time.monotonic() - locked_at
        print(f"four wrong passwords in {locked_at - t0:.2f} s; the right one refused ({refused}) and let in after "
              f"{waited:.2f} s")
        assert refused == 400 and waited >= 0.8
        assert "wrong password for 'ann' (4 in a row); locked for 1 s" in caplog.text
    finally:
        demo.close()
        store.close()
