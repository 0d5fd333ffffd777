"""Mosquitto password files and the clients' secrets.

The hash is Mosquitto 2.0's own format (``mosquitto_passwd``): ``$7$`` then PBKDF2-SHA512
with 101 iterations over a 12-byte salt, ``$7$101$<salt b64>$<hash b64>``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

ITERATIONS = 101


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return (f"$7${ITERATIONS}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


def verify(password: str, encoded: str) -> bool:
    """True if `password` matches a ``$7$`` line's hash (for tests and `deploy check`)."""
    try:
        _, kind, its, salt, digest = encoded.split("$")
        if kind != "7":
            return False
        got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(its))
    except ValueError:
        return False
    return secrets.compare_digest(base64.b64encode(got).decode(), digest)


def new_secret() -> str:
    return secrets.token_urlsafe(24)


def write_private(path: Path, text: str) -> None:
    """Write a secret readable by its owner only (created 0600, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def ensure_secret(path: Path, rotate: bool = False) -> str:
    """The secret stored at `path`; a new one if missing (or `rotate`)."""
    if path.exists() and not rotate:
        return path.read_text().strip()
    value = new_secret()
    write_private(path, value + "\n")
    return value


def password_file(entries: dict[str, str]) -> str:
    """The text of a Mosquitto password file for ``{username: password}``."""
    for user in entries:
        if ":" in user or not user:
            raise ValueError(f"username {user!r} cannot go into a password file")
    return "".join(f"{u}:{hash_password(p)}\n" for u, p in entries.items())
