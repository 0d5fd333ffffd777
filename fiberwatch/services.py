"""Start and stop the real services (Mosquitto, influxd) in temp dirs on free loopback ports.

Used by the tests, the demo and the benchmarks. Each service is a context manager that
starts one process (a `federation.processes.ProcessGroup` of its own), waits until it
answers, and stops exactly that process group by its id.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from federation.processes import (  # noqa: F401 - free_port: re-exported for the tests
    LOOPBACK,
    ProcessError,
    ProcessGroup,
    free_port,
)


class ServiceError(ProcessError):
    """A service binary is missing or did not become ready."""


def _find_binary(name: str, *extra: str) -> str:
    for candidate in (shutil.which(name), *extra):
        if candidate and Path(candidate).exists():
            return candidate
    raise ServiceError(
        f"{name} not found: install Debian's package (see README, 'bash .ci/run' installs it)"
    )


class _Service:
    """One service process in a `ProcessGroup` of its own, output to ``workdir/NAME.log``."""

    name = "service"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log_path = self.workdir / f"{self.name}.log"
        self._group: ProcessGroup | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self._group.procs[0] if self._group else None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> None:
        if self._group is not None and self._group.alive():
            return
        self._group = ProcessGroup(self.name, self.log_path)
        self._group.spawn(self._command(), cwd=self.workdir)
        try:
            self._group.wait_until(self._ready, timeout, f"{self.name} on port {self.port}")
        except ProcessError as exc:
            self.stop()
            raise ServiceError(str(exc)) from exc

    def stop(self, timeout: float = 10.0) -> None:
        group, self._group = self._group, None
        if group is not None:
            group.stop(timeout)

    def kill(self) -> None:
        """SIGKILL, for outage tests."""
        group, self._group = self._group, None
        if group is not None:
            group.kill()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Mosquitto(_Service):
    """A real Mosquitto broker on loopback, persistence in `workdir`.

    Plain and anonymous by default (tests, benchmarks). With `secure_dir` (a broker folder
    written by `fiberwatch.deploy.generate`: ``certs/``, ``passwd``, ``acl``) it runs the
    shipped secure config instead: TLS only, no anonymous logins, the ACL, client id =
    username. `extra_conf` is appended either way (e.g. a bridge block).
    """

    name = "mosquitto"

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "",
                 *, secure_dir: Path | None = None) -> None:
        super().__init__(workdir, port)
        self.binary = _find_binary("mosquitto", "/usr/sbin/mosquitto")
        self.conf_path = self.workdir / "mosquitto.conf"
        self.secure_dir = secure_dir
        lines = self._secure_lines(secure_dir) if secure_dir else self._plain_lines()
        self.conf_path.write_text("\n".join(lines) + "\n" + extra_conf)

    def _plain_lines(self) -> list[str]:
        lines = [
            f"listener {self.port} {LOOPBACK}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            "set_tcp_nodelay true",
            "max_inflight_messages 2000",
            "max_queued_messages 100000",
            # QoS0 summaries wait for ingestion's persistent session while it restarts
            "queue_qos0_messages true",
            "max_queued_bytes 268435456",
            "max_packet_size 16777216",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops privileges and cannot write its dir
        return lines

    def _secure_lines(self, secure_dir: Path) -> list[str]:
        from fiberwatch.deploy.broker_conf import Placement, common_lines
        from fiberwatch.deploy.spec import Sizing

        p = Placement(install_dir=Path(secure_dir).resolve(), persistence_dir=self.workdir,
                      port=self.port, bind=LOOPBACK, run_as_root=os.geteuid() == 0,
                      log_dest="stderr", autosave_s=1)
        return common_lines(p, Sizing(), 100000)

    def _command(self) -> list[str]:
        return [self.binary, "-c", str(self.conf_path)]

    def _ready(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as sock:
                if self.secure_dir is not None:  # a full TLS handshake, as a client would
                    ca = Path(self.secure_dir) / "certs" / "ca.crt"
                    ctx = ssl.create_default_context(cafile=str(ca))
                    ctx.wrap_socket(sock, server_hostname=LOOPBACK).close()
                return True
        except OSError:  # ssl.SSLError included
            return False


class NatsServer(_Service):
    """A real NATS server (Debian's ``nats-server``) with its MQTT listener on loopback.

    NATS speaks MQTT 3.1.1 only (no MQTT v5) and needs JetStream for it (sessions and QoS1
    live in JetStream streams). Measured with 2.9.10: a ``$share/GROUP/...`` filter is
    granted but delivers nothing, so it serves single-process ingestion (no shared
    subscriptions). `port` is the MQTT port; the NATS client port is another free one.
    """

    name = "nats-server"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.binary = _find_binary("nats-server", "/usr/bin/nats-server")
        self.nats_port = free_port()
        self.conf_path = self.workdir / "nats.conf"
        self.conf_path.write_text(
            f"listen: {LOOPBACK}:{self.nats_port}\n"
            "server_name: fiberwatch\n"
            f'jetstream {{ store_dir: "{self.workdir}/js", max_memory_store: 64MB, '
            "max_file_store: 1GB }\n"
            f"mqtt {{ listen: {LOOPBACK}:{self.port} }}\n")

    def _command(self) -> list[str]:
        return [self.binary, "-c", str(self.conf_path)]

    def _ready(self) -> bool:
        return "Server is ready" in self.log_path.read_text(errors="replace")


class Influxd(_Service):
    """A real InfluxDB 1.x server on loopback, data in `workdir`.

    `max_body_size` is its write body limit in bytes (0: none; influxd's own default is
    25,000,000, past which it answers a broken pipe rather than a 413).
    """

    name = "influxd"

    def __init__(self, workdir: Path, port: int | None = None, max_body_size: int = 0) -> None:
        super().__init__(workdir, port)
        self.binary = _find_binary("influxd", "/usr/bin/influxd")
        self.rpc_port = free_port()
        self.conf_path = self.workdir / "influxdb.conf"
        d = self.workdir
        self.conf_path.write_text(
            f"""reporting-disabled = true
bind-address = "{LOOPBACK}:{self.rpc_port}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
  trace-logging-enabled = false
[coordinator]
  log-queries-after = "0s"
[http]
  enabled = true
  bind-address = "{LOOPBACK}:{self.port}"
  log-enabled = false
  max-body-size = {int(max_body_size)}
[logging]
  level = "warn"
[continuous_queries]
  enabled = true
  run-interval = "1s"
[monitor]
  store-enabled = false
"""
        )

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _command(self) -> list[str]:
        return [self.binary, "-config", str(self.conf_path)]

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=0.5) as r:  # noqa: S310
                return r.status == 204
        except (OSError, urllib.error.URLError):
            return False
