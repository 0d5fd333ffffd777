"""A small InfluxDB client for the v1 HTTP API: ``POST /write`` and ``POST /query``.

Only the v1 API is used, so the same code talks to InfluxDB 1.x, to 2.x through its v1
compatibility endpoints and to 3.x. Errors raise one type, `InfluxError`, whose
``retryable`` flag tells a writer whether trying again later can help (connection errors,
time-outs, HTTP 5xx and 429) or not (bad line protocol, bad query, auth).

Examples
--------
>>> client = InfluxClient("http://127.0.0.1:8086")            # doctest: +SKIP
>>> client.write("fiberwatch", ["m,k=a v=1 1700000000000000000"], rp="raw")  # doctest: +SKIP
>>> client.query("SELECT v FROM m", db="fiberwatch")[0].rows()  # doctest: +SKIP
[{'time': 1700000000000000000, 'k': 'a', 'v': 1}]
"""

from __future__ import annotations

import base64
import csv
import http.client
import io
import json
import math
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urlsplit

_FORM = "application/x-www-form-urlencoded"
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class InfluxError(RuntimeError):
    """A failed request to InfluxDB.

    Parameters
    ----------
    message : str
        What went wrong, including InfluxDB's own error text where it gave one.
    status : int or None
        The HTTP status, or None when no response arrived.
    retryable : bool
        True for connection errors, time-outs, HTTP 5xx and 429: the same request may work
        later. False for errors that repeat (bad syntax, unknown database, auth).
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable

    @property
    def partial_write(self) -> bool:
        """True if InfluxDB wrote the good points of a batch and rejected the rest."""
        return self.status == 400 and "partial write" in str(self)

    @property
    def connection_broken(self) -> bool:
        """True if the server broke the connection off mid-request (no HTTP answer): what
        influxd 1.x does to a write body above its ``max-body-size``."""
        return self.status is None and any(
            name in str(self) for name in ("BrokenPipe", "ConnectionReset", "RemoteDisconnected"))

    @property
    def database_not_found(self) -> bool:
        """True if the write named a database that does not exist (yet)."""
        return "database not found" in str(self)


@dataclass(frozen=True, slots=True)
class Series:
    """One series of a query result: InfluxDB's ``{name, tags, columns, values}``."""

    name: str
    columns: list[str]
    values: list[list[Any]]
    tags: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """The rows as dicts, with the series' GROUP BY tags merged into each."""
        cols = self.columns
        return [{**self.tags, **dict(zip(cols, v, strict=False))} for v in self.values]


