"""Shared-subscription settings and the `--workers` launcher's per-process flags."""

from __future__ import annotations

import pytest

from cloud.ingest.config import IngestSettings
from cloud.ingest.mqtt import subscriptions
from cloud.ingest.service import _passthrough, parser
from cloud.ingest.workers import child_argv


def test_subscriptions_of_primary_and_shared_workers() -> None:
    assert subscriptions(IngestSettings()) == [
        "fiberwatch/v1/+/+/features/+", "fiberwatch/v1/+/+/events", "fiberwatch/v1/+/+/health",
        "fiberwatch/v1/+/+/model_state"]
    first = subscriptions(IngestSettings(share_group="g"))[0]
    assert first == "$share/g/fiberwatch/v1/+/+/features/+"
    assert subscriptions(IngestSettings(share_group="g", primary=False)) == [
        "$share/g/fiberwatch/v1/+/+/features/+"]


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

