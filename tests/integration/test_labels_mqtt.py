"""Operator labels reach their gateway through the generated secure deployment.

Real cloud and site Mosquitto brokers with the bridge, TLS, logins and the generated ACL
(`fiberwatch.bench._security_deploy`): the cloud's ``labels`` login publishes labels
(`cloud.labels.publish_labels`) while the gateway is offline; when its uplink connects, its
`edge_agent.labels.LabelBook` gets every label of its own (retained) and refuses and counts a
label of another gateway never arrives; no gateway may write label topics or read another gateway's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.api.memory import MemoryStore
from cloud.labels import publish_labels
from edge_agent import topics
from edge_agent.config import GatewayConfig
from edge_agent.events import Event
from edge_agent.labels import LabelBook
from edge_agent.store_forward import Outbox
from edge_agent.uplink import Uplink
from fiberwatch.bench._security_deploy import GW_A, GW_B, SITE, Deployment
from fiberwatch.bench._security_probe import connect, wait_for
from fiberwatch.deploy.spec import gateway_user
from fiberwatch.label_round import labels_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with Deployment(tmp_path_factory.mktemp("labels"), with_api=False,
                    with_agent=False) as d:
        yield d


def _store() -> MemoryStore:
    store = MemoryStore()
    for i, gw in enumerate((GW_A, GW_B)):
        store.add_event(Event(
            id=f"e-{gw}", site=SITE, gateway=gw, stream="das", start_ns=10**18 + i,
            end_ns=10**18 + 5 * 10**9, ch_start=8, ch_end=15, dist_start_m=8.0, dist_end_m=15.0,
            peak_score=9.0, mean_score=5.0, threshold=2.0, severity="high", class_hint="leak",
            n_windows=4, model_version="m-1", model_hash="h", detected_ns=10**18))
    return store


def _password_file(dep: Deployment, tmp: Path, user: str) -> Path:
    path = tmp / f"{user}.pw"
    path.write_text(dep.password(user))
    return path


def _gateway_cfg(dep: Deployment, tmp: Path, gw: str) -> GatewayConfig:
    assert dep.site is not None
    pw = _password_file(dep, tmp, gateway_user(SITE, gw))
    return GatewayConfig.model_validate({
        "gateway": {"site": SITE, "id": gw, "data_dir": str(tmp)},
        "broker": {"host": "127.0.0.1", "port": dep.site.port, "tls": True,
                   "ca_file": str(dep.ca), "username": gateway_user(SITE, gw),
                   "password_file": str(pw)},
        "model": {"allow_unsigned": True},
        "streams": [{"kind": "das", "channels": 16, "sample_rate_hz": 2000, "window_s": 1,
                     "hop_s": 0.5}]})


def test_labels_reach_an_offline_gateway_and_no_one_else(dep: Deployment, tmp_path: Path) -> None:
    store = _store()
    store.add_label(f"e-{GW_A}", label="false_alarm", note="valve", user="al")
    store.add_label(f"e-{GW_A}", label="note", note="just a note", user="al")
    store.add_label(f"e-{GW_B}", label="confirmed", note="", user="bo", kind="sand")
    assert dep.cloud is not None
    cloud = labels_client("127.0.0.1", dep.cloud.port, ca=dep.ca,
                          password_file=_password_file(dep, tmp_path, "labels"))
    try:
        sent = publish_labels(store, cloud)  # the gateways are offline: retained
    finally:
        cloud.loop_stop()
        cloud.disconnect()
    assert sorted((m.gateway, m.label, m.kind) for m in sent) == [
        (GW_A, "false_alarm", ""), (GW_B, "anomaly", "sand")]

    assert dep.site is not None
    other = connect(dep.site.port, dep.ca, gateway_user(SITE, GW_B),
                    dep.password(gateway_user(SITE, GW_B)))
    # a gateway may not write labels, for itself or another gateway, nor read another's
    assert other.publish(topics.label(SITE, GW_B, "forged"), b"{}", retain=True) \
        == "Not authorized"
    assert other.publish(topics.label(SITE, GW_A, "forged"), b"{}", retain=True) \
        == "Not authorized"
    other.client.subscribe(topics.labels(SITE, GW_A), 1)
    cfg = _gateway_cfg(dep, tmp_path, GW_A)
    book = LabelBook(tmp_path / "labels.db")
    outbox = Outbox(tmp_path / "outbox.db", max_events=100, max_age_s=3600)
    up = Uplink(cfg, outbox, on_label=lambda p: book.handle(p, site=SITE, gateway=GW_A),
                reconnect_delay_s=(0.05, 0.5))
    up.start()
    try:
        assert wait_for(lambda: len(book.labels()) == 1, 30)
        (label,) = book.labels()
        assert (label.event_id, label.label, label.ch_start, label.ch_end) == \
            (f"e-{GW_A}", "false_alarm", 8, 15)
        assert up.stats["labels"] >= 1
    finally:
        up.stop()
        outbox.close()
        book.close()
    assert not other.received  # GW_A's labels never reach GW_B's login
    other.close()
    reopened = LabelBook(tmp_path / "labels.db")  # durable: the gateway keeps them
    assert [lb.event_id for lb in reopened.labels()] == [f"e-{GW_A}"]
    reopened.close()
