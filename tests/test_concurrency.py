"""Edits of one session stay in the order they reached the server; edits of different sessions run side by side,
so a slow image encode of one user does not hold up another user's clicks on an image already encoded."""
import secrets
import threading
import time

import httpx
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


def _run(gate, sid, ticket, ran, name=None):
    def edit():
        with gate.turn(sid, ticket):
            ran.append(name if name is not None else ticket)
    th = threading.Thread(target=edit)
    th.start()
    return th


def test_numbers_taken_at_the_door_decide_the_order_not_the_threads():
    gate, ran = SessionGate(grace_s=600), []  # a long grace: nothing here may rely on it
    tickets = [gate.arrive("a") for _ in range(4)]
    threads = []
    for ticket in reversed(tickets):  # the handlers start in the opposite order
        threads.append(_run(gate, "a", ticket, ran))
        time.sleep(0.05)
    for th in threads:
        th.join(timeout=60)
    assert ran == tickets and gate.busy() == 0


def test_a_number_refused_at_the_door_or_never_coming_holds_nobody_up():
    gate, ran = SessionGate(grace_s=600), []
    first, second = gate.arrive("a"), gate.arrive("a")
    gate.drop("a", first)  # the queue refused its event: the next one need not wait
    th = _run(gate, "a", second, ran)
    th.join(timeout=60)
    assert not th.is_alive() and ran == [second] and gate.busy() == 0

    gate, ran = SessionGate(grace_s=0.2), []
    lost, later = gate.arrive("b"), gate.arrive("b")  # ``lost``'s event fails before its handler
    th = _run(gate, "b", later, ran)
    th.join(timeout=60)
    assert not th.is_alive() and ran == [later]  # passed over after the grace time
    _run(gate, "b", lost, ran, "late").join(timeout=60)  # it came after all: it runs, nothing breaks
    _run(gate, "b", gate.arrive("b"), ran, "next").join(timeout=60)
    assert ran == [later, "late", "next"] and gate.busy() == 0


def test_a_burst_of_clicks_from_one_session_is_applied_in_the_order_it_arrived(tmp_path):
    """Bursts of 20 clicks of one session sent as fast as the server takes them (each /queue/join answered
    before the next is sent), four workers: the session's prompt list is the clicks in the order sent. Without
    the numbers taken at the door this failed in 3 runs of 4 (two clicks swapped in one of 10 bursts)."""
    from tests.conftest import serve_studio

    url, studio, store, demo = serve_studio(tmp_path, "burst", workers=4)
    try:
        fns = {d.get("api_name"): i for i, d in enumerate(httpx.get(f"{url}config").json()["dependencies"])}
        n = 20
        for burst in range(15):
            sid = secrets.token_hex(8)
            with httpx.Client(base_url=url, timeout=60) as http:
                def join(api, data):
                    r = http.post("gradio_api/queue/join", json={"data": data, "fn_index": fns[api],
                                                                  "session_hash": sid, "trigger_id": None},
                                  headers={"x-iseg-ticket": "0"})  # a client's own number is ignored
                    assert r.status_code == 200, r.text

                join("open_image", [0])
                for k in range(n):
                    join("add_click", [10 + 5 * k, 100, True])
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    prompts = studio.view(sid).info.get("prompts", [])
                    if len(prompts) >= n:
                        break
                    time.sleep(0.1)
                assert [int((p["x"] - 10) / 5) for p in prompts] == list(range(n)), f"burst {burst}"
    finally:
        demo.close()
        store.close()


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
