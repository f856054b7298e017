"""The users file for sign-in: names, roles and salted scrypt hashes of passwords (never the passwords).

``$ISEG_HOME/users.json`` by default, written atomically with owner-only permissions. ``python -m storage users
add NAME`` adds or changes a user (the password is read from the terminal, or from stdin with
``--password-stdin``); ``python app.py --users FILE`` turns sign-in on. With Hugging Face sign-in
(``app.py --hf-oauth``) the file is the list of Hub user names allowed in, with their roles; such a user needs no
password (``users add NAME --hf``).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

from .coco import replacing
from .errors import StorageError

ROLES = ("annotator", "reviewer")
# scrypt's cost: 2^14 x 8 x 1 = 16 MB and ~50 ms per check on one core (the interactive-login setting)
N, R, P = 2 ** 14, 8, 1


def hash_password(password: str, salt: Optional[bytes] = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=N, r=R, p=P, dklen=32)
    return f"scrypt${N}${R}${P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(digest) // 2)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


LOG = logging.getLogger("iseg.signin")


class SignInThrottle:
    """Wrong passwords for one name lock that name out for a time that doubles with each failure.

    The first ``free`` failures in a row cost nothing; the next one locks the name for ``base`` seconds, each
    further failure for twice as long as the one before, up to ``cap`` (1, 2, 4, ... 15 min). While a name is
    locked every attempt is refused without checking the password (the right one too: a guesser learns nothing
    and spends no hashing time of the server's). A right password after the lock resets the count; so does a
    day without failures. Every failure and every refusal is logged (``iseg.signin``, WARNING) with the name
    and the count. Names are kept per process (a restart forgets them), at most ``keep`` of them."""

    def __init__(self, free: int = 3, base: float = 1.0, cap: float = 900.0, forget_after: float = 86400.0,
                 keep: int = 10000, clock: Callable[[], float] = time.monotonic):
        self.free, self.base, self.cap, self.forget_after, self.keep = free, base, cap, forget_after, keep
        self.clock = clock
        self._failures: Dict[str, Tuple[int, float, float]] = {}  # name -> (failures, last failure, locked until)
        self._lock = threading.Lock()

    def _entry(self, name: str, now: float) -> Tuple[int, float, float]:
        entry = self._failures.get(name)
        if entry is not None and now - entry[1] > self.forget_after:
            del self._failures[name]
            return 0, 0.0, 0.0
        return entry or (0, 0.0, 0.0)

    def locked_for(self, name: str) -> float:
        """Seconds until ``name`` may try again (0: now)."""
        with self._lock:
            now = self.clock()
            return max(0.0, self._entry(name, now)[2] - now)

    def refuse(self, name: str) -> bool:
        """True (and logged) while ``name`` is locked out."""
        wait = self.locked_for(name)
        if wait > 0:
            LOG.warning("sign-in refused: %r is locked for %.1f s more after %d wrong passwords", name, wait,
                        self._failures.get(name, (0,))[0])
            return True
        return False

    def failed(self, name: str) -> float:
        """Count a wrong password for ``name``; returns the lock-out it starts (seconds, 0: none)."""
        with self._lock:
            now = self.clock()
            n = self._entry(name, now)[0] + 1
            lock = min(self.cap, self.base * 2 ** (n - self.free - 1)) if n > self.free else 0.0
            if len(self._failures) >= self.keep and name not in self._failures:
                self._failures.pop(next(iter(self._failures)))
            self._failures[name] = (n, now, now + lock)
        LOG.warning("sign-in failed: wrong password for %r (%d in a row)%s", name, n,
                    f"; locked for {lock:g} s" if lock else "")
        return lock

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)


class UsersFile:
    def __init__(self, path: Union[str, os.PathLike], throttle: Optional[SignInThrottle] = None):
        self.path = Path(path)
        self.throttle = throttle or SignInThrottle()

    def _read(self) -> Dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            users = data["users"]
            if not isinstance(users, dict):
                raise TypeError("'users' is not an object")
            return users
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StorageError(f"cannot read the users file {self.path}: {e}") from None

    def names(self) -> List[str]:
        return sorted(self._read())

    def role(self, name: str) -> Optional[str]:
        user = self._read().get(name)
        return user.get("role", "annotator") if user else None

    def add(self, name: str, password: Optional[str], role: str = "annotator") -> None:
        """Add or change a user; ``password=None``: a Hugging Face user, who signs in with the Hub only."""
        name = name.strip()
        if not name or any(c.isspace() for c in name) or len(name) > 100:
            raise StorageError(f"a user name is 1-100 characters without spaces, got {name!r}")
        if password is not None and len(password) < 8:
            raise StorageError("a password needs at least 8 characters")
        if role not in ROLES:
            raise StorageError(f"a role is one of {', '.join(ROLES)}, got {role!r}")
        users = self._read()
        users[name] = {"hash": hash_password(password) if password is not None else None, "role": role}
        self._write(users)

    def remove(self, name: str) -> None:
        users = self._read()
        if users.pop(name, None) is None:
            raise StorageError(f"no user {name!r} in {self.path}")
        self._write(users)

    def verify(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s; unknown names cost the same hash (no timing hint). Wrong
        passwords lock the name out for a growing time (:class:`SignInThrottle`), unknown names alike."""
        name = str(name)[:200]
        if self.throttle.refuse(name):
            return False
        try:
            user = self._read().get(name)
        except StorageError:
            return False
        stored = user.get("hash") if isinstance(user, dict) else None
        ok = check_password(str(password), stored or hash_password("", b"\0" * 16))
        ok = bool(stored) and ok  # a Hugging Face user (no hash) never signs in with a password
        if ok:
            self.throttle.succeeded(name)
        else:
            self.throttle.failed(name)
        return ok

    def _write(self, users: Dict[str, dict]) -> None:
        with replacing(self.path, " (the users file)") as tmp:
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
                json.dump({"users": users}, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
