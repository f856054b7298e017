"""Edits of one browser session run one at a time and in the order they reached the server; edits of different
sessions run side by side.

Gradio's queue hands events to up to ``workers`` threads at once (one ``concurrency_id`` for all edits), and
each event's inputs are prepared on a thread of its own before its handler runs: two events of one session
that start together can reach their handlers in either order (a burst of 60 API clicks from one session came
out with two swapped in 3 runs of 20). So the order is taken at the door: :class:`ArrivalOrder`, a middleware,
numbers each session's edit events as their ``/queue/join`` requests arrive and passes the number to the
handler in a request header; :meth:`SessionGate.turn` lets an edit run when every earlier number of its session
has run. A number whose event will never come (refused at the door) is dropped at once; one that has not come
``GRACE_S`` after a later one is waiting (its event failed before its handler: a bad input, a cancel) is passed
over, and if it comes after all it runs as soon as the session is free. An event without a number (Gradio's
REST ``/call`` route: a session of its own each time) takes one when its handler starts. Re-entrant: an action
that calls another of the same session on its own thread does not wait for itself.
"""
from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, Optional, Set

GRACE_S = 2.0
HEADER = "x-iseg-ticket"
_HEADER = HEADER.encode()


@dataclass
class _Turns:
    cond: threading.Condition
    next: int = 0  # the next number to give out
    serving: int = 0  # the number whose turn it is
    outstanding: int = 0  # numbers given out and not yet run, dropped or passed over
    moved: float = field(default_factory=time.monotonic)  # when ``serving`` last changed
    present: Set[int] = field(default_factory=set)  # numbers whose edits wait for their turn
    dead: Set[int] = field(default_factory=set)  # numbers whose events will never come
    passed: Set[int] = field(default_factory=set)  # numbers passed over: their events may still come, late
    owner: Optional[int] = None  # the thread running the session's current edit
    depth: int = 0


class SessionGate:
    def __init__(self, grace_s: float = GRACE_S):
        self.grace_s = grace_s
        self._lock = threading.Lock()
        self._turns: Dict[str, _Turns] = {}

    def _entry(self, sid: str) -> _Turns:
        t = self._turns.get(sid)
        if t is None:
            t = self._turns[sid] = _Turns(threading.Condition(self._lock))
        return t

    def arrive(self, sid: str) -> int:
        """The next number of ``sid``'s edits (the order they reached the server)."""
        with self._lock:
            return self._take(self._entry(sid))

    @staticmethod
    def _take(t: _Turns) -> int:
        t.next += 1
        t.outstanding += 1
        return t.next - 1

    def drop(self, sid: str, ticket: int) -> None:
        """``ticket``'s event will never reach its handler (the queue refused it): nobody waits for it."""
        with self._lock:
            t = self._turns.get(sid)
            if t is not None and ticket >= t.serving:
                t.dead.add(ticket)
                self._advance(sid, t)
                t.cond.notify_all()

    def _advance(self, sid: str, t: _Turns, since: Optional[float] = None) -> None:
        """Move ``serving`` past numbers that will not come; with ``since`` (when a waiter began to wait), also
        past ones that have not come ``grace_s`` after both that and the last move."""
        while t.serving in t.dead:
            t.dead.discard(t.serving)
            t.serving += 1
            t.outstanding -= 1
            t.moved = time.monotonic()
        now = time.monotonic()
        if (since is not None and t.owner is None and t.present and t.serving not in t.present
                and now - max(t.moved, since) > self.grace_s):
            first = min(t.present)
            for k in range(t.serving, first):
                if k in t.dead:
                    t.dead.discard(k)
                else:
                    t.passed.add(k)
                t.outstanding -= 1
            t.serving, t.moved = first, now
        if t.outstanding == 0 and t.owner is None and not t.present:
            self._turns.pop(sid, None)

    @contextmanager
    def turn(self, sid: str, ticket: Optional[int] = None) -> Iterator[None]:
        """Run the caller's edit in ``sid``'s turn: after every earlier ``ticket`` (from :meth:`arrive`; None:
        take one now)."""
        me = threading.get_ident()
        late = False
        with self._lock:
            t = self._turns.get(sid)
            if t is not None and t.owner == me:  # re-entered by the edit that holds the turn
                t.depth += 1
                ticket = None
            else:
                t = self._entry(sid)
                if ticket is None:
                    ticket = self._take(t)
                # late: passed over already, or a number this entry never gave (the tab was forgotten since)
                late = ticket in t.passed or ticket < t.serving or ticket >= t.next
                t.passed.discard(ticket)
                since = time.monotonic()
                t.present.add(ticket)
                while t.owner is not None or (not late and t.serving != ticket):
                    self._advance(sid, t, since)
                    if t.owner is None and (late or t.serving == ticket):
                        break
                    t.cond.wait(timeout=self.grace_s / 4)
                t.present.discard(ticket)
                t.owner, t.depth = me, 1
        try:
            yield
        finally:
            with self._lock:
                t.depth -= 1
                if t.depth == 0:
                    t.owner = None
                    if ticket is not None and not late:
                        t.serving += 1
                        t.outstanding -= 1
                        t.moved = time.monotonic()
                    self._advance(sid, t)
                    t.cond.notify_all()

    def forget(self, sid: str) -> None:
        """A closed tab: its numbers go (unless an edit of it still runs or waits)."""
        with self._lock:
            t = self._turns.get(sid)
            if t is not None and t.owner is None and not t.present:
                self._turns.pop(sid, None)

    def busy(self) -> int:
        """Sessions with an edit running, waiting or on its way."""
        with self._lock:
            return len(self._turns)


def ticket_of(request) -> Optional[int]:
    """The number :class:`ArrivalOrder` gave this request's event, if any."""
    headers = getattr(request, "headers", None) if request is not None else None
    value = headers.get(HEADER) if headers is not None else None
    return int(value) if value and value.isdigit() else None


class ArrivalOrder:
    """ASGI middleware: numbers each session's edit events (``gated``: their function ids) in the order their
    ``/queue/join`` requests arrive, in a header for the handler (a header a client sent is removed)."""

    def __init__(self, app, gate: SessionGate, gated: Set[int]):
        self.app, self.gate, self.gated = app, gate, gated

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope["path"].endswith("/queue/join"):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            join = json.loads(body)
            sid, fn = join.get("session_hash"), join.get("fn_index")
        except (ValueError, AttributeError):
            sid = fn = None
        headers = [(k, v) for k, v in scope.get("headers", []) if k != _HEADER]
        ticket = self.gate.arrive(sid) if isinstance(sid, str) and sid and fn in self.gated else None
        if ticket is not None:
            headers.append((_HEADER, str(ticket).encode()))
        replayed = False
        status = None

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def watch(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(dict(scope, headers=headers), replay, watch)
        finally:
            if ticket is not None and status != 200:
                self.gate.drop(sid, ticket)


def default_workers() -> int:
    """How many edits run at once: one per CPU core, or 1 on a GPU (one CUDA stream)."""
    import torch

    return 1 if torch.cuda.is_available() else max(1, os.cpu_count() or 1)
