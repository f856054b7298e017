"""Two signed-in annotators and a reviewer in three chromium contexts: they get different images, the second
cannot open the first's locked image, the reviewer sends one back and the annotator sees the comment."""
import pytest

from storage import Store
from storage.users import UsersFile
from tests.conftest import serve_studio
from tests.test_ui_browser import ARGS, ARTIFACTS, CHROMIUM, _click_image, _shot, playwright_api

USERS = {"ann": "annotator", "bob": "annotator", "rev": "reviewer"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("team")
    users = UsersFile(tmp / "users.json")
    for name, role in USERS.items():
        users.add(name, f"{name}-password", role)
    store = Store(f"sqlite:///{tmp / 'iseg.db'}", tmp / "images")
    url, studio, store, demo = serve_studio(tmp, "team", store=store, auth=users.verify, roles=users.role)
    yield url, studio, store
    demo.close()
    store.close()


def _sign_in(browser, url, name):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.goto(url, wait_until="load")
    page.locator("input[type=text]").first.fill(name)
    page.locator("input[type=password]").first.fill(f"{name}-password")
    page.keyboard.press("Enter")
    page.wait_for_selector("#canvas img", timeout=60000)
    return page


def _status_matches(page, pattern, timeout=60000):
    page.wait_for_function("p => new RegExp(p).test(document.querySelector('#status').innerText)", arg=pattern,
                           timeout=timeout)
    return page.inner_text("#status")


def _go_to_image(page, n):
    page.get_by_role("tab", name="Images").click()
    page.fill("#goto_num input", str(n))
    page.locator("#goto_btn").click()


def test_two_annotators_and_a_reviewer(app):
    url, studio, store = app
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        ann = _sign_in(browser, url, "ann")
        _status_matches(ann, r"^ann · .*astronaut\.jpg")
        bob = _sign_in(browser, url, "bob")
        _status_matches(bob, r"bob · .*chelsea\.jpg[\s\S]*astronaut\.jpg is being annotated by ann; opened the "
                             r"next free image")  # a different image
        _go_to_image(bob, 1)  # the first image again: still ann's; bob stays on a free one
        # (patterns, not lines: while an event runs Gradio puts its timer into the status's text)
        _status_matches(bob, r"bob · .*image \d: (chelsea|coffee)\.jpg[\s\S]*astronaut\.jpg is being annotated by ann")
        _shot(bob, "21-taken-image")

        ann.evaluate("document.activeElement.blur()")
        _click_image(ann, 250, 250)
        _status_matches(ann, r"1 prompt\(s\)")
        ann.keyboard.press("a")  # accept: saved as ann, the lock let go
        _status_matches(ann, r"Saved image 1 with 1 object\(s\)")
        img = store.image_at(studio.project, 0)
        assert img.done and img.locked_by is None and store.annotations(img.id)[0].author == "ann"

        rev = _sign_in(browser, url, "rev")
        _go_to_image(rev, 1)
        _status_matches(rev, r"^rev · .*astronaut\.jpg.*accepted")
        rev.get_by_role("tab", name="Annotate").click()
        rev.fill("#review_comment textarea, #review_comment input", "the helmet is missing")
        rev.locator("#send_back_btn").click()
        _status_matches(rev, r"Sent back `?astronaut\.jpg`?: the helmet is missing")
        _shot(rev, "22-sent-back")
        rev.context.close()  # a closed tab lets go of the image (Gradio's unload)

        _go_to_image(ann, 1)
        _status_matches(ann, r"ann · .*image 1: astronaut\.jpg[\s\S]*Sent back by rev: the helmet is missing")
        _shot(ann, "23-annotator-sees-the-comment")
        assert not store.image_at(studio.project, 0).done
        browser.close()
