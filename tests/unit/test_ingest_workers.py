"""Shared-subscription settings and the `--workers` launcher's per-process flags."""

from __future__ import annotations

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
