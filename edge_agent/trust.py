"""Which signed model packages a gateway installs: serial, targets, expiry.

A valid signature says who built a package, not that this gateway should run it now. So after
`edge_agent.package.read_package` has verified the signature, `ModelTrust.check` refuses, with
a typed `PackageError`:

* ``serial``: a package whose manifest ``serial`` is lower than the highest one this gateway
  has accepted for the stream (a replayed older package, a retired canary). The same serial
  is accepted again only for the very same package file (the retained copy the broker
  redelivers after a restart). A rollback is a *new* package re-publishing the old weights
  with a higher serial (`federation.registry.store.Registry.republish`).
* ``target``: a package whose ``targets`` list names neither this site nor this gateway.
* ``expired``: a package past its ``not_after`` time.

`ModelTrust.accept` records the serial of a package that passed (one JSON file in the
gateway's ``data_dir``, replaced atomically, so it survives restarts and power loss).
A refusal never touches the active model: the caller (`edge_agent.hot_swap.ModelSlot`) keeps
scoring with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.package import ModelPackage, PackageError

log = logging.getLogger(__name__)

SERIALS_FILE = "model_serials.json"


def _now() -> datetime:
    return datetime.now(UTC)


class SerialStore:
    """Highest accepted serial (and that package's hash) per stream, persisted in ``path``.

    An unreadable or corrupt file is not trusted silently: it raises `PackageError` on load
    with reason ``serial`` naming the file (a gateway must not forget what it accepted).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, object]] = self._load()

    def _load(self) -> dict[str, dict[str, object]]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise PackageError("serial", f"{self.path}: unreadable serial record: {exc}") from None
        ok = isinstance(raw, dict) and all(
            isinstance(v, dict) and isinstance(v.get("serial"), int)
            and isinstance(v.get("sha256"), str) for v in raw.values())
        if not ok:
            raise PackageError("serial", f"{self.path}: malformed serial record")
        return raw

    def get(self, stream: str) -> tuple[int, str] | None:
        with self._lock:
            rec = self._data.get(stream)
            return None if rec is None else (int(rec["serial"]), str(rec["sha256"]))  # type: ignore[call-overload]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {k: int(v["serial"]) for k, v in self._data.items()}  # type: ignore[call-overload]

    def put(self, stream: str, serial: int, sha256: str) -> None:
        with self._lock:
            self._data[stream] = {"serial": serial, "sha256": sha256}
            self._write(json.dumps(self._data, sort_keys=True).encode())

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # the rename itself durable too
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


class ModelTrust:
    """The installation policy of one gateway (``site``/``gateway``) for one stream.

    Parameters
    ----------
    site, gateway : str
        This gateway's identity (matched against a package's ``targets``).
    stream : str
        Stream kind whose serials this policy keeps (das, dts).
    store : SerialStore
        Shared by the gateway's streams.
    clock : callable, optional
        Current aware UTC time (tests).
    """

    def __init__(self, site: str, gateway: str, stream: str, store: SerialStore, *,
                 clock: Callable[[], datetime] = _now) -> None:
        self.site, self.gateway, self.stream = site, gateway, stream
        self.store, self.clock = store, clock

    def check(self, pkg: ModelPackage) -> None:
        """Raise `PackageError` (``target``, ``expired`` or ``serial``) unless installable."""
        targets = pkg.targets
        if targets is not None and self.site not in targets \
                and f"{self.site}/{self.gateway}" not in targets:
            shown = ", ".join(targets[:5]) + (" ..." if len(targets) > 5 else "")
            raise PackageError("target", f"{pkg.version} is targeted at [{shown}], not "
                                         f"{self.site}/{self.gateway}")
        not_after = pkg.not_after
        if not_after is not None and self.clock() > not_after:
            raise PackageError("expired", f"{pkg.version} expired at {not_after.isoformat()}")
        last = self.store.get(self.stream)
        if last is None:
            return
        serial, sha = last
        if pkg.serial < serial or (pkg.serial == serial and pkg.sha256 != sha):
            raise PackageError("serial", f"{pkg.version} has serial {pkg.serial}, this gateway "
                                         f"has accepted serial {serial} for {self.stream}")

    def accept(self, pkg: ModelPackage) -> None:
        """Record ``pkg`` (already `check`-ed) as the highest serial for the stream."""
        last = self.store.get(self.stream)
        if last is None or pkg.serial > last[0]:
            self.store.put(self.stream, pkg.serial, pkg.sha256)
            log.info("model serial accepted stream=%s serial=%d version=%s", self.stream,
                     pkg.serial, pkg.version)
