"""The cloud's model registry: packages and their lifecycle states, on disk.

Layout under ``root``::

    packages/<version>.fwpkg   the package files, as received
    index.json                 {"models": {version: record}, "history": [state changes]}
    .lock                      flock(2) lock file

Every change takes an exclusive lock, re-reads the index, and replaces it atomically
(write to a temp file, fsync, rename), so two processes can share one registry. Reads take a
shared lock.

States: ``candidate`` -> ``canary`` -> ``production`` -> ``retired``. Promoting a version to
production retires the previous production; `Registry.rollback` brings the most recent
previous production back and retires the current one.

Trust: with a ``public_key`` every package is verified when added and again, from the stored
file, before it becomes ``canary`` or ``production`` (`RegistryTrustError`; a file changed on
disk is refused too). A registry without a key refuses those promotions unless it was opened
with ``allow_unsigned=True`` (development). Gateways refuse a package whose ``serial`` is lower
than one they accepted, so re-publishing an old production package does not roll gateways
back: `Registry.republish` re-signs its weights as a *new* version with a higher serial.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.package import PackageError, read_package

log = logging.getLogger(__name__)

STATES = ("candidate", "canary", "production", "retired")
#: legal `promote` transitions (rollback may also bring a retired version back)
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "candidate": ("canary", "production", "retired"),
    "canary": ("production", "retired", "candidate"),
    "production": ("retired",),
    "retired": ("candidate",),
}
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


@dataclass
class ModelRecord:
    version: str
    parent: str | None
    created: str
    state: str
    metrics: dict[str, Any] = field(default_factory=dict)
    package_hash: str = ""
    path: str = ""
    name: str = ""
    feature_spec_hash: str = ""
    stream: str = ""
    added: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class RegistryTrustError(ValueError):
    """A package the registry will not promote or publish (signature, stored file changed)."""


class Registry:
    """Model registry rooted at ``root`` (created if missing).

    Parameters
    ----------
    root : Path
        Directory that holds packages, the index and the lock.
    public_key : bytes, optional
        Packages must be signed by this key: checked by `add`, and by `promote` to canary or
        production (`verified_package`).
    allow_unsigned : bool
        Without a key, allow those promotions anyway (development only).
    """

    def __init__(self, root: Path, *, public_key: bytes | None = None,
                 allow_unsigned: bool = False) -> None:
        self.root = Path(root)
        self.public_key = public_key
        self.allow_unsigned = allow_unsigned
        (self.root / "packages").mkdir(parents=True, exist_ok=True)
        self._index = self.root / "index.json"
        self._lockfile = self.root / ".lock"

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[dict[str, Any]]:
        with open(self._lockfile, "a+") as lf:
            fcntl.flock(lf, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield self._load()
            finally:
                fcntl.flock(lf, fcntl.LOCK_UN)

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self._index.read_text())
        except FileNotFoundError:
            return {"models": {}, "history": []}
        except ValueError as exc:
            raise RuntimeError(f"{self._index}: corrupt registry index: {exc}") from None
        return data

    def _atomic_write(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _save(self, data: dict[str, Any]) -> None:
        self._atomic_write(self._index, json.dumps(data, indent=1, sort_keys=True).encode())

    def add(
        self, package: bytes, *, state: str = "candidate", metrics: dict | None = None
    ) -> ModelRecord:
        """Verify and store a package. Adding the same bytes again returns the existing
        record; another package with an existing version is a ValueError."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; choose from {', '.join(STATES)}")
        pkg = read_package(package, self.public_key)
        if not _SAFE.fullmatch(pkg.version):  # match() would let "v1\n" through
            raise ValueError(f"version {pkg.version!r} is not a safe file name")
        with self._locked(True) as data:
            old = data["models"].get(pkg.version)
            if old is not None:
                if old["package_hash"] == pkg.sha256:
                    return ModelRecord(**old)
                raise ValueError(f"version {pkg.version} already exists with another package")
            path = self.root / "packages" / f"{pkg.version}.fwpkg"
            m = pkg.manifest
            rec = ModelRecord(
                version=pkg.version, parent=m.get("parent"), created=m["created"], state=state,
                metrics=dict(metrics if metrics is not None else m.get("evaluation", {})),
                package_hash=pkg.sha256, path=str(path), name=m["name"],
                feature_spec_hash=pkg.feature_spec_hash, stream=m["stream"], added=_now(),
            )
            if state in ("canary", "production"):
                self._verify_bytes(rec, bytes(package))
            self._atomic_write(path, bytes(package))
            if state == "production":
                self._retire_production(data, pkg.version, "added as production", "")
            data["models"][pkg.version] = rec.to_dict()
            data["history"].append(_change(pkg.version, None, state, "added", ""))
            self._save(data)
        log.info("registry add version=%s state=%s", pkg.version, state)
        return rec

    def list(self) -> list[ModelRecord]:
        with self._locked(False) as data:
            recs = [ModelRecord(**r) for r in data["models"].values()]
        return sorted(recs, key=lambda r: (r.added, r.version))

    def get(self, version: str) -> ModelRecord:
        with self._locked(False) as data:
            if version not in data["models"]:
                raise KeyError(version)
            return ModelRecord(**data["models"][version])

    def package_bytes(self, version: str) -> bytes:
        return Path(self.get(version).path).read_bytes()

    def verified_package(self, version: str) -> bytes:
        """The stored package of ``version``, verified before it is promoted or published:
        the file's hash is the one recorded when it was added and, with a key, the signature
        verifies. `RegistryTrustError` otherwise (also without a key, unless allow_unsigned).
        """
        rec = self.get(version)
        return self._verify_bytes(rec, Path(rec.path).read_bytes())

    def _verify_bytes(self, rec: ModelRecord, data: bytes) -> bytes:
        if self.public_key is None and not self.allow_unsigned:
            raise RegistryTrustError(f"cannot verify {rec.version}: the registry has no public "
                                     "key (open it with public_key=...)")
        try:
            pkg = read_package(data, self.public_key)
        except PackageError as exc:
            raise RegistryTrustError(f"{rec.version} refused: {exc}") from None
        if pkg.sha256 != rec.package_hash:
            raise RegistryTrustError(f"{rec.version}: the stored package changed since it "
                                     "was added")
        return data

    def republish(self, version: str, private_key: Any, *, serial: int | None = None,
                  reason: str = "", actor: str = "") -> ModelRecord:
        """Re-sign ``version``'s weights as a new candidate with a higher serial (rollback).

        The new version is ``{version}.r{serial}``; its serial is above every serial in the
        registry (and at least the signing time in ms). Returns the new candidate's record.
        """
        from federation.registry.package import default_serial, sign_package

        data = self.verified_package(version)
        serial = serial if serial is not None else max(default_serial(), self.max_serial() + 1)
        new_version = f"{version}.r{serial}"[:128]
        pkg = read_package(data, None)
        out = sign_package(data, private_key, {"serial": serial, "version": new_version,
                                               "parent": pkg.version})
        log.info("registry republish version=%s as=%s serial=%d actor=%s reason=%s", version,
                 new_version, serial, actor, reason)
        return self.add(out, metrics={**self.get(version).metrics, "republished_from": version,
                                      "source": "republish"})

    def max_serial(self) -> int:
        """The highest manifest serial of the stored packages (0 if none)."""
        out = 0
        for rec in self.list():
            try:
                out = max(out, read_package(Path(rec.path).read_bytes(), None).serial)
            except (OSError, PackageError):
                continue
        return out

    def production(self) -> ModelRecord | None:
        with self._locked(False) as data:
            prod = [r for r in data["models"].values() if r["state"] == "production"]
        return ModelRecord(**prod[0]) if prod else None

    def history(self) -> builtins.list[dict[str, Any]]:
        with self._locked(False) as data:
            return list(data["history"])

    def set_metrics(self, version: str, metrics: dict[str, Any]) -> ModelRecord:
        """Merge ``metrics`` into a version's metrics (e.g. canary results)."""
        with self._locked(True) as data:
            if version not in data["models"]:
                raise KeyError(version)
            data["models"][version]["metrics"].update(metrics)
            self._save(data)
            return ModelRecord(**data["models"][version])

    def promote(self, version: str, *, to: str, reason: str = "", actor: str = "") -> ModelRecord:
        """Move ``version`` to state ``to``; ValueError on an illegal transition."""
        if to not in STATES:
            raise ValueError(f"unknown state {to!r}; choose from {', '.join(STATES)}")
        with self._locked(True) as data:
            if version not in data["models"]:
                raise KeyError(version)
            rec = data["models"][version]
            if to not in TRANSITIONS[rec["state"]]:
                raise ValueError(f"cannot promote {version} from {rec['state']} to {to}")
            if to in ("canary", "production"):
                self._verify_bytes(ModelRecord(**rec), Path(rec["path"]).read_bytes())
            if to == "production":
                self._retire_production(data, version, reason or f"replaced by {version}", actor)
            data["history"].append(_change(version, rec["state"], to, reason, actor))
            rec["state"] = to
            self._save(data)
            log.info("registry promote version=%s to=%s actor=%s", version, to, actor)
            return ModelRecord(**rec)

    def rollback(self, *, reason: str = "", actor: str = "") -> ModelRecord:
        """Previous production back to production, current production -> retired.

        The previous production is the most recent version that left production and is
        retired now. ValueError if there is none.
        """
        with self._locked(True) as data:
            models = data["models"]
            current = next((v for v, r in models.items() if r["state"] == "production"), None)
            previous = next(
                (h["version"] for h in reversed(data["history"])
                 if h["from"] == "production" and h["version"] != current
                 and models.get(h["version"], {}).get("state") == "retired"), None)
            if previous is None:
                raise ValueError("no previous production version to roll back to")
            self._verify_bytes(ModelRecord(**models[previous]),
                               Path(models[previous]["path"]).read_bytes())
            if current is not None:
                data["history"].append(_change(current, "production", "retired",
                                               reason or f"rolled back to {previous}", actor))
                models[current]["state"] = "retired"
            data["history"].append(_change(previous, "retired", "production",
                                           reason or "rollback", actor))
            models[previous]["state"] = "production"
            self._save(data)
            log.info("registry rollback to=%s from=%s actor=%s", previous, current, actor)
            return ModelRecord(**models[previous])

    @staticmethod
    def _retire_production(data: dict[str, Any], new: str, reason: str, actor: str) -> None:
        for v, r in data["models"].items():
            if r["state"] == "production" and v != new:
                data["history"].append(_change(v, "production", "retired", reason, actor))
                r["state"] = "retired"


def _change(version: str, frm: str | None, to: str, reason: str, actor: str) -> dict[str, Any]:
    return {"time": _now(), "version": version, "from": frm, "to": to, "reason": reason,
            "actor": actor}
