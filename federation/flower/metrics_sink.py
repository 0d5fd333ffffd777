"""Federated round metrics to InfluxDB through the v1 HTTP API (`cloud/schema.py` contract).

One point per round::

    fl_round,run_id=<run>,strategy=<name> round=<int>i,participants=<int>i,failures=<int>i,
        loss=<float>,auc=<float>,bytes_up=<int>i,bytes_down=<int>i,duration_s=<float>,
        model_version="<str>" <round end, ns>

written to db ``fiberwatch``, retention policy ``history`` (both created if missing; an
existing policy is left as it is). Non-finite floats (a round without replies has no loss,
a run without an evaluation set has no AUC) are left out of the point. InfluxDB being down
does not stop the training: a failed write is logged and dropped (the round is also in the
ServerApp's ``rounds.jsonl``).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

DB, RP, MEASUREMENT = "fiberwatch", "history", "fl_round"
RP_DURATION = "365d"
INT_FIELDS = ("round", "participants", "failures", "bytes_up", "bytes_down")
FLOAT_FIELDS = ("loss", "auc", "duration_s")


class SinkError(RuntimeError):
    """InfluxDB refused a request (the message holds its answer)."""


def _tag(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _str_field(v: str) -> str:
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def line(report: Mapping[str, Any], *, run_id: str, strategy: str) -> str:
    """The line-protocol point of one round (``report`` as `rounds.RoundReport.to_dict`)."""
    fields = [f"{k}={int(report[k])}i" for k in INT_FIELDS if report.get(k) is not None]
    for k in FLOAT_FIELDS:
        v = report.get(k)
        if v is not None and math.isfinite(float(v)):
            fields.append(f"{k}={float(v)!r}")
    fields.append(f"model_version={_str_field(report.get('model_version') or '')}")
    tags = f"{MEASUREMENT},run_id={_tag(run_id)},strategy={_tag(strategy)}"
    return f"{tags} {','.join(fields)} {int(report['t_end_ns'])}"


class MetricsSink:
    """Writes round points to one InfluxDB 1.x (or 2.x/3.x v1-compatible) server."""

    def __init__(self, url: str, *, db: str = DB, rp: str = RP, username: str | None = None,
                 password: str | None = None, timeout_s: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"InfluxDB URL must be http:// or https://, got {url!r}")
        self.url, self.db, self.rp, self.timeout_s = url.rstrip("/"), db, rp, timeout_s
        self._auth = (base64.b64encode(f"{username}:{password or ''}".encode()).decode()
                      if username else None)
        self._ready = False

    def _request(self, path: str, params: dict[str, str], body: bytes | None = None) -> bytes:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, data=body or b"", method="POST")  # noqa: S310 - http(s) only
        if self._auth:
            req.add_header("Authorization", f"Basic {self._auth}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:  # noqa: S310
                return bytes(r.read())
        except urllib.error.HTTPError as exc:
            raise SinkError(f"{path}: HTTP {exc.code}: {exc.read()[:300]!r}") from None

    def query(self, q: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self._request("/query", {"q": q, "db": self.db}))
        for res in out.get("results", []):
            if "error" in res:
                raise SinkError(f"query {q!r}: {res['error']}")
        return out

    def ensure_schema(self) -> None:
        """Create the database and the retention policy if they are missing."""
        self.query(f'CREATE DATABASE "{self.db}"')
        res = self.query(f'SHOW RETENTION POLICIES ON "{self.db}"')["results"][0]
        names = {row[0] for s in res.get("series", []) for row in s.get("values", [])}
        if self.rp not in names:
            self.query(f'CREATE RETENTION POLICY "{self.rp}" ON "{self.db}" '
                       f"DURATION {RP_DURATION} REPLICATION 1")
        self._ready = True

    def write_lines(self, lines: list[str]) -> None:
        if not self._ready:
            self.ensure_schema()
        self._request("/write", {"db": self.db, "rp": self.rp, "precision": "ns"},
                      "\n".join(lines).encode())

    def write_labels(self, report: Any, labels: Mapping[str, Any], *, run_id: str,
                     strategy: str) -> bool:
        """Add the label report (`federation.flower.label_round`) to the last round's point:
        same series and time, so InfluxDB merges the fields into it."""
        data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        fields = [f"label_{k}={int(v)}i" if isinstance(v, int) else f"label_{k}={float(v)!r}"
                  for k, v in sorted(labels.items())
                  if isinstance(v, int | float) and math.isfinite(float(v))]
        if not fields:
            return False
        tags = f"{MEASUREMENT},run_id={_tag(run_id)},strategy={_tag(strategy)}"
        try:
            self.write_lines([f"{tags} {','.join(fields)} {int(data['t_end_ns'])}"])
        except (OSError, SinkError, ValueError) as exc:
            log.warning("label report not written url=%s error=%s", self.url, exc)
            return False
        return True

    def write_round(self, report: Any, *, run_id: str, strategy: str) -> bool:
        """Write one round; False (and a warning) if InfluxDB could not take it."""
        data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        try:
            self.write_lines([line(data, run_id=run_id, strategy=strategy)])
        except (OSError, SinkError, ValueError) as exc:
            log.warning("round metrics not written url=%s round=%s error=%s", self.url,
                        data.get("round"), exc)
            return False
        return True
