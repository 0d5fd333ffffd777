"""A real Flower deployment on loopback: SuperLink, 3 gateway SuperNodes, `flwr run`.

One run covers: 3 rounds; a gateway killed (SIGKILL of its process group) during the run,
after which the rounds complete with the other two and count it as a failure; the round
metrics in a real influxd; the model lifecycle (int8 conversion, signed package, registry
candidate). A second test runs with TLS and SuperNode authentication.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.normal_buffer import NormalBuffer
from federation.flower.deployment import (
    APP_DIR,
    GatewayNode,
    SuperLink,
    Tls,
    generate_node_keys,
    start_all,
)
from federation.flower.metrics_sink import MetricsSink
from federation.model.datasets import DAS_SPEC
from tests.integration._polling import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _buffers(tmp: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        p = tmp / f"gw{i}.fwnb"
        with NormalBuffer(p, dim=DAS_SPEC.dim, spec_hash=DAS_SPEC.hash, max_rows=5000) as b:
            b.append((rng.standard_normal((1500, DAS_SPEC.dim)) * (1 + 0.2 * i) + i)
                     .astype(np.float32))
        out.append(p)
    return out


#: the real ClientApp plus the test hooks (``hang-from``: `fiberwatch.bench._fl_apps`)
HOOKED_APP = "fiberwatch.bench._fl_apps:app"


def _hooked_app(tmp: Path) -> Path:
    """The shipped Flower app with its ClientApp swapped for `HOOKED_APP` (a worker runs only
    the ClientApp the run's FAB names)."""
    text = (APP_DIR / "pyproject.toml").read_text()
    assert 'clientapp = "federation.flower.client_app:app"' in text
    out = tmp / "hooked_app"
    out.mkdir()
    hooked = text.replace("federation.flower.client_app:app", HOOKED_APP)
    (out / "pyproject.toml").write_text(hooked)
    return out


def _nodes(tmp: Path, link: SuperLink, buffers: list[Path], extra: dict | None = None,
           **kw: Any) -> list[GatewayNode]:
    nodes = [GatewayNode(tmp / f"node{i}", link.address, node_config={
        "gateway-id": f"site/gw{i}", "normal-buffer": str(b), **(extra or {}).get(i, {})},
        **kw) for i, b in enumerate(buffers)]
    start_all(nodes)
    return nodes


def test_three_supernodes_dropout_influx_and_registry(tmp_path: Path, influxd: Any) -> None:
    from federation.registry.keys import save_pair
    from federation.registry.store import Registry

    save_pair(tmp_path / "sign.pem", tmp_path / "sign.pub")
    results, registry = tmp_path / "results", tmp_path / "registry"
    seen: list[dict] = []
    marker = tmp_path / "gw2-is-mid-round"
    with SuperLink(tmp_path / "link", insecure=True) as link:
        nodes = _nodes(tmp_path, link, _buffers(tmp_path, 3), insecure=True,
                       extra={2: {"hang-from": 2, "hang-marker": str(marker)}},
                       clientapp=HOOKED_APP)
        try:
            run_id = link.control.submit({
                "num-rounds": 3, "min-nodes": 2, "epochs": 1, "grace-s": 1.0,
                "wait-nodes-s": 60.0, "results-dir": str(results),
                "influx-url": influxd.url, "registry-dir": str(registry),
                "signing-key": str(tmp_path / "sign.pem")}, app_dir=_hooked_app(tmp_path))

            def on_round(r: dict) -> None:
                seen.append(r)
                if r["round"] == 1:  # gw2 got round 2 and is training (stuck): kill it now
                    wait_for(marker.exists, 120, "gw2 to receive round 2")
                    nodes[2].kill()

            summary = link.control.follow(run_id, results, on_round=on_round, timeout_s=240)
        finally:
            for n in nodes:
                n.stop()
    assert all(p.poll() is not None for g in [link.group, *(n.group for n in nodes)]
               for p in g.procs)  # every process we started has ended

    assert [r["round"] for r in seen] == [1, 2, 3]
    assert seen[0]["participants"] == 3 and seen[0]["failures"] == 0
    for r in seen[1:]:  # the killed gateway is a logged failure; the others carry the round
        assert r["participants"] == 2 and r["failures"] == 1 and r["applied"]
        assert any("dropped out" in why for why in r["failed_nodes"].values())
    assert all(r["bytes_up"] < 0.35 * r["bytes_up_fp32"] for r in seen)

    rows = MetricsSink(influxd.url).query(
        'SELECT * FROM "history"."fl_round" ORDER BY time')["results"][0]["series"][0]
    cols = rows["columns"]
    points = [dict(zip(cols, v, strict=True)) for v in rows["values"]]
    assert [p["round"] for p in points] == [1, 2, 3]
    assert [p["participants"] for p in points] == [3, 2, 2]
    assert [p["failures"] for p in points] == [0, 1, 1]
    assert all(p["run_id"] == str(run_id) and p["strategy"] == "fedavg" for p in points)
    assert all(p["bytes_up"] > 0 and p["loss"] > 0 for p in points)
    assert points[-1]["model_version"].endswith("-r3")
    end = dt.datetime.fromisoformat(points[-1]["time"].replace("Z", "+00:00"))
    assert abs(end.timestamp() * 1e9 - seen[-1]["t_end_ns"]) < 1e6  # timestamp = round end

    reg = Registry(registry)
    rec = reg.get(summary["version"])
    assert rec.state == "candidate" and rec.metrics["source"] == "federated"
    assert reg.history()[-1]["to"] == "candidate"
    assert json.loads((results / "summary.json").read_text())["stats"]["count"] > 0


def _certificates(d: Path) -> Tls:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test-ca")).issuer_name(name("test-ca"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now)
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "server.pem").write_bytes(cert.public_bytes(pem))
    (d / "server.key").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return Tls(d / "ca.pem", d / "server.pem", d / "server.key")


def test_tls_and_supernode_authentication(tmp_path: Path) -> None:
    tls = _certificates(tmp_path)
    generate_node_keys(tmp_path / "node.key", tmp_path / "node.pub")
    generate_node_keys(tmp_path / "stranger.key", tmp_path / "stranger.pub")
    results = tmp_path / "results"
    with SuperLink(tmp_path / "link", tls=tls, node_auth=True) as link:
        link.control.register_node(tmp_path / "node.pub")
        (node,) = _nodes(tmp_path, link, _buffers(tmp_path, 1), root_certificates=tls.ca,
                         auth_private_key=tmp_path / "node.key")
        stranger = GatewayNode(tmp_path / "stranger", link.address, root_certificates=tls.ca,
                               auth_private_key=tmp_path / "stranger.key",
                               node_config={"normal-buffer": str(tmp_path / "gw0.fwnb")})
        try:
            stranger.launch()
            run_id = link.control.submit({"num-rounds": 1, "min-nodes": 1, "epochs": 1,
                                          "results-dir": str(results)})
            summary = link.control.follow(run_id, results, timeout_s=180)
            stranger.group.procs[0].wait(60)  # an unregistered key is turned away
        finally:
            node.stop()
            stranger.stop()
    rounds = [json.loads(x) for x in (results / "rounds.jsonl").read_text().splitlines()]
    assert rounds[0]["participants"] == 1 and summary["eval_loss"] > 0
    assert stranger.group.procs[0].returncode != 0
    assert "Failed to initialize the connection" in stranger.group.tail(20000)
