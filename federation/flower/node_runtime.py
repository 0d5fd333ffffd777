"""What runs on a gateway for Flower: a SuperNode with a short poll, and a warm ClientApp.

Why this module exists (measured on the project's 2-core machines, flwr 1.41): with the
defaults a federated round took 19-54 s, nearly all of it waiting, not training:

* ``--isolation subprocess`` makes the SuperNode's SuperExec start a fresh ``flwr-clientapp``
  process for every message, which imports flwr and torch again (3-5 s of CPU each, and the
  gateways share 2 cores in the bench);
* the SuperNode polls the SuperLink with a fixed ``time.sleep(3)`` when idle and waits for
  the ClientApp's reply with ``time.sleep(0.5)`` (``flwr/supernode/start_client_internal.py``;
  flwr 1.41 has no option for either);
* the SuperExec polls for tasks every 1 s (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``).

So a gateway runs two processes here, in one process group:

`supernode_main`
    ``flower-supernode --isolation process`` with one documented monkeypatch: the ``time``
    name inside ``flwr.supernode.start_client_internal`` (that module only) is replaced by
    `_CappedSleep`: the idle poll follows a `Backoff` (``poll_s`` right after a message,
    at most 0.3 s during a run, flwr's 3 s when idle for a while); the reply wait sleeps
    ``poll_s``. Polling costs CPU on both ends (HTTP + protobuf), hence the backoff.
    Nothing else is touched.
`serve`
    A long-lived ClientApp worker (the "separate process" of ``--isolation process``): it
    imports torch and our ClientApp once, then claims tasks from the SuperNode's Runtime API
    (``AcquireTask``, with the same backoff) and runs each in-process with flwr's own
    ``pull_task_input``,
    ``push_message`` and ``push_task_output``. It only runs the ClientApp it was started for
    (``--clientapp``): a FAB naming any other component is refused, so a SuperLink cannot
    make a gateway import arbitrary code.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from edge_agent.logs import stderr_handler

log = logging.getLogger("federation.flower.node_runtime")

DEFAULT_CLIENTAPP = "federation.flower.client_app:app"


class Backoff:
    """Poll delays: ``fast_s`` right after a message, growing x1.5 up to ``active_s`` while a
    run is likely on (a message in the last ``window_s``), then up to ``idle_s``. Every poll
    is an HTTP request costing the server ~8 ms of CPU (flwr 1.41), so idle nodes poll slowly
    (flwr's own 3 s) and nodes in a run quickly."""

    def __init__(self, fast_s: float, idle_s: float, *, active_s: float = 0.3,
                 window_s: float = 15.0, clock: Any = time.monotonic) -> None:
        self.fast_s, self.idle_s = fast_s, max(idle_s, fast_s)
        self.active_s, self.window_s, self.clock = max(active_s, fast_s), window_s, clock
        self.current, self.last_busy = fast_s, -float("inf")

    def idle(self) -> float:
        cap = self.active_s if self.clock() - self.last_busy < self.window_s else self.idle_s
        delay = min(self.current, cap)
        self.current = min(delay * 1.5, cap)
        return delay

    def busy(self) -> None:
        self.current, self.last_busy = self.fast_s, self.clock()


class _CappedSleep:
    """Stands in for the ``time`` module inside flwr's SuperNode loop.

    flwr sleeps 3 s when a pull found nothing and 0.5 s while waiting for the ClientApp's
    reply; here the idle sleep follows a `Backoff` and the reply wait is ``fast_s``.
    """

    def __init__(self, real: ModuleType, backoff: Backoff) -> None:
        self._real, self._backoff = real, backoff

    def sleep(self, seconds: float) -> None:
        if seconds >= 1.0:  # the idle poll
            self._real.sleep(self._backoff.idle())
        else:  # a message is in flight
            self._backoff.busy()
            self._real.sleep(min(seconds, self._backoff.fast_s))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def patch_supernode_poll(fast_s: float, idle_s: float) -> None:
    """Replace the fixed 3 s idle poll and 0.5 s reply wait (see `_CappedSleep`)."""
    from flwr.supernode import start_client_internal as sci

    if not isinstance(sci.time, _CappedSleep):
        sci.time = _CappedSleep(time, Backoff(fast_s, idle_s))  # type: ignore[assignment]


def supernode_main(argv: Sequence[str]) -> None:
    """``flower-supernode`` with the poll patch; ``argv`` = ``[--poll S] [--idle S] -- ARGS``."""
    p = argparse.ArgumentParser(prog="federation.flower.node_runtime supernode")
    p.add_argument("--poll", type=float, default=0.1)
    p.add_argument("--idle", type=float, default=3.0)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    patch_supernode_poll(args.poll, args.idle)
    from flwr.supercore.logger import update_console_handler
    from flwr.supernode.cli import flower_supernode

    update_console_handler(timestamps=True, colored=False)  # log files: times, no ANSI codes

    sys.argv = ["flower-supernode", *rest]
    flower_supernode()


class ClientAppWorker:
    """Claims ClientApp tasks from one SuperNode and runs them in this process."""

    def __init__(self, runtime_api_address: str, *, clientapp: str = DEFAULT_CLIENTAPP,
                 poll_s: float = 0.05, idle_s: float = 3.0) -> None:
        self.address, self.clientapp_ref = runtime_api_address, clientapp
        self.backoff = Backoff(poll_s, idle_s)
        self.stop_event = threading.Event()
        self.tasks_done = 0
        self._app: Any = None

    def load(self) -> None:
        """Import the ClientApp (and with it torch) before the first task arrives, and run
        its module's ``warmup()`` if it has one (torch's first optimiser step alone imports
        for seconds)."""
        import importlib

        from flwr.clientapp.client_app import LoadClientAppError
        from flwr.supercore.object_ref import load_app

        self._app = load_app(self.clientapp_ref, LoadClientAppError)
        warmup = getattr(importlib.import_module(self.clientapp_ref.split(":")[0]), "warmup",
                         None)
        if callable(warmup):
            warmup()

    def _client(self, token: str | None) -> Any:
        from flwr.supercore.interceptors import (
            RuntimeTokenHttpInterceptor,
            RuntimeVersionHttpInterceptor,
        )
        from flwr.supercore.retry import make_simple_http_retry_invoker
        from flwr.supercore.runtime import RuntimeHttpClient

        interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name="flwr-clientapp")]
        if token is not None:
            interceptors.append(RuntimeTokenHttpInterceptor(token))
        return RuntimeHttpClient.from_server_address(
            server_address=self.address, insecure=True, root_certificates=None,
            interceptors=interceptors, retry_invoker=make_simple_http_retry_invoker())

    def serve(self) -> None:
        """Poll for tasks until `stop_event` is set."""
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore.constant import TaskType

        if self._app is None:
            self.load()
        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        with self._client(None) as control:
            while not self.stop_event.is_set():
                res = control.AcquireTask(request)
                if res.HasField("task") and res.token:
                    self.run_task(res.token)
                    self.backoff.busy()
                    continue
                self.stop_event.wait(self.backoff.idle())

    def run_task(self, token: str) -> None:
        """One message: pull it, run the ClientApp, push the reply and the context.

        Like ``flwr-clientapp`` (a task heartbeat keeps the token alive during long training,
        `_Heartbeat`), but the reply is pushed on a fresh connection: a pooled keep-alive
        connection may have been closed by the SuperNode's HTTP server during training.
        """
        from flwr.app import Error, Message
        from flwr.common.config import get_fab_config
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.supernode.runtime.run_clientapp import (
            pull_task_input,
            push_message,
            push_task_output,
        )

        t0 = time.perf_counter()
        context, status, details = None, SubStatus.FAILED, "ClientApp failed"
        message = reply = None
        with self._client(token) as client:
            beat = _Heartbeat(client)
            try:
                message, context, _run, fab = pull_task_input(client)
                wanted = get_fab_config(fab.content)["tool"]["flwr"]["app"]["components"]
                if wanted.get("clientapp") != self.clientapp_ref:
                    raise PermissionError(f"FAB asks for ClientApp {wanted.get('clientapp')!r};"
                                          f" this worker runs only {self.clientapp_ref!r}")
                reply = self._app(message=message, context=context)
                status, details = SubStatus.COMPLETED, ""
            except Exception as exc:  # noqa: BLE001 - the process edge: reply with the error
                log.error("clientapp failed error=%r", exc)
                details = f"{type(exc).__name__}: {exc}"
                if message is not None:
                    reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, details),
                                    reply_to=message)
            finally:
                beat.stop()
        with self._client(token) as client:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
                push_task_output(client, context, status, details)
            except Exception as exc:  # noqa: BLE001 - the server counts a missing reply
                log.error("push failed error=%r", exc)
                status = SubStatus.FAILED
        self.tasks_done += 1
        log.info("task done status=%s seconds=%.3f", status, time.perf_counter() - t0)


