"""Ed25519 signing keys for model packages: generate, save, load, sign.

Private keys are PKCS#8 PEM files written with mode 0600; public keys are
SubjectPublicKeyInfo PEM (what gateways hold: `edge_agent.package.read_package` accepts PEM
or the raw 32 bytes).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.package import key_id


class KeyFileError(ValueError):
    """A key file that cannot be used."""


def generate() -> tuple[bytes, bytes]:
    """A fresh ``(private_pem, public_pem)`` pair."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def save_pair(private_path: Path, public_path: Path, *, overwrite: bool = False) -> str:
    """Generate and write a key pair; returns the public key id. Refuses to overwrite."""
    private_path, public_path = Path(private_path), Path(public_path)
    for p in (private_path, public_path):
        if p.exists() and not overwrite:
            raise KeyFileError(f"{p} exists (refusing to overwrite a key)")
    private, public = generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    public_path.write_bytes(public)
    return key_id(public)


def load_private(data_or_path: bytes | Path | str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM bytes or a PEM file."""
    data = data_or_path if isinstance(data_or_path, bytes) else _read(Path(data_or_path))
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError("private key is not Ed25519")
    return key


def load_public(data_or_path: bytes | Path | str) -> bytes:
    """Public key bytes (PEM or raw) from bytes or a file, checked to be Ed25519."""
    from edge_agent.package import PackageError, load_public_key

    data = data_or_path if isinstance(data_or_path, bytes) else _read(Path(data_or_path))
    try:
        load_public_key(data)
    except PackageError as exc:
        raise KeyFileError(exc.detail) from None
    return data


def public_of(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: {exc.strerror}") from None
