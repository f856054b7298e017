"""Sign-in with Hugging Face (``app.py --hf-oauth``, on by default in a Space with ``hf_oauth``): the page's
Login button and Gradio's OAuth session cookie give the Hub account name; nothing can be seen or changed
without it; with a users file only the accounts listed there get in, with their roles; the account is the
author of what it saves.

Outside a Space Gradio's Login routes sign in as the account of the machine's Hub token (asked of the Hub's
whoami at start): here a local server answers as the Hub for the account ``alice-hf``."""
import json

import httpx
import pytest
from gradio_client import Client

from storage.users import UsersFile
from tests.conftest import serve_studio
from tests.hub_server import HubServer

pytestmark = pytest.mark.filterwarnings("ignore:Gradio does not support OAuth features outside of a Space")
ACCOUNT = {"type": "user", "name": "alice-hf", "fullname": "Alice", "avatarUrl": "https://example.invalid/a.png"}


@pytest.fixture
def hub_account(online, monkeypatch):
    from huggingface_hub import hf_api

    with HubServer({"api/whoami-v2": json.dumps(ACCOUNT).encode()}) as hub:
        monkeypatch.setattr(hf_api.api, "endpoint", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_token_of_the_local_hub")
        yield hub


def _sign_in(url: str) -> dict:
    """Follow the Login button's route as a browser does; the session cookie it ends with (Gradio marks it
    Secure, so over this loopback HTTP it is handed to the client by hand)."""
    r = httpx.get(f"{url}login/huggingface", follow_redirects=False)
    assert r.is_redirect and r.headers["location"].startswith("/login/callback")
    r = httpx.get(url.rstrip("/") + r.headers["location"], follow_redirects=False)
    assert r.is_redirect
    session = [c.split(";")[0].split("=", 1) for c in r.headers.get_list("set-cookie") if c.startswith("session=")]
    assert session, r.headers
    return dict(session)


def test_without_a_hub_account_nothing_opens_and_a_signed_in_account_is_the_author(hub_account, tmp_path):
    url, studio, store, demo = serve_studio(tmp_path, "hf", hf_oauth=True)
    try:
        anonymous = Client(url, verbose=False)
        for call in [lambda: anonymous.predict(0, api_name="/open_image"),
                     lambda: anonymous.predict(api_name="/get_state"),
                     lambda: anonymous.predict("coco", api_name="/export")]:
            with pytest.raises(Exception, match="Sign in with Hugging Face"):
                call()
        assert store.stats(studio.project).annotations == 0

        alice = Client(url, verbose=False, httpx_kwargs={"cookies": _sign_in(url)})
        alice.predict(1, api_name="/open_image")
        alice.predict(250, 200, True, api_name="/add_click")
        info = alice.predict("thing", api_name="/finish_object")[3]
        [ann] = store.annotations(info["image_id"])
        assert ann.author == "alice-hf"
        assert store.image(info["image_id"]).locked_by == "alice-hf"  # opening locked it to the account
    finally:
        demo.close()
        store.close()


def test_with_a_users_file_only_listed_accounts_get_in_with_their_roles(hub_account, tmp_path):
    users = UsersFile(tmp_path / "users.json")
    users.add("someone-else", None)
    url, studio, store, demo = serve_studio(tmp_path, "hf", hf_oauth=True, roles=users.role)
    try:
        alice = Client(url, verbose=False, httpx_kwargs={"cookies": _sign_in(url)})
        with pytest.raises(Exception, match="account alice-hf is not on this studio's list of users.*"
                                            "users add alice-hf --hf"):
            alice.predict(0, api_name="/open_image")
        users.add("alice-hf", None)  # the operator adds her: no restart needed
        alice.predict(0, api_name="/open_image")
        assert "Only a signed-in reviewer" in alice.predict("ok", api_name="/approve_image")[1]
        users.add("alice-hf", None, role="reviewer")  # her role comes from the file too
        assert "Only a signed-in reviewer" not in alice.predict("ok", api_name="/approve_image")[1]
    finally:
        demo.close()
        store.close()


def test_the_page_asks_for_hugging_face_sign_in_and_opens_after_it(hub_account, tmp_path):
    from tests.test_ui_browser import ARGS, ARTIFACTS, CHROMIUM, _shot, playwright_api

    url, studio, store, demo = serve_studio(tmp_path, "hf", hf_oauth=True)
    try:
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url.replace("127.0.0.1", "localhost"), wait_until="load")  # Secure cookies: localhost
            page.wait_for_function("() => /Sign in with Hugging Face/.test(document.querySelector('#status')"
                                   "?.innerText || '')", timeout=60000)
            assert page.locator("#canvas img").is_hidden()  # no image yet, and no broken-image icon
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            _shot(page, "24-hf-sign-in")
            page.locator("#login").click()
            page.wait_for_function("() => /alice-hf · /.test(document.querySelector('#status')?.innerText || '')",
                                   timeout=60000)
            page.wait_for_selector("#canvas img[src*='frame-']", timeout=60000)
            _shot(page, "25-hf-signed-in")
            browser.close()
    finally:
        demo.close()
        store.close()


def test_the_app_outside_a_space_needs_a_hub_token_for_hugging_face_sign_in(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT, free_port

    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "SPACE_ID", "ISEG_USERS_FILE")}
    env.update(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", HF_HOME=str(tmp_path / "hf"),
               ISEG_HOME=str(tmp_path / "home"), ISEG_WEIGHTS_DIR=str(tmp_path / "w"))
    r = subprocess.run([sys.executable, "app.py", "--hf-oauth", "--port", str(free_port())], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "Hugging Face sign-in outside a Space" in r.stderr and "set HF_TOKEN" in r.stderr, r.stderr
    assert not (tmp_path / "home" / "iseg.db").exists()  # refused before anything was created
