"""Team work below the page: image locks (one winner, expiry, release on accept and on a closed tab), the next
free image for a user who meets a taken one, and the reviewer's approve / send back with a comment."""
import threading
import time

import numpy as np
import pytest

from storage import StorageError, Store
from ui import Studio


def test_a_lock_has_one_winner_expires_and_is_released(store):
    from tests.test_exports import _png

    p = store.project("p")
    img = store.add_image(p, _png(10, 10), file_name="a.png")
    results = []
    barrier = threading.Barrier(8)

    def grab(name):
        barrier.wait()
        results.append((name, store.lock_image(img.id, name, idle_seconds=600)))

    threads = [threading.Thread(target=grab, args=(f"user{k}",)) for k in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    winners = [n for n, holder in results if holder is None]
    assert len(winners) == 1 and all(holder == winners[0] for n, holder in results if holder is not None)
    assert store.image(img.id).locked_by == winners[0]
    other = "user0" if winners[0] != "user0" else "user1"
    store.release_image(img.id, other)  # not theirs: nothing happens
    assert store.lock_image(img.id, other, idle_seconds=600) == winners[0]
    assert store.next_free_image(p, other, idle_seconds=600, start=0) is None  # the only image is taken
    time.sleep(0.05)
    assert store.next_free_image(p, other, idle_seconds=0.01, start=0)[0] == 0  # the same rule as lock_image
    assert store.lock_image(img.id, other, idle_seconds=0.01) is None  # the holder was idle too long
    store.release_image(img.id, other)
    assert store.image(img.id).locked_by is None
    with pytest.raises(StorageError, match="not accepted yet"):
        store.review_image(img.id, "rev", approve=True)


@pytest.fixture
def team(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'iseg.db'}", tmp_path / "images")
    roles = {"ann": "annotator", "bob": "annotator", "rev": "reviewer"}
    studio = Studio(store, "team", "classical", export_dir=tmp_path / "exports", roles=roles.get)
    studio.ensure_samples()
    for sid in roles:
        studio.sign_in(sid, sid)
    yield studio
    studio.close()
    store.close()


def test_users_get_different_images_and_a_reviewer_sends_one_back(team):
    st = team
    a = st.open_index("ann", 0)
    assert a.info["file_name"] == "astronaut.jpg" and a.status.startswith("ann · ")
    b = st.open_index("bob", 0)  # taken: bob is offered the next free image
    assert b.info["file_name"] == "chelsea.jpg" and "astronaut.jpg is being annotated by ann" in b.status
    b = st.open_index("bob", 0)  # and again: still not his
    assert b.info["file_name"] == "chelsea.jpg"
    st.add_click("ann", 250, 250)
    v = st.accept_image("ann", "person")  # accepted: released, ann moves on past bob's image
    assert v.info["file_name"] == "coffee.jpg"
    assert st.store.image(st.store.image_at(st.project, 0).id).locked_by is None
    assert "Only a signed-in reviewer" in st.review("ann", False, "no").status
    r = st.open_index("rev", 0)
    assert r.info["file_name"] == "astronaut.jpg" and "accepted" in r.status
    assert "needs a comment" in st.review("rev", False, "").status
    r = st.review("rev", False, "the helmet is missing")
    assert "Sent back astronaut.jpg: the helmet is missing" in r.status
    st.drop("rev")  # a closed tab lets go of its image
    assert st.store.image(st.store.image_at(st.project, 0).id).locked_by is None
    a = st.open_index("ann", 0)
    assert "**Sent back by rev:** the helmet is missing" in a.status and "accepted" not in a.status
    assert st.counts(fresh=True)[1] == 0  # no longer done
    st.add_click("ann", 400, 400)
    st.accept_image("ann", "helmet")  # accepted again: waiting for review again, the comment kept
    rec = st.store.image_at(st.project, 0)
    assert rec.done and rec.review_state == "" and rec.review_comment == "the helmet is missing"
    st.sign_in("rev", "rev")  # a new tab of the reviewer (the page signs every request in)
    st.open_index("rev", 0)
    r = st.review("rev", True)
    assert "Approved astronaut.jpg." in r.status and "approved by rev" in r.status
    assert len(st.store.annotations(rec.id)) == 2 and np.all([a.author == "ann" for a in st.store.annotations(rec.id)])
