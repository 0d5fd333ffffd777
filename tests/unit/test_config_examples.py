"""Every shipped firmware config validates, and the demo site has the shape the demo expects."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_configs import ALERTS, BRIDGES, GATEWAYS, INTERROGATORS, ROOT
from firmware_configs.schema import (
    GatewayConfig,
    InterrogatorConfig,
    check_file,
    check_files,
    load_gateway_config,
    load_interrogator_config,
)

EXAMPLES = sorted(ROOT.rglob("*.toml"))
GATEWAY_FILES = sorted(GATEWAYS.glob("*.toml"))
INTERROGATOR_FILES = sorted(INTERROGATORS.glob("*.toml"))
BRIDGE_FILES = sorted(BRIDGES.glob("*.toml"))


def test_the_demo_site_is_shipped() -> None:
    assert [p.stem for p in GATEWAY_FILES] == ["pipeline-1", "well-a", "well-b"]
    assert {p.stem for p in INTERROGATOR_FILES} >= {
        "das-well-a", "dts-well-a", "das-well-b", "das-pipeline-1"
    }
    assert set(EXAMPLES) == (set(GATEWAY_FILES) | set(INTERROGATOR_FILES) | set(BRIDGE_FILES)
                             | set(ALERTS.glob("*.toml")))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_validates(path: Path) -> None:
    assert check_file(path) == []


def test_examples_validate_together() -> None:
    results = check_files(EXAMPLES)
    assert [r.problems for r in results if not r.ok] == []
    assert {r.kind for r in results} == {"gateway", "interrogator", "bridge", "alerting"}


@pytest.mark.parametrize("path", GATEWAY_FILES, ids=lambda p: p.stem)
def test_gateway_example_loads_like_the_agent(path: Path) -> None:
    cfg = load_gateway_config(path)
    assert isinstance(cfg, GatewayConfig)
    assert cfg.gateway.id == path.stem
    assert (cfg.broker.host, cfg.broker.port, cfg.broker.tls) == ("127.0.0.1", 8883, True)
    assert cfg.broker.username == f"demo.{path.stem}" and cfg.broker.password_env is not None
    das = cfg.stream("das")
    assert das is not None
    assert (das.sample_rate_hz, das.window_s, das.hop_s) == (2000.0, 1.0, 0.5)
    assert das.channels == (2048 if path.stem.startswith("pipeline") else 1024)
    # relative in the file, resolved against the file's folder by the loader
    assert cfg.gateway.data_dir.is_absolute()
    assert cfg.gateway.data_dir.name == path.stem


def test_gateway_examples_share_one_site_and_name_their_interrogators() -> None:
    cfgs = [load_gateway_config(p) for p in GATEWAY_FILES]
    assert {c.gateway.site for c in cfgs} == {"demo"}
    ids = {p.stem for p in INTERROGATOR_FILES}
    for cfg in cfgs:
        for stream in cfg.streams:
            assert stream.interrogator in ids


@pytest.mark.parametrize("path", INTERROGATOR_FILES, ids=lambda p: p.stem)
def test_interrogator_example_loads(path: Path) -> None:
    cfg = load_interrogator_config(path)
    assert isinstance(cfg, InterrogatorConfig)
    assert cfg.id == path.stem
    assert cfg.topic == f"fiberwatch/v1/demo/{cfg.interrogator.gateway}/raw/{cfg.stream.kind}"


def test_one_feature_spec_per_stream_kind_across_the_site() -> None:
    """A model package names the feature spec it was built for: one DAS model fits all three."""
    cfgs = [load_gateway_config(p) for p in GATEWAY_FILES]
    for kind in ("das", "dts"):
        hashes = {s.feature_spec().hash for c in cfgs for s in c.streams if s.kind == kind}
        assert len(hashes) == 1, kind
