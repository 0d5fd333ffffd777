"""The model package: one signed file holding an int8 ``.tflite`` and its manifest.

Layout (all integers little-endian)::

    offset size  field
    0      4     magic          b"FWPK"
    4      1     format         1
    5      3     reserved       zero
    8      4     manifest_len   u32
    12     4     model_len      u32
    16     4     signature_len  u32, 0 (unsigned) or 64 (Ed25519)
    20     ...   manifest       UTF-8 JSON object
    ...    ...   model          the .tflite flatbuffer
    ...    ...   signature      Ed25519 over every byte before it (header, manifest, model)

The manifest also names the model's sha256, so the two parts are bound together even when a
package is read without a key. `read_package` checks all of it and raises `PackageError`
with a stable ``reason``: ``format``, ``unsigned``, ``signature``, ``manifest``, ``model`` or
``feature_spec`` (see `check_feature_spec`). Edge-side: no torch, no TensorFlow.

Trust fields of the manifest (all inside the signed part): ``serial`` (int >= 0, monotonic per
stream: a gateway refuses a lower one, `edge_agent.trust`), ``targets`` (null = every gateway,
else a list of ``"SITE"`` or ``"SITE/GATEWAY"``) and ``not_after`` (null or an ISO-8601 UTC
time after which no gateway installs the package). Packages older than these fields read as
serial 0, every gateway, no expiry.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.features import FeatureSpec, FeatureSpecError

MAGIC = b"FWPK"
FORMAT = 1
HEADER = struct.Struct("<4sB3sIII")
HEADER_SIZE = HEADER.size  # 20
SIGNATURE_SIZE = 64
MAX_MANIFEST = 4 * 1024 * 1024
MAX_MODEL = 64 * 1024 * 1024
REASONS = ("format", "unsigned", "signature", "manifest", "model", "feature_spec",
           "serial", "target", "expired")

#: manifest keys every package has, with their JSON types
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format": int, "name": str, "version": str, "parent": (str, type(None)), "created": str,
    "stream": str, "feature_spec": dict, "feature_spec_hash": str, "dim": int,
    "model_sha256": str, "model_bytes": int, "input": dict, "output": dict,
    "normalization": dict, "error_scale": list, "threshold": dict, "training": dict,
    "evaluation": dict, "libraries": dict,
}


class PackageError(ValueError):
    """A package that must not be used; ``reason`` is one of `REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ModelPackage:
    """A verified package. ``sha256`` is the hash of the whole package file."""

    manifest: dict[str, Any]
    tflite: bytes
    sha256: str
    signed: bool

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def feature_spec_hash(self) -> str:
        return str(self.manifest["feature_spec_hash"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def serial(self) -> int:
        return int(self.manifest.get("serial") or 0)

    @property
    def targets(self) -> list[str] | None:
        t = self.manifest.get("targets")
        return None if t is None else [str(x) for x in t]

    @property
    def not_after(self) -> datetime | None:
        v = self.manifest.get("not_after")
        return None if v is None else parse_time(v)


def key_id(public_key: bytes) -> str:
    """Short fingerprint of a public key (first 16 hex of sha256 of the raw 32 bytes)."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def _raw_public(public_key: bytes) -> bytes:
    return load_public_key(public_key).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) or the raw 32 bytes."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
            if not isinstance(key, Ed25519PublicKey):
                raise PackageError("signature", "public key is not Ed25519")
            return key
        if len(data) == 32:
            return Ed25519PublicKey.from_public_bytes(data)
    except (ValueError, TypeError) as exc:
        raise PackageError("signature", f"unreadable public key: {exc}") from None
    raise PackageError("signature", f"public key must be PEM or 32 raw bytes, got {len(data)}")


def pack(manifest: dict[str, Any], model: bytes, signature: bytes = b"") -> bytes:
    """Assemble a package from its parts (`federation.registry.package` signs it)."""
    blob = json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    if len(signature) not in (0, SIGNATURE_SIZE):
        raise ValueError(f"signature must be 0 or {SIGNATURE_SIZE} bytes")
    header = HEADER.pack(MAGIC, FORMAT, b"\0\0\0", len(blob), len(model), len(signature))
    return header + blob + model + signature


def split(data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """``(signed_part, manifest_json, model, signature)``; raises `PackageError("format")`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise PackageError("format", f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise PackageError("format", f"{len(data)} bytes, shorter than the header")
    magic, fmt, reserved, n_man, n_model, n_sig = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise PackageError("format", f"bad magic {magic!r}: not a fiberwatch model package")
    if fmt != FORMAT:
        raise PackageError("format", f"unsupported package format {fmt}")
    if reserved != b"\0\0\0":
        raise PackageError("format", "reserved header bytes are not zero")
    if not (0 < n_man <= MAX_MANIFEST and 0 < n_model <= MAX_MODEL):
        raise PackageError("format", f"section sizes out of range ({n_man}, {n_model})")
    if n_sig not in (0, SIGNATURE_SIZE):
        raise PackageError("format", f"signature length {n_sig}, expected 0 or 64")
    end = HEADER_SIZE + n_man + n_model
    if len(data) != end + n_sig:
        raise PackageError("format", f"{len(data)} bytes, header implies {end + n_sig}")
    return data[:end], data[HEADER_SIZE:HEADER_SIZE + n_man], data[HEADER_SIZE + n_man:end], \
        data[end:]


def read_package(
    data: bytes, public_key: bytes | None, *, feature_spec_hash: str | None = None
) -> ModelPackage:
    """Parse and verify a package.

    Parameters
    ----------
    data : bytes
        The package file.
    public_key : bytes or None
        Ed25519 public key (PEM or raw 32 bytes). With a key the package must be signed by
        it; ``None`` skips the signature (integrity is still checked through the hashes).
    feature_spec_hash : str, optional
        Refuse a package built for another feature spec (reason ``feature_spec``).

    Raises
    ------
    PackageError
        With ``reason`` ``format``, ``unsigned``, ``signature``, ``manifest``, ``model`` or
        ``feature_spec``.
    """
    signed_part, man_blob, model, signature = split(data)
    if public_key is not None:
        key = load_public_key(public_key)
        if not signature:
            raise PackageError("unsigned", "package is not signed")
        try:
            key.verify(signature, signed_part)
        except InvalidSignature:
            raise PackageError(
                "signature", f"signature does not verify with key {key_id(public_key)}"
            ) from None
    manifest = parse_manifest(man_blob)
    if hashlib.sha256(model).hexdigest() != manifest["model_sha256"]:
        raise PackageError("model", "model bytes do not match the manifest's sha256")
    if len(model) != manifest["model_bytes"]:
        raise PackageError("model", "model length does not match the manifest")
    pkg = ModelPackage(manifest, model, hashlib.sha256(bytes(data)).hexdigest(), bool(signature))
    if feature_spec_hash is not None:
        check_feature_spec(pkg, feature_spec_hash)
    return pkg


def check_feature_spec(pkg: ModelPackage, feature_spec_hash: str) -> None:
    """Raise `PackageError("feature_spec")` unless `pkg` was built for this spec hash."""
    if pkg.feature_spec_hash != feature_spec_hash:
        raise PackageError(
            "feature_spec",
            f"package {pkg.version} was built for feature spec {pkg.feature_spec_hash[:12]}, "
            f"this stream computes {feature_spec_hash[:12]}",
        )


def parse_manifest(blob: bytes) -> dict[str, Any]:
    """Decode and validate the manifest JSON; raises `PackageError("manifest")`."""
    try:
        m = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PackageError("manifest", f"not JSON: {exc}") from None
    except RecursionError:  # e.g. 100,000 nested arrays
        raise PackageError("manifest", "JSON nested too deeply") from None
    if not isinstance(m, dict):
        raise PackageError("manifest", "manifest is not a JSON object")
    for name, typ in REQUIRED.items():
        if name not in m:
            raise PackageError("manifest", f"missing field {name!r}")
        if not isinstance(m[name], typ) or isinstance(m[name], bool):
            raise PackageError("manifest", f"field {name!r} has the wrong type")
    _check_manifest(m)
    return m


def _floats(path: str, value: Any, n: int) -> None:
    ok = isinstance(value, list) and len(value) == n and all(
        isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) < 1e30
        for v in value
    )
    if not ok:
        raise PackageError("manifest", f"{path} must be {n} finite numbers")


def _check_manifest(m: dict[str, Any]) -> None:
    if m["format"] != FORMAT:
        raise PackageError("manifest", f"unsupported manifest format {m['format']}")
    if not m["version"] or len(m["version"]) > 128:
        raise PackageError("manifest", "version must be 1..128 characters")
    try:
        spec = FeatureSpec.from_dict(m["feature_spec"])
    except (FeatureSpecError, TypeError, ValueError) as exc:
        raise PackageError("manifest", f"feature_spec: {exc}") from None
    if spec.hash != m["feature_spec_hash"]:
        raise PackageError("manifest", "feature_spec_hash does not match feature_spec")
    if spec.dim != m["dim"]:
        raise PackageError("manifest", f"dim {m['dim']} but the feature spec has {spec.dim}")
    d = m["dim"]
    norm = m["normalization"]
    _floats("normalization.mean", norm.get("mean"), d)
    _floats("normalization.std", norm.get("std"), d)
    _floats("error_scale", m["error_scale"], d)
    if min(norm["std"]) <= 0 or min(m["error_scale"]) <= 0:
        raise PackageError("manifest", "std and error_scale must be > 0")
    for side in ("input", "output"):
        q = m[side]
        if q.get("dtype") != "int8":
            raise PackageError("manifest", f"{side}.dtype must be int8")
        if not (isinstance(q.get("scale"), float) and q["scale"] > 0
                and isinstance(q.get("zero_point"), int) and -128 <= q["zero_point"] <= 127):
            raise PackageError("manifest", f"{side} quantization params are invalid")
    quantiles = m["threshold"].get("quantiles")
    if not isinstance(quantiles, dict) or not quantiles:
        raise PackageError("manifest", "threshold.quantiles must be a non-empty object")
    _floats("threshold.quantiles", list(quantiles.values()), len(quantiles))
    _check_trust_fields(m)


def parse_time(value: object) -> datetime:
    """An ISO-8601 time with a zone (``Z`` accepted) as an aware datetime; ValueError."""
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("time must be an ISO-8601 string")
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"time {value!r} has no time zone")
    return t.astimezone(UTC)


def _check_trust_fields(m: dict[str, Any]) -> None:
    serial = m.get("serial", 0)
    if not isinstance(serial, int) or isinstance(serial, bool) or not 0 <= serial < 2**63:
        raise PackageError("manifest", "serial must be an integer in [0, 2^63)")
    targets = m.get("targets")
    if targets is not None and not (
        isinstance(targets, list) and len(targets) <= 10_000
        and all(isinstance(t, str) and 0 < len(t) <= 257 and t.count("/") <= 1
                for t in targets)
    ):
        raise PackageError("manifest", "targets must be null or a list of SITE or SITE/GATEWAY")
    if m.get("not_after") is not None:
        try:
            parse_time(m["not_after"])
        except ValueError as exc:
            raise PackageError("manifest", f"not_after: {exc}") from None
