"""The generated secure broker deployment on real Mosquitto: bridge, outage, refusals.

One deployment per module (cloud and site brokers with the bridge, influxd, ingestion) from
`fiberwatch.bench._security_deploy`; the checks are the ones `fiberwatch bench security`
runs, so these tests also show that each check can fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent import topics
from edge_agent.config import BrokerConfig
from edge_agent.mqtt_client import make_client
from fiberwatch.bench import security
from fiberwatch.bench._security_deploy import GW_A, GW_B, SITE, Deployment
from fiberwatch.bench._security_probe import connect, make_event, wait_for
from fiberwatch.deploy.spec import gateway_user, interrogator_user, raw_user
from fiberwatch.services import Mosquitto

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with Deployment(tmp_path_factory.mktemp("secure"), with_api=False,
                    with_agent=False) as d:
        yield d


def test_an_event_published_at_the_site_is_stored_in_the_cloud(dep: Deployment) -> None:
    assert dep.site is not None
    user = gateway_user(SITE, GW_A)
    a = connect(dep.site.port, dep.ca, user, dep.password(user))
    ev = make_event(SITE, GW_A, 11)
    try:
        assert a.connected, a.reason
        assert a.publish(topics.events(SITE, GW_A), ev.to_json()) in (
            "Success", "No matching subscribers")
    finally:
        a.close()
    assert wait_for(lambda: security._stored(dep, ev), 60), "event never reached the store"


def test_an_event_crosses_the_bridge_after_an_outage(dep: Deployment) -> None:
    passed, detail = security.make_bridge_outage_check(2.0)(dep)
    assert passed, detail


@pytest.mark.parametrize("check", [security.check_anonymous_refused,
                                   security.check_wrong_password_refused,
                                   security.check_forged_event_denied,
                                   security.check_model_topic_isolated])
def test_the_brokers_refuse(dep: Deployment, check: security.Check) -> None:
    passed, detail = check(dep)
    assert passed, detail


def test_a_gateway_cannot_read_raw_frames_or_publish_models(dep: Deployment) -> None:
    """The other half of the ACL: the interrogator login writes frames only, the raw login
    reads them only, and a gateway cannot overwrite its own model announcement."""
    assert dep.site is not None
    raw, itg = raw_user(SITE, GW_A), interrogator_user(SITE, GW_A)
    reader = connect(dep.site.port, dep.ca, raw, dep.password(raw))
    reader.client.subscribe(topics.raw(SITE, GW_A, "das"), 1)
    writer = connect(dep.site.port, dep.ca, itg, dep.password(itg))
    gw = connect(dep.site.port, dep.ca, gateway_user(SITE, GW_A),
                 dep.password(gateway_user(SITE, GW_A)))
    try:
        assert reader.connected and writer.connected and gw.connected
        assert writer.publish(topics.raw(SITE, GW_A, "das"), b"frame") == "Success"
        assert wait_for(lambda: len(reader.received) == 1, 10)
        assert writer.publish(topics.raw(SITE, GW_B, "das"), b"frame") == "Not authorized"
        assert gw.publish(topics.model(SITE, GW_A), b"pkg", retain=True) == "Not authorized"
        assert reader.publish(topics.raw(SITE, GW_A, "das"), b"frame") == "Not authorized"
    finally:
        for p in (reader, writer, gw):
            p.close()


def test_the_anonymous_check_fails_on_a_broker_that_lets_anyone_in(dep: Deployment,
                                                                    tmp_path: Path) -> None:
    """Protection switched off (the same TLS listener, anonymous allowed): the check must
    report it."""
    certs = dep.lay.broker_dir(SITE) / "certs"
    tls = f"cafile {certs}/ca.crt\ncertfile {certs}/server.crt\nkeyfile {certs}/server.key\n"
    with Mosquitto(tmp_path / "open", extra_conf=tls) as open_broker:
        weak = Deployment(dep.workdir, with_api=False, with_agent=False,
                          site=open_broker, cloud=open_broker)
        passed, detail = security.check_anonymous_refused(weak)
    assert not passed, detail
    assert "Success" in detail


def test_the_shared_helper_logs_in_with_a_password_file(dep: Deployment) -> None:
    assert dep.cloud is not None
    user = "viewer"
    broker = BrokerConfig(port=dep.cloud.port, tls=True, ca_file=dep.ca, username=user,
                          password_file=dep.lay.client_dir(user) / "password")
    c = make_client(broker, "ignored-the-broker-uses-the-username", protocol="v311")
    c.reconnect()
    c.loop_start()
    try:
        assert wait_for(c.is_connected, 10)
    finally:
        c.disconnect()
        c.loop_stop()


class _OpenAclDeployment(Deployment):
    """The same deployment with the site ACL switched off (every login may do anything)."""

    def _generate(self) -> None:
        super()._generate()
        (self.lay.broker_dir(SITE) / "acl").write_text("pattern readwrite #\n")


def test_the_forged_event_check_fails_without_the_acl(tmp_path: Path) -> None:
    with _OpenAclDeployment(tmp_path, with_api=False, with_agent=False) as weak:
        passed, detail = security.check_forged_event_denied(weak)
    assert not passed, detail
    assert "stored in the cloud: True" in detail
