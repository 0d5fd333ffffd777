"""`fiberwatch query anomalies|window`: operators' historical queries against the cloud API.

The token comes from ``--token`` or ``FIBERWATCH_TOKEN``, the API from ``--api`` or
``FIBERWATCH_API``. An HTTP error prints the server's reason on one line and exits non-zero.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from fiberwatch.cli import UsageError

TABLE_COLUMNS = ("start", "site", "gateway", "stream", "channels", "distance_m", "severity",
                 "class_hint", "peak_score", "model_version", "id")
_FILTERS = ("site", "gateway", "stream", "start", "end", "ch_min", "ch_max", "dist_min",
            "dist_max", "severity", "class_hint", "model_version", "limit", "offset")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("query", help="query anomaly history and waterfalls from the cloud API")
    qsub = p.add_subparsers(dest="query_command", metavar="WHAT", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api", default=os.environ.get("FIBERWATCH_API", "http://127.0.0.1:8000"),
                        help="cloud API base URL (env FIBERWATCH_API; default %(default)s)")
    common.add_argument("--token", default=os.environ.get("FIBERWATCH_TOKEN"),
                        help="API token (env FIBERWATCH_TOKEN)")
    common.add_argument("--output", type=Path, metavar="FILE", help="write here, not stdout")
    common.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    times = "RFC 3339, ns since the epoch, or now-15m"

    a = qsub.add_parser("anomalies", parents=[common], help="list anomaly events, newest first")
    for name in ("site", "gateway", "model-version"):
        a.add_argument(f"--{name}")
    a.add_argument("--stream", choices=("das", "dts"))
    a.add_argument("--start", help=times)
    a.add_argument("--end", help=times)
    for name in ("ch-min", "ch-max", "limit", "offset"):
        a.add_argument(f"--{name}", type=int)
    for name in ("dist-min", "dist-max"):
        a.add_argument(f"--{name}", type=float, metavar="M")
    a.add_argument("--severity", choices=("low", "medium", "high", "critical"))
    a.add_argument("--class-hint", choices=("leak", "sand", "flow", "fault", "unknown"))
    a.add_argument("--format", choices=("table", "json", "csv"), default="table")
    a.set_defaults(func=_anomalies)

    w = qsub.add_parser("window", parents=[common], help="a waterfall (channels x time)")
    w.add_argument("--site", required=True)
    w.add_argument("--gateway")
    w.add_argument("--stream", choices=("das", "dts"), default="das")
    w.add_argument("--start", required=True, help=times)
    w.add_argument("--end", required=True, help=times)
    w.add_argument("--ch-start", type=int, required=True)
    w.add_argument("--ch-end", type=int, required=True)
    w.add_argument("--max-times", type=int, help="time buckets (at most 5000)")
    w.add_argument("--resolution", type=float, metavar="S", help="seconds per time bucket")
    w.add_argument("--field", choices=("score", "energy", "threshold"), default="score")
    w.add_argument("--format", choices=("csv", "json"), default="csv")
    w.set_defaults(func=_window)


def _client(args: argparse.Namespace) -> Any:
    """An httpx client for the API (replaced in tests by one bound to the app)."""
    import httpx

    return httpx.Client(base_url=args.api, timeout=args.timeout)


def _get(args: argparse.Namespace, path: str, params: dict[str, Any]) -> Any:
    import httpx

    if not args.token:
        raise UsageError("no API token: pass --token or set FIBERWATCH_TOKEN")
    query = {k: v for k, v in params.items() if v is not None}
    try:
        with _client(args) as client:
            r = client.get(f"/api/v1{path}", params=query,
                           headers={"Authorization": f"Bearer {args.token}"})
    except httpx.HTTPError as exc:
        raise UsageError(f"cannot reach the API at {args.api}: {exc}") from None
    if r.status_code >= 400:
        raise UsageError(f"HTTP {r.status_code}: {_reason(r)}")
    return r


def _reason(r: Any) -> str:
    try:
        body = r.json()
    except ValueError:
        return str(r.text.strip()[:300] or r.reason_phrase)
    detail = body.get("detail", r.text) if isinstance(body, dict) else r.text
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in detail)
    return str(detail)


def _emit(args: argparse.Namespace, text: str) -> None:
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)


def _anomalies(args: argparse.Namespace) -> int:
    params = {k: getattr(args, k) for k in _FILTERS}
    items = _get(args, "/anomalies", params).json()["items"]
    if args.format == "json":
        _emit(args, json.dumps(items, indent=2) + "\n")
        return 0
    rows = [_row(e) for e in items]
    if args.format == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=TABLE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _emit(args, out.getvalue())
    else:
        _emit(args, _table(rows) if rows else "no anomalies match\n")
    return 0


def _row(e: dict[str, Any]) -> dict[str, Any]:
    from cloud.api.timeparse import format_time

    return {
        "start": format_time(e["start_ns"])[:23] + "Z", "site": e["site"],
        "gateway": e["gateway"], "stream": e["stream"],
        "channels": f"{e['ch_start']}-{e['ch_end']}",
        "distance_m": f"{e['dist_start_m']:.1f}-{e['dist_end_m']:.1f}",
        "severity": e["severity"], "class_hint": e["class_hint"],
        "peak_score": f"{e['peak_score']:.3g}", "model_version": e["model_version"], "id": e["id"],
    }


def _table(rows: list[dict[str, Any]]) -> str:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in TABLE_COLUMNS}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in TABLE_COLUMNS)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in TABLE_COLUMNS) for r in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _window(args: argparse.Namespace) -> int:
    params = {k: getattr(args, k) for k in ("site", "gateway", "stream", "start", "end",
                                            "ch_start", "ch_end", "max_times", "resolution",
                                            "field", "format")}
    r = _get(args, "/window", params)
    _emit(args, r.text if args.format == "csv" else json.dumps(r.json(), indent=2) + "\n")
    return 0
