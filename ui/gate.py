"""Edits of one browser session run one at a time and in order; edits of different sessions run side by side.

Gradio's queue hands events to up to ``workers`` threads at once (one ``concurrency_id`` for all edits). A
session's events must not overtake each other (a click applied before the image it was made on is open), so
each edit takes a ticket from its session when its worker starts it and waits until the tickets before it are
done. Gradio starts a concurrency group's events in the order they were queued, so the tickets follow the
order the browser sent them. Re-entrant: an action that calls another of the same session on its own thread
does not wait for itself.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, Optional


@dataclass
class _Turns:
    cond: threading.Condition
    next: int = 0  # the next ticket to give out
    serving: int = 0  # the ticket whose turn it is
    waiting: int = 0  # tickets given out and not yet done (the entry goes when none are left)
    owner: Optional[int] = None  # the thread running the session's current edit
    depth: int = 0


class SessionGate:
    def __init__(self):
        self._lock = threading.Lock()
        self._turns: Dict[str, _Turns] = {}

    @contextmanager
    def turn(self, sid: str) -> Iterator[None]:
        me = threading.get_ident()
        with self._lock:
            t = self._turns.get(sid)
            if t is not None and t.owner == me:  # re-entered by the edit that holds the turn
                t.depth += 1
                ticket = None
            else:
                if t is None:
                    t = self._turns[sid] = _Turns(threading.Condition(self._lock))
                ticket = t.next
                t.next += 1
                t.waiting += 1
                while t.serving != ticket:
                    t.cond.wait()
                t.owner, t.depth = me, 1
        try:
            yield
        finally:
            with self._lock:
                t.depth -= 1
                if t.depth == 0:
                    t.owner = None
                    t.serving += 1
                    t.waiting -= 1
                    if t.waiting == 0:
                        self._turns.pop(sid, None)
                    t.cond.notify_all()

    def busy(self) -> int:
        """Sessions with an edit running or waiting."""
        with self._lock:
            return len(self._turns)


def default_workers() -> int:
    """How many edits run at once: one per CPU core, or 1 on a GPU (one CUDA stream)."""
    import torch

    return 1 if torch.cuda.is_available() else max(1, os.cpu_count() or 1)
