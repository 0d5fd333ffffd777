"""InfluxClient against a tiny local HTTP server: requests sent, answers parsed, errors typed."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from cloud.influx import (
    InfluxClient,
    InfluxError,
    _parse_csv,
    body_pieces,
    quote_ident,
    quote_literal,
)

Reply = tuple[int, dict[str, str], bytes]
Handler = Callable[[dict[str, Any]], Reply]


class _Server:
    def __init__(self) -> None:
        self.handler: Handler = lambda req: (204, {}, b"")
        self.drop_after_reply = False  # close the connection without saying so
        self._stopped = False
        self.requests: list[dict[str, Any]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                u = urlsplit(self.path)
                req = {"method": self.command, "path": u.path,
                       "params": {k: v[0] for k, v in parse_qs(u.query).items()},
                       "headers": {k.lower(): v for k, v in self.headers.items()},
                       "body": self.rfile.read(n)}
                outer.requests.append(req)
                status, headers, body = outer.handler(req)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = outer.drop_after_reply

            do_GET = do_POST = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever)
        self.thread.start()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.stop()


def json_reply(status: int, body: Any) -> Reply:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


def test_write_posts_lines_with_db_rp_precision_auth_and_no_gzip(server: _Server) -> None:
    with InfluxClient(server.url, "u", "pw") as client:
        client.write("fw", ["m v=1 1", "m v=2 2"], rp="raw")
        client.write("fw", [])  # nothing to send
    (req,) = server.requests
    assert (req["method"], req["path"]) == ("POST", "/write")
    assert req["params"] == {"db": "fw", "precision": "ns", "rp": "raw"}
    assert req["body"] == b"m v=1 1\nm v=2 2"
    assert req["headers"]["accept-encoding"] == "identity"
    assert req["headers"]["authorization"] == "Basic dTpwdw=="


def test_a_large_write_goes_in_pieces_as_one_plain_body(server: _Server) -> None:
    lines = [f"m,k={i} v=\"{'x' * (3000 * (i % 7))}\" {i}" for i in range(200)] + ["m v=\"é\" 1"]
    assert len(body_pieces(lines)) > 5
    with InfluxClient(server.url) as client:
        client.write("fw", lines)
        client.write("fw", iter(lines[:3]))  # any iterable
    big, small = server.requests
    assert big["body"] == "\n".join(lines).encode()  # Content-Length says all of it
    assert "transfer-encoding" not in big["headers"]
    assert small["body"] == "\n".join(lines[:3]).encode()


@pytest.mark.parametrize("n", [0, 1, 2, 9, 40])
def test_body_pieces_end_to_end_are_the_joined_body(n: int) -> None:
    lines = [chr(97 + i % 26) * (i * 997 % 20_000) for i in range(n)]
    for size in (1, 1000, 64 << 10, 1 << 30):
        assert b"".join(body_pieces(lines, size)) == "\n".join(lines).encode()


@pytest.mark.parametrize(
    ("status", "error", "retryable", "partial", "nodb"),
    [
        (400, "partial write: field type conflict dropped=1", False, True, False),
        (404, 'database not found: "fw"', False, False, True),
        (401, "authorization failed", False, False, False),
        (500, "engine: cache full", True, False, False),
        (503, "unavailable", True, False, False),
        (429, "slow down", True, False, False),
    ],
)
def test_http_errors_are_typed(server: _Server, status, error, retryable, partial, nodb) -> None:
    server.handler = lambda req: json_reply(status, {"error": error})
    with pytest.raises(InfluxError) as info, InfluxClient(server.url) as client:
        client.write("fw", ["m v=1 1"])
    err = info.value
    assert (err.status, err.retryable, err.partial_write, err.database_not_found) == (
        status, retryable, partial, nodb)
    assert error in str(err)


def test_unreachable_server_is_retryable(server: _Server) -> None:
    url = server.url
    server.stop()
    client = InfluxClient(url, timeout=2)
    with pytest.raises(InfluxError) as info:
        client.query("SHOW DATABASES")
    assert info.value.retryable and info.value.status is None
    assert client.ping() is False


def test_a_keepalive_connection_closed_by_the_server_is_retried(server: _Server) -> None:
    server.drop_after_reply = True
    client = InfluxClient(server.url)
    for _ in range(3):
        client.write("fw", ["m v=1 1"])
    assert len(server.requests) == 3


def test_query_returns_series_and_rows(server: _Server) -> None:
    body = {"results": [{"statement_id": 0, "series": [
        {"name": "m", "tags": {"g": "a"}, "columns": ["time", "v"], "values": [[1, 1.5], [2, 2]]},
        {"name": "m", "tags": {"g": "b"}, "columns": ["time", "v"], "values": [[3, 3]]},
    ]}]}
    server.handler = lambda req: json_reply(200, body)
    client = InfluxClient(server.url)
    series = client.query("SELECT v FROM m GROUP BY g", db="fw")
    assert [s.tags for s in series] == [{"g": "a"}, {"g": "b"}]
    assert client.rows("SELECT v FROM m GROUP BY g", db="fw") == [
        {"g": "a", "time": 1, "v": 1.5}, {"g": "a", "time": 2, "v": 2},
        {"g": "b", "time": 3, "v": 3}]
    req = server.requests[0]
    assert req["params"] == {"db": "fw", "epoch": "ns"}
    assert parse_qs(req["body"].decode())["q"] == ["SELECT v FROM m GROUP BY g"]
    assert len(server.requests) == 2  # one keep-alive connection for both


def test_statement_error_raises(server: _Server) -> None:
    server.handler = lambda req: json_reply(200, {"results": [{"error": "database not found: x"}]})
    with pytest.raises(InfluxError, match="database not found"):
        InfluxClient(server.url).query("SELECT * FROM x..m")


def test_query_table_parses_csv_and_falls_back_to_json(server: _Server) -> None:
    csv_body = b'name,tags,time,v,s\nm,,10,1,abc\nm,,20,2,"a,b""c"\n'
    server.handler = lambda req: (200, {"Content-Type": "text/csv"}, csv_body)
    client = InfluxClient(server.url)
    cols, rows = client.query_table("SELECT v, s FROM m")
    assert server.requests[-1]["headers"]["accept"] == "application/csv"
    assert cols == ["name", "tags", "time", "v", "s"]
    assert rows == [["m", "", "10", "1", "abc"], ["m", "", "20", "2", 'a,b"c']]
    body = {"results": [{"series": [{"name": "m", "columns": ["time", "v"], "values": [[1, 2]]}]}]}
    server.handler = lambda req: json_reply(200, body)
    assert client.query_table("SELECT v FROM m") == (["name", "tags", "time", "v"],
                                                     [["m", {}, 1, 2]])


def test_parse_csv_handles_empty_and_multiple_statements() -> None:
    assert _parse_csv("") == ([], [])
    cols, rows = _parse_csv("name,tags,time,v\nm,,1,1\n\nname,tags,time,v\nm,,2,2\n")
    assert rows == [["m", "", "1", "1"], ["m", "", "2", "2"]]


def test_ping(server: _Server) -> None:
    assert InfluxClient(server.url).ping() is True
    server.handler = lambda req: (500, {}, b"")
    assert InfluxClient(server.url).ping() is False


def test_bad_url() -> None:
    with pytest.raises(ValueError):
        InfluxClient("influx:8086")


def test_quoting_escapes_injection() -> None:
    assert quote_literal("a'b\\c") == "'a\\'b\\\\c'"
    assert quote_ident('x"y') == '"x\\"y"'