class _Heartbeat:
    """Task heartbeats every ``every_s`` (the token lives 60 s after activation), the first
    only after ``every_s``: most tasks take well under a second, and every request costs the
    SuperNode milliseconds of CPU. Unlike flwr's, a failed beat does not SIGINT this process."""

    def __init__(self, client: Any, every_s: float = 20.0) -> None:
        self._client, self._every = client, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="task-heartbeat")
        self._thread.start()

    def _run(self) -> None:
        import httpx
        from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest

        while not self._stop.wait(self._every):
            try:
                self._client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
            except httpx.HTTPError as exc:
                log.warning("task heartbeat failed error=%s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _watch_parent(pid: int, stop: threading.Event) -> None:
    """Stop when the SuperNode we serve is gone (it may be SIGKILLed)."""
    while not stop.wait(0.5):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            stop.set()


def worker_main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(prog="federation.flower.node_runtime worker")
    p.add_argument("--runtime-api-address", required=True)
    p.add_argument("--clientapp", default=DEFAULT_CLIENTAPP)
    p.add_argument("--poll", type=float, default=0.05)
    p.add_argument("--idle", type=float, default=3.0)
    p.add_argument("--parent-pid", type=int)
    p.add_argument("--ready-file", type=Path, help="created once warm (for launchers)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for training (the gateway's pipeline keeps the rest)")
    args = p.parse_args(argv)
    worker = ClientAppWorker(args.runtime_api_address, clientapp=args.clientapp,
                             poll_s=args.poll, idle_s=args.idle)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop_event.set())
    watcher = threading.Thread(target=_watch_parent, args=(args.parent_pid, worker.stop_event),
                               name="parent-watch") if args.parent_pid else None
    if watcher is not None:
        watcher.start()
    try:
        worker.load()
        if args.threads > 0:
            import torch

            torch.set_num_threads(args.threads)
        if args.ready_file:
            args.ready_file.touch()
        worker.serve()
    finally:
        worker.stop_event.set()  # also ends the parent watch, which we wait for
        if watcher is not None:
            watcher.join()


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["supernode"]:
        supernode_main(argv[1:])  # flwr configures its own logging
    elif argv[:1] == ["worker"]:
        handler = stderr_handler(os.environ.get("FIBERWATCH_LOG_LEVEL", "WARNING"))
        logging.getLogger("federation").addHandler(handler)
        logging.getLogger("federation").setLevel(handler.level)
        worker_main(argv[1:])
    else:
        raise SystemExit("usage: python -m federation.flower.node_runtime supernode|worker ...")


if __name__ == "__main__":
    main()