class InfluxClient:
    """Talk to InfluxDB over the v1 HTTP API.

    Parameters
    ----------
    url : str
        Base URL, e.g. ``http://127.0.0.1:8086`` (``https`` verifies certificates).
    username, password : str or None
        Sent as HTTP basic auth when given (accepted by 1.x, 2.x compat and 3.x).
    timeout : float
        Seconds for connecting and for each socket read or write.

    Notes
    -----
    Thread-safe: each thread keeps its own keep-alive connection (stdlib `http.client`,
    which reads influxd's chunked answers ~2x faster than httpx: 10 MB in ~200 vs ~430 ms
    on a busy 2-core machine). Responses are never gzip-compressed: influxd takes ~0.5 s to
    compress 10 MB, far longer than sending it raw over a LAN.
    """

    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"InfluxDB URL must be http(s)://host[:port], got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Accept-Encoding": "identity", "User-Agent": "fiberwatch-cloud"}
        if username:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            c.close()

    def __enter__(self) -> InfluxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self._local, "conn", None)
        reused = conn is not None
        if conn is None:
            if self._https:
                conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                                   context=ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn, reused

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)

    def _request(self, path: str, params: dict[str, str], body: bytes,
                 content_type: str, timeout: float | None,
                 accept: str = "application/json") -> tuple[int, str, bytes]:
        """POST; returns (status, content type, body). Retries once on a keep-alive
        connection the server had closed (both requests we send are idempotent)."""
        url = f"{self._prefix}{path}?{urlencode(params)}"
        headers = {**self._headers, "Content-Type": content_type, "Accept": accept}
        for attempt in (0, 1):
            conn, reused = self._connection(timeout or self.timeout)
            try:
                conn.request("POST", url, body=body, headers=headers)
                r = conn.getresponse()
                return r.status, r.getheader("Content-Type", ""), r.read()
            except (OSError, http.client.HTTPException) as exc:
                self._drop(conn)
                if attempt == 0 and reused and isinstance(exc, _STALE):
                    continue
                what = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
                raise InfluxError(f"{path}: {what}: {exc}", retryable=True) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _post(self, path: str, params: dict[str, str], body: bytes,
              content_type: str, timeout: float | None,
              accept: str = "application/json") -> tuple[str, bytes]:
        status, ctype, data = self._request(path, params, body, content_type, timeout, accept)
        if status >= 300:
            raise InfluxError(f"{path}: HTTP {status}: {_error_text(data)}", status=status,
                              retryable=status >= 500 or status == 429)
        return ctype, data

    def write(self, db: str, lines: Iterable[str] | str | bytes, rp: str | None = None,
              precision: str = "ns", timeout: float | None = None) -> None:
        """Write line-protocol lines.

        Parameters
        ----------
        db : str
            Database name.
        lines : iterable of str, or str/bytes
            Lines without trailing newlines, or an already joined body.
        rp : str or None
            Retention policy; None means the database's default.
        precision : str
            Timestamp unit of the lines: ``ns``, ``u``, ``ms`` or ``s``.
        timeout : float or None
            Overrides the client's timeout for this (possibly large) request.

        Raises
        ------
        InfluxError
            On any failure; see its ``retryable`` and ``partial_write``.
        """
        body: bytes
        if isinstance(lines, bytes):
            body = lines
        elif isinstance(lines, str):
            body = lines.encode()
        else:
            body = b"".join(body_pieces(lines))  # sent whole: see `body_pieces`
        if not body:
            return
        params = {"db": db, "precision": precision}
        if rp:
            params["rp"] = rp
        self._post("/write", params, body, "text/plain; charset=utf-8", timeout)

    def query(self, q: str, db: str | None = None, epoch: str | None = "ns",
              timeout: float | None = None) -> list[Series]:
        """Run InfluxQL and return the series of every statement, in order.

        Parameters
        ----------
        q : str
            One or more InfluxQL statements separated by ``;``.
        db : str or None
            Default database for the statements.
        epoch : str or None
            Time unit of the ``time`` column (``ns`` gives integers); None for RFC 3339.
        timeout : float or None
            Overrides the client's timeout for this request.

        Raises
        ------
        InfluxError
            If the request fails or any statement reports an error.
        """
        params: dict[str, str] = {}
        if db:
            params["db"] = db
        if epoch:
            params["epoch"] = epoch
        _, data = self._post("/query", params, urlencode({"q": q}).encode(), _FORM, timeout)
        return _parse_json(data, q)

    def query_table(self, q: str, db: str | None = None,
                    timeout: float | None = None) -> tuple[list[str], list[list[Any]]]:
        """Run one SELECT and return ``(columns, rows)``, fetched as CSV when the server can.

        For wide results (long base64 strings) CSV is 2x cheaper for influxd to produce than
        JSON and much cheaper to parse. Values are strings in the CSV case (the caller
        converts); a server that answers JSON instead gets the same shape with typed values.
        Times are ns. InfluxDB 1.x's CSV answer is empty (not an error) when a statement fails
        after parsing, e.g. for an unknown database: use it for queries you built yourself.

        Raises
        ------
        InfluxError
            If the request fails or the server reports an error.
        """
        params = {"epoch": "ns"}
        if db:
            params["db"] = db
        ctype, data = self._post("/query", params, urlencode({"q": q}).encode(), _FORM,
                                 timeout, accept="application/csv")
        if "csv" not in ctype:
            series = _parse_json(data, q)
            if not series:
                return [], []
            return ["name", "tags", *series[0].columns], [
                [s.name, s.tags, *v] for s in series for v in s.values]
        return _parse_csv(data.decode())

    def rows(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        """`query`, flattened to one list of row dicts (``time`` in ns)."""
        return [row for s in self.query(q, db=db) for row in s.rows()]

    def ping(self) -> bool:
        """True if the server answers ``/ping`` with 204."""
        conn, _ = self._connection(min(self.timeout, 5.0))
        try:
            conn.request("GET", f"{self._prefix}/ping", headers=self._headers)
            r = conn.getresponse()
            r.read()
            return r.status == 204
        except (OSError, http.client.HTTPException):
            self._drop(conn)
            return False


def _parse_json(data: bytes, q: str) -> list[Series]:
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise InfluxError(f"/query: response is not JSON: {exc}") from exc
    out: list[Series] = []
    for result in body.get("results", []):
        if "error" in result:
            raise InfluxError(f"/query: {result['error']} (in: {q[:200]})", status=200)
        for s in result.get("series", []):
            out.append(Series(name=s.get("name", ""), columns=s.get("columns", []),
                              values=s.get("values", []), tags=s.get("tags") or {}))
    return out


def _parse_csv(text: str) -> tuple[list[str], list[list[Any]]]:
    """InfluxDB's CSV: a header, then rows; cells are quoted only where a value needs it."""
    if '"' in text:  # quoted cells (commas, quotes, newlines): let the csv module do it
        table = [row for row in csv.reader(io.StringIO(text)) if row]
    else:  # the common case for our own queries: plain split, ~10x faster; a wide last
        # column (put it last in the SELECT) is not even scanned
        width = text.count(",", 0, text.find("\n"))
        table = [line.split(",", width) for line in text.split("\n") if line]
    if not table:
        return [], []
    header = table[0]
    return header, [row for row in table[1:] if row != header]


def _error_text(data: bytes) -> str:
    text = data.decode(errors="replace")
    try:
        body = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])[:500]
    return text[:500]


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes, escaped."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_literal(value: str) -> str:
    """An InfluxQL string literal in single quotes, escaped.

    Raises
    ------
    ValueError
        If `value` holds a carriage return or NUL, which InfluxQL strings cannot carry.
    """
    if "\r" in value or "\0" in value:
        raise ValueError("an InfluxQL string cannot hold a carriage return or NUL")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def float_literal(value: float) -> str:
    """An InfluxQL number: plain decimal digits (InfluxQL has no exponent notation).

    Raises
    ------
    ValueError
        If `value` is not finite.
    """
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value}")
    return format(Decimal(repr(float(value))), "f")


def body_pieces(lines: Iterable[str], size: int = 64 << 10) -> list[bytes]:
    """``"\n".join(lines).encode()`` as pieces of about `size` bytes, each joined and
    encoded while its lines are in the CPU cache: a multi-MB body built at once goes through
    memory three times (join, encode, send), measured ~8 us per 11 KB line against ~2 in
    pieces on this 2-core machine. The pieces end to end are that body, byte for byte.

    `InfluxClient.write` joins them (one copy, ~1 ms for 5 MB) and sends one buffer: sent
    piece by piece, each ``sendall`` waited for the GIL again, and a writer thread sharing
    the process with a busy MQTT thread waited up to a switch interval (5 ms) per piece,
    hundreds of ms per 5 MB batch (measured in `bench cloud`: ingestion 1.6 s -> 1.3 s per
    9,000 summaries)."""
    out: list[bytes] = []
    group: list[str] = []
    n = 0
    for ln in lines:
        if n >= size:
            group.append("")  # the newline between this piece and the next
            out.append("\n".join(group).encode())
            group, n = [], 0
        group.append(ln)
        n += len(ln)
    out.append("\n".join(group).encode())
    return out
