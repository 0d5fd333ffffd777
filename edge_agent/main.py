"""The gateway agent: wire the stages, own start and stop.

::

    MqttSource ─▶ FrameQueue ─▶ Processor thread: StreamPipeline per stream ─▶ Uplink
      (paho thread, enqueue only)   validate ─ window ─ features ─ ModelSlot.active ─
                                    threshold ─ events/summaries; NormalBuffer
    Uplink (own paho client) ─ model package ─▶ ModelWorker thread ─▶ ModelSlot.offer

`run` builds everything from one `GatewayConfig`, starts the threads, publishes health and
model state until `stop` is set, then shuts down in order: stop the source, drain and flush
the pipelines (open events are emitted), stop the model worker, give the uplink a moment to
deliver, stop it, close the outbox and the normal-row buffers.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent import topics
from edge_agent.clock import wall_ns
from edge_agent.config import ConfigError, GatewayConfig, StreamConfig
from edge_agent.detectors.stats import RobustZDetector
from edge_agent.hot_swap import ModelSlot
from edge_agent.labels import LabelBook
from edge_agent.memory import tune_malloc
from edge_agent.metrics import Metrics, rss_mb
from edge_agent.mqtt_source import FrameQueue, MqttSource
from edge_agent.normal_buffer import NormalBuffer
from edge_agent.package import PackageError, key_id
from edge_agent.pipeline import StreamPipeline
from edge_agent.store_forward import Outbox
from edge_agent.summary import HEALTH_SCHEMA
from edge_agent.trust import ModelTrust, SerialStore
from edge_agent.uplink import Uplink
from edge_agent.workers import ModelWorker, Processor

log = logging.getLogger(__name__)

#: normal feature rows kept per window for federated training
NORMAL_ROWS_PER_WINDOW = 16


def outbox_path(cfg: GatewayConfig) -> Path:
    return cfg.gateway.data_dir / "outbox.db"


def labels_path(cfg: GatewayConfig) -> Path:
    """The gateway's operator labels and flagged-row journal (`edge_agent.labels.LabelBook`)."""
    return cfg.gateway.data_dir / "labels.db"


def normal_buffer_path(cfg: GatewayConfig, kind: str) -> Path:
    return cfg.gateway.data_dir / f"normal-{kind}.fwnb"


def _outbox(cfg: GatewayConfig) -> Outbox:
    return Outbox(outbox_path(cfg), max_events=cfg.outbox.max_events,
                  max_age_s=cfg.outbox.max_age_s, max_bytes=cfg.outbox.max_bytes)


def _normal_buffer(cfg: GatewayConfig, s: StreamConfig) -> NormalBuffer:
    spec = s.feature_spec()
    return NormalBuffer(normal_buffer_path(cfg, s.kind), dim=spec.dim, spec_hash=spec.hash,
                        max_rows=cfg.federation.normal_buffer_windows * NORMAL_ROWS_PER_WINDOW)


def serials_path(cfg: GatewayConfig, kind: str) -> Path:
    return cfg.gateway.data_dir / f"model-serial-{kind}.json"


def _slot(cfg: GatewayConfig, s: StreamConfig, public_key: bytes | None) -> ModelSlot:
    spec = s.feature_spec()
    initial = RobustZDetector(spec.dim, feature_spec_hash=spec.hash)
    try:
        store = SerialStore(serials_path(cfg, s.kind))
    except PackageError as exc:
        raise ConfigError(f"gateway.data_dir: {exc.detail}") from None
    trust = ModelTrust(cfg.gateway.site, cfg.gateway.id, s.kind, store)
    return ModelSlot(initial, spec_hash=spec.hash, public_key=public_key,
                     latency_budget_ms=cfg.model.latency_budget_ms,
                     smoke_windows=cfg.model.smoke_windows, window_rows=s.channels,
                     trust=trust)


def trust_health(public_key: bytes | None,
                 states: dict[str, dict]) -> dict[str, Any]:
    """The health message's ``model_trust``: how packages are verified, refusals by reason."""
    refused: dict[str, int] = {}
    for st in states.values():
        for reason, n in (st.get("refused") or {}).items():
            refused[reason] = refused.get(reason, 0) + n
    unsigned = public_key is None
    return {
        "signed_only": not unsigned,
        "key_id": None if unsigned else key_id(public_key),  # type: ignore[arg-type]
        "warning": UNSIGNED_WARNING if unsigned else None,
        "refused": refused,
    }


UNSIGNED_WARNING = ("INSECURE: model.allow_unsigned = true: this gateway installs UNSIGNED "
                    "model packages (development only)")


@dataclass(frozen=True)
class Deps:
    """Factories for the parts with I/O; tests and benchmarks replace some of them."""

    outbox: Callable[[GatewayConfig], Any] = _outbox
    uplink: Callable[..., Any] = Uplink
    slot: Callable[[GatewayConfig, StreamConfig, bytes | None], Any] = _slot
    normal_buffer: Callable[[GatewayConfig, StreamConfig], Any] = _normal_buffer


