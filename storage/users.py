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
import os
import secrets
from pathlib import Path
from typing import Dict, List, Optional, Union

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


class UsersFile:
    def __init__(self, path: Union[str, os.PathLike]):
        self.path = Path(path)

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
        """Whether ``password`` is ``name``'s; unknown names cost the same hash (no timing hint)."""
        try:
            user = self._read().get(name)
        except StorageError:
            return False
        stored = user.get("hash") if isinstance(user, dict) else None
        ok = check_password(password, stored or hash_password("", b"\0" * 16))
        return bool(stored) and ok  # a Hugging Face user (no hash) never signs in with a password

    def _write(self, users: Dict[str, dict]) -> None:
        with replacing(self.path, " (the users file)") as tmp:
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
                json.dump({"users": users}, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
