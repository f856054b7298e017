"""Many users clicking at once: click latency and throughput with 1, 4 and 8 simulated users.

    python bench/bench_load.py [--users 1,4,8] [--clicks 10] [--model classical]

The studio is served in this process (loopback only) on a fresh store with the bundled samples. Each simulated
user is a gradio_client session in a thread of its own: it opens an image (not timed; all images are encoded
before the clock starts), then makes ``--clicks`` clicks one after the other (each waits for its answer, as a
person does), a bounded loop. Timed: each click's round trip. Then every user reads its own state and checks
that exactly its clicks, in its order, on its image, are there (a lost click, or one applied to another
session, is counted).

Two servers, same process, same machine: "before" = every edit of every user in one queue (concurrency limit
1, as the studio ran until now), "after" = edits of different sessions side by side (one worker per CPU core),
each session's own edits still in order. Ratios: after / before at the same number of users.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import print_table, summary  # noqa: E402


def run_users(url: str, studio, n: int, clicks: int):
    from gradio_client import Client

    images = studio.store.images_of(studio.project)
    clients = [Client(url, verbose=False) for _ in range(n)]
    opened = []
    for k, c in enumerate(clients):
        info = c.predict(k % len(images), api_name="/open_image")[3]
        opened.append(info["file_name"])
    mgr = studio.manager(studio.default_model)
    deadline = time.monotonic() + 600
    while mgr.precomputing() and time.monotonic() < deadline:
        time.sleep(0.2)  # background encoding of the next images must not compete with the timed clicks
    latencies = [[] for _ in range(n)]
    start = threading.Barrier(n + 1)

    def user(k):
        c = clients[k]
        start.wait()
        for j in range(clicks):
            t = time.perf_counter()
            c.predict(40 + 11 * j, 40 + 13 * k, True, api_name="/add_click")
            latencies[k].append((time.perf_counter() - t) * 1e3)

    threads = [threading.Thread(target=user, args=(k,)) for k in range(n)]
    [t.start() for t in threads]
    start.wait()
    t0 = time.perf_counter()
    [t.join() for t in threads]
    wall = time.perf_counter() - t0
    wrong = 0
    for k, c in enumerate(clients):
        state = c.predict(api_name="/get_state")[3]
        want = [(float(40 + 11 * j), float(40 + 13 * k)) for j in range(clicks)]
        got = [(p["x"], p["y"]) for p in state["prompts"]]
        wrong += sum(a != b for a, b in zip(got, want)) + abs(len(got) - len(want))
        wrong += state["file_name"] != opened[k]
        c.predict(api_name="/clear")
    flat = [x for xs in latencies for x in xs]
    return flat, n * clicks / wall, wrong


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", default="1,4,8")
    ap.add_argument("--clicks", type=int, default=10)
    ap.add_argument("--model", default="classical")
    args = ap.parse_args()
    import torch

    from iseg_core.runtime import tune_allocator
    from tests.conftest import serve_studio
    from ui.gate import default_workers

    tune_allocator()
    torch.set_num_threads(2)
    users = [int(u) for u in args.users.split(",")]
    results = {}
    for label, workers in [("before (one queue)", 1), (f"after ({default_workers()} workers)", default_workers())]:
        with tempfile.TemporaryDirectory(prefix="iseg-bench-load-") as tmp:
            url, studio, store, demo = serve_studio(Path(tmp), "load", args.model, workers=workers)
            try:
                run_users(url, studio, 1, 2)  # warm-up
                for n in users:
                    results[(label, n)] = run_users(url, studio, n, args.clicks)
            finally:
                demo.close()
                studio.close()
                store.close()
    rows = []
    labels = list(dict.fromkeys(k[0] for k in results))
    for n in users:
        base = summary(results[(labels[0], n)][0])[0]
        for label in labels:
            lat, rate, wrong = results[(label, n)]
            p50, p95 = summary(lat)
            rows.append((label, n, p50, p95, rate, p50 / base, wrong))
    print(f"model {args.model}, {args.clicks} clicks per user, {torch.get_num_threads()} torch threads")
    print_table(rows, ["server", "users", "p50 ms", "p95 ms", "clicks/s", "p50 ratio to before", "lost or misplaced"])


if __name__ == "__main__":
    main()
