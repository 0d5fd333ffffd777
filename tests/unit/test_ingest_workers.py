"""Shared-subscription settings and the `--workers` launcher's per-process flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.ingest.buffer import Buffer
from cloud.ingest.config import IngestSettings
from cloud.ingest.mqtt import MID_OFFSET, Connection, Subscribers, connections, subscriptions
from cloud.ingest.service import _passthrough, parser
from cloud.ingest.stats import IngestStats
from cloud.ingest.workers import child_argv


def test_connections_of_single_primary_and_shared_processes() -> None:
    (one,) = connections(IngestSettings(client_id="fiberwatch-ingest"))
    assert one.filters == ("fiberwatch/v1/+/+/features/+", "fiberwatch/v1/+/+/events",
                           "fiberwatch/v1/+/+/health", "fiberwatch/v1/+/+/model_state")
    assert one.persistent and one.client_id == "fiberwatch-ingest" and one.mid_offset == 0
    shared = "$share/g/fiberwatch/v1/+/+/features/+"
    events, feats = connections(IngestSettings(client_id="fiberwatch-ingest", share_group="g"))
    # the shared stream never sits in a persistent session (the broker would keep feeding
    # an offline member its share); events do, so they wait while the primary is down
    assert events.persistent and shared not in events.filters
    assert feats == Connection("fiberwatch-ingest-features", (shared,), False, MID_OFFSET)
    assert connections(IngestSettings(client_id="fiberwatch-ingest", share_group="g",
                                      primary=False)) == [
        Connection("fiberwatch-ingest", (shared,), False)]
    assert subscriptions(IngestSettings(share_group="g"))[-1] == shared


def test_acks_go_to_the_connection_the_message_came_in_on() -> None:
    subs = Subscribers(IngestSettings(client_id="fiberwatch-ingest", share_group="g"),
                       Buffer(1 << 20), IngestStats())
    acked: list[tuple[str, int]] = []
    for p in subs.parts:
        p.client.ack = lambda mid, qos, name=p.conn.client_id: acked.append((name, mid))
    subs.ack(7)
    subs.ack(MID_OFFSET + 7)
    assert acked == [("fiberwatch-ingest", 7), ("fiberwatch-ingest-features", 7)]


@pytest.mark.parametrize("bad", [{"share_group": ""}, {"share_group": "a/b"},
                                 {"share_group": "+"}, {"primary": False}])
def test_bad_scale_out_settings(bad: dict) -> None:
    with pytest.raises(ValueError):
        IngestSettings(**bad)


def test_children_get_own_ids_the_group_and_one_primary() -> None:
    argv = ["--mqtt-port", "1999", "--workers", "3", "--client-id", "ing", "--stats-file",
            "/tmp/s", "--log-level=INFO"]
    args = parser().parse_args(argv)
    rest = _passthrough(argv)
    assert rest == ["--mqtt-port", "1999", "--log-level=INFO"]
    kids = [child_argv(args, rest, i) for i in range(3)]
    assert kids[0] == [*rest, "--client-id", "ing-0", "--share-group", "fiberwatch-ingest",
                       "--stats-file", "/tmp/s.0"]
    assert kids[2] == [*rest, "--client-id", "ing-2", "--share-group", "fiberwatch-ingest",
                       "--no-primary", "--stats-file", "/tmp/s.2"]
    for k in kids:  # each child's flags parse, and it runs one process
        assert parser().parse_args(k).workers == 1


def test_a_launcher_that_is_not_primary_makes_no_primary() -> None:
    argv = ["--workers", "2", "--no-primary", "--share-group", "grp"]
    args = parser().parse_args(argv)
    assert all("--no-primary" in child_argv(args, _passthrough(argv), i) for i in range(2))
    assert all("grp" in child_argv(args, _passthrough(argv), i) for i in range(2))



def test_a_primary_without_features_has_one_persistent_connection() -> None:
    (c,) = connections(IngestSettings(client_id="ingest", share_group="g", features=False))
    assert c.persistent and c.client_id == "ingest"
    assert not any("features" in f for f in c.filters)
    with pytest.raises(ValueError, match="share_group"):
        IngestSettings(features=False)
    with pytest.raises(ValueError, match="nothing"):
        IngestSettings(share_group="g", primary=False, features=False)
    args = parser().parse_args(["--no-features", "--share-group", "g"])
    assert args.features is False


def test_worker_logins_start_a_featureless_primary_and_workers_with_their_own_files(
        tmp_path: Path) -> None:
    from cloud.ingest.workers import process_count, worker_credentials
    from edge_agent.config import BrokerConfig

    clients = tmp_path / "clients"
    for u in ("ingest", "ingest-f1", "ingest-f2"):
        (clients / u).mkdir(parents=True)
        (clients / u / "password").write_text("pw")
    base = BrokerConfig(username="ingest", password_file=clients / "ingest" / "password")
    args = parser().parse_args(["--workers", "2", "--worker-logins"])
    args.client_id, args.logins = "ingest", worker_credentials(base, 2)
    assert process_count(args) == 3
    primary, w1, w2 = (child_argv(args, ["--mqtt-username", "ingest"], i) for i in range(3))
    assert "--no-features" in primary and "--no-primary" not in primary
    assert w2[-5:] == ["--mqtt-username", "ingest-f2", "--mqtt-password-file",
                       str(clients / "ingest-f2" / "password"), "--no-primary"]
    assert "--no-features" not in w1 and "ingest-f1" in w1
    args.primary = False  # another machine's launcher: feature workers only
    assert process_count(args) == 2 and "ingest-f1" in child_argv(args, [], 0)
    with pytest.raises(ValueError, match="ingest-f3"):
        worker_credentials(base, 3)
    with pytest.raises(ValueError, match="password-file"):
        worker_credentials(BrokerConfig(username="ingest"), 2)


def test_the_worker_unit_runs_a_feature_worker_with_its_own_login() -> None:
    """deploy/systemd/fiberwatch-ingest-worker@.service: its ExecStart parses, instance 2."""
    import shlex

    unit = (Path(__file__).resolve().parents[2] / "deploy" / "systemd"
            / "fiberwatch-ingest-worker@.service").read_text()
    cmd = unit.split("ExecStart=", 1)[1].split("\n#", 1)[0].replace("\\\n", " ")
    cmd = (cmd.replace("%i", "2").replace("%S", "/var/lib").replace("$FIBERWATCH_INGEST_ARGS",
           "--mqtt-host m --influx-url http://i:8086").replace("${FIBERWATCH_SHARE_GROUP}", "g"))
    argv = shlex.split(cmd)
    assert argv[1:3] == ["cloud", "ingest"]
    args = parser().parse_args(argv[3:])
    assert not args.primary and args.share_group == "g" and args.mqtt_username == "ingest-f2"
    assert str(args.mqtt_password_file) == "/etc/fiberwatch/clients/ingest-f2/password"


def test_acks_of_a_batch_go_to_their_connections_in_order() -> None:
    subs = Subscribers(IngestSettings(client_id="fiberwatch-ingest", share_group="g"),
                       Buffer(1 << 20), IngestStats())
    acked: list[tuple[str, list[int]]] = []
    for p in subs.parts:
        p.client.ack_many = lambda mids, name=p.conn.client_id: acked.append((name, mids))
    subs.ack_many([3, MID_OFFSET + 9, 4, MID_OFFSET + 1])
    assert sorted(acked) == [("fiberwatch-ingest", [3, 4]), ("fiberwatch-ingest-features", [9, 1])]
