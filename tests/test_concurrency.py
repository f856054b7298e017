"""Edits of one session stay in order; edits of different sessions run side by side, so a slow image encode of
one user does not hold up another user's clicks on an image already encoded."""
import threading
import time

from gradio_client import Client

from ui.gate import SessionGate


def test_a_session_runs_in_order_and_sessions_run_side_by_side():
    gate = SessionGate()
    ran = []
    b_ran = threading.Event()

    def edit(sid, k):
        with gate.turn(sid):
            ran.append((sid, k))
            if (sid, k) == ("a", 0):  # a's first edit waits for b's: both must be running at once
                assert b_ran.wait(timeout=30), "b's edit did not run while a's was running"
            if sid == "b":
                b_ran.set()
            with gate.turn(sid):  # re-entered by the same edit: no wait on itself
                pass

    threads = []
    for k in range(5):
        for sid in ("a", "b"):
            threads.append(threading.Thread(target=edit, args=(sid, k)))
            threads[-1].start()
            time.sleep(0.01)  # the order they are handed over, as Gradio's queue hands them
    for t in threads:
        t.join(timeout=60)
    assert [k for s, k in ran if s == "a"] == list(range(5)) and [k for s, k in ran if s == "b"] == list(range(5))
    assert gate.busy() == 0  # nothing left behind


def test_a_slow_encode_does_not_hold_up_another_users_clicks(tmp_path):
    """SAM ViT-B (random weights): opening an image runs its encoder for seconds on a CPU. With two workers, a
    click of another user on an image already encoded is answered while that encode is still running; with one
    queue for everything it would wait for it."""
    from tests.conftest import serve_studio

    url, studio, store, demo = serve_studio(tmp_path, "two", "sam_vit_b", workers=2)  # random weights
    try:
        a, b = Client(url, verbose=False), Client(url, verbose=False)
        b.predict(0, api_name="/open_image")  # b's image is encoded (the next one goes on in the background)
        mgr = studio.manager("sam_vit_b")
        images = store.images_of(studio.project)
        deadline = time.monotonic() + 300
        while not mgr.is_encoded(images[1].sha256) and time.monotonic() < deadline:
            time.sleep(0.2)
        opening = a.submit(2, api_name="/open_image")  # a's image is not encoded yet: seconds of encoder
        time.sleep(0.5)  # a's open is in (its encoder runs for seconds); b clicks during it
        info = b.submit(250, 250, True, api_name="/add_click").result(timeout=300)[3]
        assert len(info["prompts"]) == 1 and info["file_name"] == "astronaut.jpg"
        assert not opening.done(), "b's click waited for a's encode"
        assert opening.result(timeout=600)[3]["file_name"] == "coffee.jpg"
    finally:
        demo.close()
        studio.close()
        store.close()