def _read(path: Path | None, field: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read {path}: {exc.strerror}") from None


def _trusted_key(cfg: GatewayConfig) -> bytes | None:
    """The model-signing public key, checked; None only with ``model.allow_unsigned``."""
    public_key = _read(cfg.model.public_key, "model.public_key")
    if public_key is not None:
        try:
            key_id(public_key)
        except PackageError as exc:
            raise ConfigError(f"model.public_key: {cfg.model.public_key}: {exc.detail}") from None
    elif not cfg.model.allow_unsigned:  # the schema refuses this; never trust by accident
        raise ConfigError("model.public_key: required (model.allow_unsigned for development)")
    return public_key


def run(cfg: GatewayConfig, stop: threading.Event, *, deps: Deps | None = None,
        metrics: Metrics | None = None, ready: threading.Event | None = None) -> dict:
    """Run one gateway agent until `stop` is set; return the final metrics snapshot.

    Parameters
    ----------
    stop : threading.Event
        Set it (e.g. from a signal handler) to shut down cleanly.
    deps, metrics : optional
        Replacement factories (tests); a `Metrics` to watch the counters while it runs.
    ready : threading.Event, optional
        Set once the raw-frame subscriptions are granted.

    Raises
    ------
    ConfigError, edge_agent.mqtt_client.MqttConfigError
        Before anything starts: unreadable model/key file, unset password variable.
    """
    deps, metrics = deps or Deps(), metrics or Metrics()
    public_key = _trusted_key(cfg)
    package = _read(cfg.model.package, "model.package")
    frames = FrameQueue(cfg.ingest.queue_frames, cfg.ingest.backpressure, metrics,
                        max_bytes=cfg.ingest.queue_bytes)
    source = MqttSource(cfg, frames)
    cfg.gateway.data_dir.mkdir(parents=True, exist_ok=True)
    outbox = deps.outbox(cfg)
    site, gw = cfg.gateway.site, cfg.gateway.id
    worker: ModelWorker  # the uplink calls back only after start(), when `worker` exists
    book = LabelBook(labels_path(cfg))
    uplink = deps.uplink(cfg, outbox, on_model_package=lambda pkg: worker.submit(pkg),
                         on_label=lambda p: book.handle(p, site=site, gateway=gw))
    slots, buffers, pipelines = _streams(cfg, deps, public_key, uplink, metrics, book)
    worker = ModelWorker({k: (slots[k], pipelines[k].recent_rows) for k in slots})
    processor = Processor(frames, {topics.raw(site, gw, k): p for k, p in pipelines.items()},
                          metrics)
    health = _Health(cfg, metrics, frames, outbox, slots, public_key, pipelines)
    _tune_process()
    try:
        worker.start()
        uplink.start()
        processor.start()
        source.start()
        log.info("event=agent_started site=%s gateway=%s streams=%s", site, gw,
                 ",".join(s.kind for s in cfg.streams))
        if public_key is None:
            log.warning("event=insecure_model_trust %s", UNSIGNED_WARNING)
        if package is not None:
            worker.submit(package)
        _serve(cfg, stop, source, uplink, health, slots, ready)
    finally:
        source.stop()
        processor.stop()
        worker.stop()
        _stop_uplink(uplink, health)
        for b in [*buffers.values(), outbox, book]:
            if b is not None:
                b.close()
        log.info("event=agent_stopped %s", " ".join(
            f"{k}={v}" for k, v in metrics.snapshot().items() if isinstance(v, int)))
    return metrics.snapshot()


def _tune_process() -> None:
    """Before the frames flow: their buffers reuse heap memory (`tune_malloc`), and the
    start-up objects leave the cyclic collector's reach (`freeze_startup_heap`)."""
    tune_malloc()
    freeze_startup_heap()


def freeze_startup_heap() -> int:
    """Collect once, then move every object alive after start-up (modules, numpy, scipy,
    paho, pydantic: ~60,000 of them) out of the cyclic collector's reach (`gc.freeze`).
    A full collection over them costs 15-20 ms of CPU on the thread that happens to
    allocate: a window's scores late by that much. Returns the objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def _stop_uplink(uplink: Any, health: _Health) -> None:
    """A last "stopping" health, what is queued if connected (2 s at most), then stop."""
    uplink.send_health(health.build("stopping"))
    if uplink.wait_connected(0):
        uplink.flush(timeout=2.0)
    uplink.stop()


def _streams(cfg: GatewayConfig, deps: Deps, public_key: bytes | None, uplink: Any,
             metrics: Metrics, label_book: Any = None
             ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Per stream kind: its model slot, its normal-window buffer and its pipeline."""
    slots: dict[str, Any] = {}
    buffers: dict[str, Any] = {}
    pipelines: dict[str, Any] = {}
    for s in cfg.streams:
        slots[s.kind] = deps.slot(cfg, s, public_key)
        buffers[s.kind] = deps.normal_buffer(cfg, s)
        pipelines[s.kind] = StreamPipeline(
            site=cfg.gateway.site, gateway=cfg.gateway.id, stream=s, thresholds=cfg.threshold,
            events=cfg.events, slot=slots[s.kind], sink=uplink, metrics=metrics,
            summary_interval_s=cfg.uplink.summary_interval_s, normal_buffer=buffers[s.kind],
            smoke_windows=cfg.model.smoke_windows, normal_rows=NORMAL_ROWS_PER_WINDOW,
            gateway_clock_ns=wall_ns, max_clock_skew_s=cfg.ingest.max_clock_skew_s,
            feature_threads=cfg.processing.feature_threads, label_book=label_book)
    return slots, buffers, pipelines


def _serve(cfg: GatewayConfig, stop: threading.Event, source: MqttSource, uplink: Any,
           health: _Health, slots: dict[str, Any], ready: threading.Event | None) -> None:
    """The main thread's loop: readiness, health every interval, model state on change."""
    next_health = time.monotonic()
    last_state: dict | None = None
    while not stop.is_set():
        if ready is not None and not ready.is_set() and source.subscribed.is_set():
            ready.set()
        now = time.monotonic()
        if now >= next_health:
            next_health = now + cfg.uplink.health_interval_s
            uplink.send_health(health.build())
        state = model_state(slots)
        if {**state, "t_ns": 0} != last_state:
            last_state = {**state, "t_ns": 0}
            uplink.send_model_state(state)
        wait = 0.05 if ready is not None and not ready.is_set() else \
            min(1.0, max(0.0, next_health - time.monotonic()))
        stop.wait(wait)


def model_state(slots: dict[str, Any]) -> dict:
    """The retained model state: the first stream's slot at top level, all under streams."""
    per = {k: slot.state() for k, slot in slots.items()}
    first = next(iter(per.values()))
    return {**first, "model_hash": first.get("model_hash") or "none",
            "status": "fallback" if first.get("fallback") else "ok",
            "t_ns": wall_ns(), "streams": per}


class _Health:
    """Builds the health heartbeat (`edge_agent.summary.HEALTH_KEYS` plus extras)."""

    def __init__(self, cfg: GatewayConfig, metrics: Metrics, frames: FrameQueue, outbox: Any,
                 slots: dict[str, Any], public_key: bytes | None = None,
                 pipelines: dict[str, Any] | None = None) -> None:
        self.cfg, self.metrics, self.frames, self.outbox, self.slots = \
            cfg, metrics, frames, outbox, slots
        self.public_key = public_key
        self.pipelines = pipelines or {}
        self._last_drops = 0

    def build(self, status: str | None = None) -> dict:
        snap, iv = self.metrics.snapshot(), self.metrics.interval()
        drops = sum(snap["drops"].get(k, 0) for k in ("queue_full", "internal_error"))
        states = {k: s.state() for k, s in self.slots.items()}
        first = next(iter(states.values()))
        if status is None:
            degraded = (drops > self._last_drops or iv["frames_per_s"] == 0
                        or any(st.get("fallback") for st in states.values()))
            status = "degraded" if degraded else "ok"
        self._last_drops = drops
        return {
            "schema": HEALTH_SCHEMA, "site": self.cfg.gateway.site, "gateway": self.cfg.gateway.id,
            "t_ns": wall_ns(), "status": status, "uptime_s": round(snap["uptime_s"], 3),
            "frames_per_s": round(iv["frames_per_s"], 3),
            "samples_per_s": round(iv["samples_per_s"], 1),
            "queue_depth": self.frames.qsize(), "drops": snap["drops"], "gaps": snap["gaps"],
            "latency_ms": iv["latency_ms"], "latency_ms_by_stream": iv["latency_ms_by_stream"],
            "outbox_depth": self.outbox.depth(),
            "outbox_evicted": self.outbox.evicted, "model_version": first["model_version"],
            "model_hash": first["model_hash"] or "none", "rss_mb": round(rss_mb(), 1),
            "windows": snap["windows"], "events": snap["events"], "frames": snap["frames"],
            "resyncs": snap.get("resyncs", 0),
            "models": {k: st["model_version"] for k, st in states.items()},
            "outbox_errors": dict(getattr(self.outbox, "errors", {})),
            "outbox_spilled": self.outbox.spilled() if hasattr(self.outbox, "spilled") else 0,
            "model_trust": trust_health(self.public_key, states),
            "model_health": {k: p.model_health.take() for k, p in self.pipelines.items()},
            "fa_mutes_active": sum(p.fa_mutes_active() for p in self.pipelines.values()),
            "fa_muted_windows": snap["fa_muted_windows"],
            "fa_muted_groups": snap["fa_muted_groups"],
        }


def install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGINT/SIGTERM set `stop` (call from the main thread); returns a restore function."""
    def handler(signum: int, _frame: object) -> None:
        log.info("event=signal signal=%s", signal.Signals(signum).name)
        stop.set()

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, h in old.items():
            signal.signal(sig, h)

    return restore
