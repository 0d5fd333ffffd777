"""The gateway's feature threads and the stream's feature spec version are config fields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge_agent.config import GatewayConfig, default_feature_threads

BASE = {"gateway": {"site": "s", "id": "g", "data_dir": "/tmp/x"},
        "model": {"allow_unsigned": True},
        "streams": [{"kind": "das", "channels": 64, "sample_rate_hz": 2000.0,
                     "window_s": 1.0, "hop_s": 0.5}]}


def test_defaults_the_cores_up_to_4_and_version_3(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = GatewayConfig.model_validate(BASE)
    assert cfg.processing.feature_threads == default_feature_threads()
    assert cfg.streams[0].feature_spec().version == 3
    for cores, want in ((1, 1), (2, 2), (3, 3), (4, 4), (8, 4), (64, 4), (None, 1)):
        monkeypatch.setattr("os.cpu_count", lambda c=cores: c)
        assert default_feature_threads() == want


def test_explicit_threads_and_version_1() -> None:
    cfg = GatewayConfig.model_validate({**BASE, "processing": {"feature_threads": 3},
                                        "streams": [{**BASE["streams"][0], "hop_s": 0.3,
                                                     "feature_version": 1}]})
    assert cfg.processing.feature_threads == 3
    assert cfg.streams[0].feature_spec().version == 1


@pytest.mark.parametrize("bad", [{"processing": {"feature_threads": 0}},
                                 {"streams": [{**BASE["streams"][0], "hop_s": 0.3}]},
                                 {"streams": [{**BASE["streams"][0], "feature_version": 4}]}])
def test_bad_values_name_the_field(bad: dict) -> None:
    with pytest.raises(ValidationError) as e:
        GatewayConfig.model_validate({**BASE, **bad})
    assert any(k in str(e.value) for k in ("feature_threads", "whole hops", "feature_version"))


def test_summary_format_defaults_to_packed() -> None:
    assert GatewayConfig.model_validate(BASE).uplink.summary_format == "packed"
    cfg = GatewayConfig.model_validate({**BASE, "uplink": {"summary_format": "json"}})
    assert cfg.uplink.summary_format == "json"
    with pytest.raises(ValidationError, match="summary_format"):
        GatewayConfig.model_validate({**BASE, "uplink": {"summary_format": "msgpack"}})
