"""Model hot-swap: verify a new model off the scoring path, swap it in between windows.

`ModelSlot.offer` runs on a worker thread: load and verify the package, check its feature
spec, smoke-score recent rows, time one window's batch against the latency budget (best of
three runs), and stage it. `ModelSlot.apply_pending` runs on the pipeline thread between
windows and swaps the staged detector in by one attribute assignment; the old one stays as
`ModelSlot.previous`. If the active model then misses the budget ``fallback_after`` windows
in a row (`report_latency`), the slot falls back to the previous model: better wrong than
late.

Thresholds follow the model, not the slot: scores are in one model's units, so the pipeline
keeps one `edge_agent.thresholds.GroupThreshold` per model (version, package hash), built by
`GroupThreshold.for_detector` when that model first scores a window. A swapped-in model
therefore warms up fresh thresholds floored at its own package quantile
(``threshold.floor_quantile``), and a fallback finds the previous model's set, floor and all.

With a `edge_agent.trust.ModelTrust` the slot also refuses packages with a lower serial than
one already accepted, not targeted at this gateway, or expired (before anything is loaded),
and records the serial of every package it stages. Refusals are counted by reason
(``state()["refused"]``).

A refusal never disturbs the active model; `state` says what happened and why. Packages
refused once (and models fallen back from) are remembered by hash, so the retained package the
broker redelivers on every reconnect is not re-verified each time.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_agent.detectors.base import Detector

log = logging.getLogger(__name__)

Loader = Callable[[bytes, bytes | None], Detector]
#: what a loader or a detector's score may raise for a bad package (PackageError is a ValueError)
LOAD_ERRORS: tuple[type[Exception], ...] = (ValueError, RuntimeError)
_REMEMBER = 16


class _Refused(Exception):
    """Internal: the offered package is not used; the message says why, ``reason`` is a
    `edge_agent.package.REASONS` value or ``smoke``/``latency``/``no_rows``."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def load_litert(package: bytes, public_key: bytes | None) -> Detector:
    """Default loader: `edge_agent.package.read_package` + `edge_agent.inference.LiteRTDetector`."""
    from edge_agent.inference import LiteRTDetector
    from edge_agent.package import read_package

    return LiteRTDetector(read_package(package, public_key))


