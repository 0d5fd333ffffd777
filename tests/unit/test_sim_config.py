"""Scenario specs, schedule files and configuration validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sensors_sim import (
    ConfigError,
    Scenario,
    SimConfig,
    config_from_dict,
    load_schedule,
    parse_scenario,
)


def test_parse_scenario_reads_fields_ranges_streams_and_params() -> None:
    sc = parse_scenario("leak:onset=10,duration=20,channel=300,intensity=1.5,spread=6")
    assert sc == Scenario("leak", 10.0, 20.0, channel=300, intensity=1.5,
                          params={"spread": 6.0})
    sc = parse_scenario("dead:onset=1,duration=2,channels=5-9,stream=both")
    assert (sc.ch_start, sc.ch_end, sc.affected_streams) == (5, 9, ("das", "dts"))
    assert parse_scenario("slug:onset=0,duration=1").param("period") == 3.0


@pytest.mark.parametrize(("spec", "match"), [
    ("leak", "KIND:key=value"),
    ("boil:onset=1,duration=2", "unknown anomaly kind 'boil'"),
    ("leak:onset=1", "needs 'duration'"),
    ("leak:onset=1,duration=0", "duration must be > 0"),
    ("leak:onset=-1,duration=1", "onset must be >= 0"),
    ("leak:onset=1,duration=1,intensity=0", "intensity"),
    ("leak:onset=1,duration=1,channel=2.5", "integer"),
    ("leak:onset=1,duration=1,period=3", "leak has no parameter 'period'"),
    ("dead:onset=1,duration=1,channels=9-5", "not a valid range"),
    ("dead:onset=1,duration=1,channels=9", "START-END"),
    ("dead:onset=1,duration=1,stream=sound", "streams"),
    ("leak:onset=1,duration=1,channel", "key=value"),
    ("leak:onset=x,duration=1", "scenario"),
])
def test_bad_scenarios_name_the_problem(spec, match) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_scenario(spec)


@pytest.mark.parametrize(("kw", "match"), [
    ({"site": "a/b"}, "site"),
    ({"gateway": "+"}, "gateway"),
    ({"channels": 2}, "channels"),
    ({"frame_s": 0.0333}, "whole number"),
    ({"das_dtype": "int8"}, "das_dtype"),
    ({"geometry": "ocean"}, "geometry"),
    ({"streams": ()}, "streams"),
    ({"scenarios": (Scenario("leak", 40.0, 1.0, channel=3),)}, "after the end"),
    ({"scenarios": (Scenario("dead", 1.0, 1.0, ch_start=3, ch_end=4096),)}, "off the fiber"),
])
def test_config_validation(kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        SimConfig(**kw)


TOML_ONE = """
seed = 7
site = "well-z"
gateway = "gw9"
channels = 256
seconds = 12

[[scenario]]
kind = "leak"
onset = 2
duration = 5
channel = 100

[[scenario]]
kind = "sand"
onset = 3
duration = 4
channels = "200-210"
rate = 100
"""

TOML_FLEET = """
seed = 3
seconds = 10
channels = 128

[[gateways]]
site = "well-a"
gateway = "gw1"

[[gateways.scenario]]
kind = "dead"
onset = 1
duration = 2
ch_start = 4
ch_end = 6

[[gateways]]
site = "pipe"
gateway = "gw3"
geometry = "pipeline"
channels = 512
"""


def test_single_gateway_toml_schedule(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(TOML_ONE)
    sched = load_schedule(path)
    assert sched.seed == 7
    (cfg,) = sched.configs
    assert (cfg.site, cfg.gateway, cfg.channels, cfg.seconds) == ("well-z", "gw9", 256, 12)
    assert [s.kind for s in cfg.scenarios] == ["leak", "sand"]
    assert cfg.scenarios[1].param("rate") == 100.0


def test_fleet_schedule_shares_top_level_settings(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(TOML_FLEET)
    a, p = load_schedule(path).configs
    assert (a.channels, a.seconds, len(a.scenarios)) == (128, 10, 1)
    assert (p.channels, p.geometry, p.scenarios) == (512, "pipeline", ())


def test_json_schedule_equals_toml(tmp_path: Path) -> None:
    import tomllib

    (tmp_path / "run.json").write_text(json.dumps(tomllib.loads(TOML_ONE)))
    (tmp_path / "run.toml").write_text(TOML_ONE)
    assert load_schedule(tmp_path / "run.json") == load_schedule(tmp_path / "run.toml")


@pytest.mark.parametrize(("text", "suffix", "match"), [
    ("channels = ", ".toml", "not valid"),
    ("[1, 2]", ".json", "table/object"),
    ("colour = 'red'", ".toml", "unknown setting 'colour'"),
    ("seed = 'x'", ".toml", "seed must be an integer"),
    ("gateways = []", ".toml", "non-empty list"),
    ("[[gateways]]\nsite='a'\n[[gateways]]\nsite='a'", ".toml", "same site and gateway"),
    ("[[scenario]]\nkind='leak'\nonset=1\nduration=1\n[[gateways]]\nsite='a'", ".toml",
     "gateways.scenario"),
    ("[[pump]]\nchannel = 3\nf0 = 900\nharmonics = 4", ".toml", "Nyquist"),
    ("[[pump]]\nchannel = 3\nfreq = 9", ".toml", "bad setting"),
])
def test_bad_schedules_name_the_problem(tmp_path: Path, text, suffix, match) -> None:
    path = tmp_path / f"s{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_schedule(path)


def test_missing_schedule_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read schedule"):
        load_schedule(tmp_path / "nope.toml")


def test_config_from_dict_builds_pumps() -> None:
    cfg = config_from_dict({"channels": 64, "pump": [{"channel": 10, "f0": 50.0}]})
    assert cfg.pumps is not None and cfg.pumps[0].f0 == 50.0
