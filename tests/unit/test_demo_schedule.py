"""The demo's schedule options: a benign valve on one gateway (issue 16's recurring false
alarm) and the repeated leak; the simulator reads what the demo writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fiberwatch.demo import DemoOptions, _extra_scenarios, parse_valve, repeated_leaks
from fiberwatch.demo_setup import DemoLayout, write_gateway_configs, write_schedule
from sensors_sim.schedule import load_schedule


def test_parse_valve() -> None:
    assert parse_valve("well-a:40-47") == ("well-a", 40, 47)
    for bad in ("well-a", "well-a:47-40", "nowhere:1-2", "well-a:1-x", "well-a:-1-2"):
        with pytest.raises(ValueError):
            parse_valve(bad)


def test_the_valve_and_the_repeated_leak_reach_the_simulator(tmp_path: Path) -> None:
    layout = DemoLayout(tmp_path)
    configs = write_gateway_configs(layout, broker_port=1883, superlink="127.0.0.1:9092",
                                    channels=64, package=None)
    opts = DemoOptions(channels=64, valve="well-b:8-15", valve_onset_s=12.0,
                       valve_period_s=9.0, leak_channel=20, leak_onset_s=40.0,
                       leak_every_s=25.0)
    write_schedule(layout, configs, seconds=None, leak_channel=20, leak_onset=40.0,
                   extra=_extra_scenarios(opts))
    runs = {c.gateway: c for c in load_schedule(layout.schedule).configs}
    (valve,) = [s for s in runs["well-b"].scenarios if s.kind == "valve"]
    assert (valve.onset, valve.ch_start, valve.ch_end) == (12.0, 8, 15)
    assert (valve.param("period"), valve.param("on")) == (9.0, 2.0)
    leaks = [s.onset for s in runs["well-a"].scenarios if s.kind == "leak"]
    assert leaks[:4] == [40.0, 80.0, 105.0, 130.0]  # the first, then every 25 s after 40 s
    assert all(s.kind != "valve" for s in runs["well-a"].scenarios)


def test_repeated_leaks_move_to_fresh_channels_clear_of_the_valve() -> None:
    opts = DemoOptions(channels=64, valve="well-a:40-47", leak_channel=12, leak_onset_s=40.0,
                       leak_every_s=30.0)
    leaks = repeated_leaks(opts)
    assert [t for t, _ in leaks[:3]] == [80.0, 110.0, 140.0]
    chans = [c for _, c in leaks]
    assert chans[:4] == [20, 28, 12, 20] and all(not 32 <= c <= 55 for c in chans)
    assert all(6 <= c < 58 for c in chans)
    assert repeated_leaks(DemoOptions(channels=64)) == []