class ModelSlot:
    """The detector the pipeline scores with, and the machinery to replace it safely.

    Parameters
    ----------
    initial : Detector
        Model in force at start.
    spec_hash : str
        `FeatureSpec.hash` of the rows this pipeline produces.
    public_key : bytes or None
        Ed25519 key packages must be signed with (None: integrity only).
    latency_budget_ms : float
        Budget for scoring one window's rows.
    smoke_windows : int
        How many windows the ``recent_rows`` given to `offer` span (sets the timed batch size
        to ``len(recent_rows) // smoke_windows`` unless ``window_rows`` is given).
    loader : callable, optional
        ``(package, public_key) -> Detector``; default `load_litert`.
    clock : callable, optional
        Monotonic seconds, for timing.
    window_rows : int, optional
        Rows in one window (channels of the stream).
    fallback_after : int
        Consecutive over-budget windows that trigger the fallback.
    trust : edge_agent.trust.ModelTrust, optional
        Serial / target / expiry policy (None: signature and integrity only).
    """

    def __init__(
        self, initial: Detector, *, spec_hash: str, public_key: bytes | None,
        latency_budget_ms: float, smoke_windows: int, loader: Loader | None = None,
        clock: Callable[[], float] = time.monotonic, window_rows: int | None = None,
        fallback_after: int = 5, trust: Any = None,
    ) -> None:
        self._active: Detector = initial
        self.previous: Detector | None = None
        self.spec_hash = spec_hash
        self.public_key = public_key
        self.latency_budget_ms = latency_budget_ms
        self.smoke_windows = max(1, smoke_windows)
        self.window_rows = window_rows
        self.fallback_after = fallback_after
        self._loader = loader or load_litert
        self.trust = trust
        self.refused_counts: dict[str, int] = {}
        self._clock = clock
        self._lock = threading.Lock()
        self._staged: Detector | None = None
        self._refused: dict[str, str] = {}  # package sha256 -> reason
        self._misses = 0
        self._warned_slow = False
        self.last_result: str | None = None
        self.reason: str | None = None
        self.fallback = False
        self.swapped_at: float | None = None

    @property
    def active(self) -> Detector:
        """The detector to score the next window with."""
        return self._active

    def offer(self, package: bytes, recent_rows: np.ndarray) -> None:
        """Verify ``package`` and stage it for `apply_pending`; on any problem keep the old.

        Parameters
        ----------
        package : bytes
            Model package file (as received on the retained ``model`` topic).
        recent_rows : numpy.ndarray
            (N, D) recent feature rows (about ``smoke_windows`` windows) to smoke-test and time
            the model on; non-finite rows are skipped. With no finite row the package is
            refused ("no recent rows"), not remembered: offer it again once windows exist.
        """
        digest = hashlib.sha256(package).hexdigest()
        with self._lock:
            staged = self._staged
            if digest in self._refused or digest == self._active.package_hash or (
                staged is not None and digest == staged.package_hash
            ):
                return
        try:
            pkg = self._check_trust(package)
            det = self._verify(package, recent_rows)
            if det.version == self._active.version:
                return
            self._record_serial(pkg)
        except _Refused as exc:
            self._refuse(digest, str(exc), exc.reason, remember=exc.reason != "no_rows")
            return
        with self._lock:
            self._staged = det
        log.info("model staged version=%s hash=%s", det.version, det.package_hash[:12])

    def apply_pending(self) -> bool:
        """Swap the staged model in (call between windows); return whether it swapped."""
        with self._lock:
            new = self._staged
            if new is None:
                return False
            self._staged = None
            old, self.previous, self._active = self._active, self._active, new
            self._misses, self._warned_slow = 0, False
            self._record("swapped", f"{old.version} -> {new.version}", fallback=False)
        log.info("model swapped from=%s to=%s", old.version, new.version)
        return True

    def report_latency(self, ms: float) -> None:
        """Record how long the active model took on one window (pipeline thread).

        After ``fallback_after`` consecutive windows over the budget the previous model is
        restored and the slow one is remembered as refused.
        """
        with self._lock:
            self._misses = self._misses + 1 if ms > self.latency_budget_ms else 0
            if self._misses < self.fallback_after:
                return
            self._misses = 0
            slow, prev = self._active, self.previous
            if prev is None:
                if not self._warned_slow:
                    log.warning("model over latency budget, no previous model version=%s "
                                "ms=%.1f", slow.version, ms)
                self._warned_slow = True
                return
            why = (f"{slow.version} missed the {self.latency_budget_ms:g} ms budget "
                   f"{self.fallback_after} windows in a row (last {ms:.1f} ms); "
                   f"back to {prev.version}")
            self._active, self.previous = prev, None
            self._remember(slow.package_hash, why)
            self._record("fallback", why, fallback=True)
        log.warning("model fallback %s", why)

    def state(self) -> dict[str, Any]:
        """JSON-able state for the retained ``model_state`` topic.

        Keys: model_version, model_hash, previous_version, staged_version, last_result
        ("swapped" | "refused" | "fallback" | None), reason, fallback, swapped_at (Unix s),
        refused ({reason: count} of refused offers).
        """
        with self._lock:
            return {
                "model_version": self._active.version,
                "model_hash": self._active.package_hash,
                "previous_version": self.previous.version if self.previous else None,
                "staged_version": self._staged.version if self._staged else None,
                "last_result": self.last_result,
                "reason": self.reason,
                "fallback": self.fallback,
                "swapped_at": self.swapped_at,
                "refused": dict(self.refused_counts),
            }

    # -- internals -------------------------------------------------------------------------
    def _check_trust(self, package: bytes) -> Any:
        """Signature first, then the trust policy; the parsed package, or None without one."""
        if self.trust is None:
            return None
        from edge_agent.package import PackageError, read_package

        try:
            pkg = read_package(package, self.public_key)
            self.trust.check(pkg)
        except PackageError as exc:
            raise _Refused(f"package rejected: {exc}", exc.reason) from None
        return pkg

    def _record_serial(self, pkg: Any) -> None:
        """Persist the serial before the model can run: a serial that cannot be recorded
        (disk full, read-only data_dir) refuses the package rather than forget it."""
        if pkg is None:
            return
        try:
            self.trust.accept(pkg)
        except OSError as exc:
            raise _Refused(f"{pkg.version}: cannot record its serial: {exc}", "serial") from None

    def _verify(self, package: bytes, recent_rows: np.ndarray) -> Detector:
        try:
            det = self._loader(package, self.public_key)
        except LOAD_ERRORS as exc:
            raise _Refused(f"package rejected: {exc}",
                           str(getattr(exc, "reason", "load"))) from None
        if det.feature_spec_hash != self.spec_hash:
            raise _Refused(f"{det.version} was built for another feature spec "
                           f"({det.feature_spec_hash[:12]}, here {self.spec_hash[:12]})",
                           "feature_spec")
        rows = np.asarray(recent_rows, dtype=np.float32)
        if rows.ndim != 2:
            raise _Refused(f"recent rows must be 2-D, got shape {rows.shape}", "smoke")
        rows = rows[np.isfinite(rows).all(axis=1)]
        if len(rows) == 0:
            raise _Refused("no recent rows to smoke-test the model on", "no_rows")
        scores = self._score(det, rows, "smoke run")
        if scores.shape != (len(rows),) or not np.isfinite(scores).all():
            raise _Refused(f"{det.version} smoke run gave shape {scores.shape}, "
                           f"{int(np.size(scores) - np.isfinite(scores).sum())} non-finite",
                           "smoke")
        n = self.window_rows or max(1, len(rows) // self.smoke_windows)
        batch = np.resize(rows, (n, rows.shape[1]))
        times = []
        for _ in range(3):
            t0 = self._clock()
            self._score(det, batch, "timing run")
            times.append((self._clock() - t0) * 1e3)
        ms = min(times)  # its own cost: CPU contention is judged in operation (report_latency)
        if ms > self.latency_budget_ms:
            raise _Refused(f"{det.version} too slow: {ms:.1f} ms for {n} rows, "
                           f"budget {self.latency_budget_ms:g} ms", "latency")
        return det

    @staticmethod
    def _score(det: Detector, rows: np.ndarray, what: str) -> np.ndarray:
        try:
            return np.asarray(det.score(rows))
        except LOAD_ERRORS as exc:
            raise _Refused(f"{det.version} {what} failed: {exc}", "smoke") from None

    def _refuse(self, digest: str, why: str, reason: str, *, remember: bool) -> None:
        with self._lock:
            if remember:
                self._remember(digest, why)
            self.refused_counts[reason] = self.refused_counts.get(reason, 0) + 1
            self._record("refused", why, fallback=self.fallback)
        log.warning("model refused reason=%s %s", reason, why)

    def _remember(self, digest: str, why: str) -> None:
        if len(self._refused) >= _REMEMBER:
            self._refused.pop(next(iter(self._refused)))
        self._refused[digest] = why

    def _record(self, result: str, reason: str, *, fallback: bool) -> None:
        self.last_result, self.reason, self.fallback = result, reason, fallback
        if result != "refused":
            self.swapped_at = time.time()
