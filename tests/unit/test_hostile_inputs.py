"""Issue 12: hostile files give typed errors naming what is wrong, never a traceback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from edge_agent import topics
from edge_agent.config import ConfigError, load_gateway_config
from edge_agent.events import EventError
from edge_agent.features import FeatureSpec, FeatureSpecError
from edge_agent.offline import InputError, read_csv
from edge_agent.package import FORMAT, HEADER, MAGIC, PackageError, read_package, split
from edge_agent.summary import FeatureSummary, SummaryError
from federation.registry.package import build_package
from fiberwatch.cli import main
from firmware_configs import GATEWAYS

SPEC = FeatureSpec(profile="dts", sample_rate_hz=1.0, window_s=8.0, hop_s=4.0)


def _package() -> bytes:
    d = SPEC.dim
    q = {"dtype": "int8", "scale": 0.05, "zero_point": 0}
    return build_package(
        tflite=bytes(range(256)), spec=SPEC, mean=np.zeros(d), std=np.ones(d),
        error_scale=np.ones(d), input_quant=q, output_quant=q,
        threshold={"quantiles": {"0.5": 1.0, "0.999": 4.0}}, version="t-1", parent="t-0",
        training={"rows": 10}, private_key=None)


def _raw_package(manifest_json: bytes, model: bytes) -> bytes:
    """A package whose manifest bytes are exactly ``manifest_json`` (pack() refuses inf)."""
    header = HEADER.pack(MAGIC, FORMAT, b"\0\0\0", len(manifest_json), len(model), 0)
    return header + manifest_json + model


@pytest.mark.parametrize("value", ["Infinity", "NaN", "1e300", '"1.0"', "true", "1e999"])
def test_a_package_with_a_hostile_window_s_is_a_package_error(value: str) -> None:
    _, man, model, _ = split(_package())
    manifest = json.loads(man)
    manifest["feature_spec"]["window_s"] = "@@"
    blob = json.dumps(manifest).replace('"@@"', value).encode()
    with pytest.raises(PackageError) as exc:
        read_package(_raw_package(blob, model), None)
    assert exc.value.reason == "manifest"


def test_a_deeply_nested_manifest_is_a_package_error() -> None:
    _, _, model, _ = split(_package())
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(PackageError) as exc:
        read_package(_raw_package(deep, model), None)
    assert exc.value.reason == "manifest"


@pytest.mark.parametrize("payload", [b"[" * 100_000, b'{"a":' * 50_000], ids=["arrays", "objects"])
def test_deep_json_events_and_summaries_are_typed_errors(payload: bytes) -> None:
    from edge_agent.events import Event

    with pytest.raises(EventError):
        Event.from_json(payload)
    with pytest.raises(SummaryError):
        FeatureSummary.from_json(payload)


def test_feature_spec_rejects_non_finite_and_oversized_values() -> None:
    for kw in ({"window_s": float("inf")}, {"sample_rate_hz": float("inf")},
               {"window_s": 1e300}, {"hop_s": float("nan")}, {"context_radius": 10**9}):
        with pytest.raises(FeatureSpecError):
            FeatureSpec(**kw)


def _gateway_toml(tmp_path: Path, old: str, new: str) -> Path:
    text = (GATEWAYS / "well-a.toml").read_text()
    assert old in text
    p = tmp_path / "gw.toml"
    p.write_text(text.replace(old, new, 1))
    return p


@pytest.mark.parametrize(("old", "new", "field"), [
    ("sample_rate_hz = 2000.0", "sample_rate_hz = inf", "streams.0.sample_rate_hz"),
    ("sample_rate_hz = 2000.0", "sample_rate_hz = nan", "streams.0.sample_rate_hz"),
    ("window_s = 1.0", "window_s = 1e300", "streams.0.window_s"),
    ("history_windows = 2000", "history_windows = 100000000000000", "threshold.history_windows"),
])
def test_hostile_gateway_numbers_name_the_field_and_the_file(tmp_path: Path, old: str, new: str,
                                                             field: str, capsys) -> None:
    p = _gateway_toml(tmp_path, old, new)
    with pytest.raises(ConfigError) as exc:
        load_gateway_config(p)
    assert f"{p}: {field}:" in str(exc.value)
    assert main(["config", "check", str(p)]) == 1
    out = capsys.readouterr()
    assert f"{p}: {field}:" in out.out + out.err
    assert "Traceback" not in out.out + out.err


@pytest.mark.parametrize("name", ["demo\n", "demo\n\n", "a/b", "", "x" * 65, "a+", "a#"])
def test_check_name_refuses_names_that_are_not_one_topic_level(name: str) -> None:
    with pytest.raises(ValueError):
        topics.check_name(name)


def test_a_gateway_id_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    text = (GATEWAYS / "well-a.toml").read_text()
    m = re.search(r'^id = "([^"]+)"', text, re.M)
    assert m
    p = tmp_path / "gw.toml"
    p.write_text(text.replace(m.group(0), f'id = "{m.group(1)}\\n"'))
    with pytest.raises(ConfigError, match="gateway.id"):
        load_gateway_config(p)


@pytest.mark.parametrize("t", ["inf", "-inf", "nan", "1e12", "-1e12", "9999-01-01T00:00:00"])
def test_csv_times_out_of_range_are_input_errors(tmp_path: Path, t: str) -> None:
    p = tmp_path / "x.csv"
    p.write_text(f"time,a,b\n0,1,2\n{t},1,2\n")
    with pytest.raises(InputError, match="line 3"):
        read_csv(p)


@pytest.mark.parametrize("key", ["spacing_m", "frame_s", "dts_interval_s", "seconds",
                                 "das_scale", "gauge_m", "flow", "surface_per_min"])
@pytest.mark.parametrize("value", [float("inf"), 1e300])
def test_simulator_schedule_numbers_are_bounded(tmp_path: Path, key: str, value: float) -> None:
    from sensors_sim import ConfigError as SimConfigError
    from sensors_sim import load_schedule

    p = tmp_path / "s.toml"
    p.write_text(f"{key} = {'inf' if value == float('inf') else value!r}\n")
    with pytest.raises(SimConfigError, match=key):
        load_schedule(p)


@pytest.mark.parametrize("table", ['gateways = [1]', 'scenario = "x"',
                                   '[[scenario]]\nkind = "leak"\nonset = 1.0\nduration = 2.0\n'
                                   'channel = 10\nintensity = "x"'])
def test_simulator_schedule_shapes_are_config_errors(tmp_path: Path, table: str) -> None:
    from sensors_sim import ConfigError as SimConfigError
    from sensors_sim import load_schedule

    p = tmp_path / "s.toml"
    p.write_text(table + "\n")
    with pytest.raises(SimConfigError):
        load_schedule(p)


@pytest.mark.parametrize(("key", "value"), [("site", 5), ("gateway", ""), ("model_version", []),
                                            ("t_ns", 10**30), ("t_ns", "1"), ("score", "abc"),
                                            ("flagged", ["x"])])
def test_a_summary_with_a_hostile_field_is_a_summary_error(key: str, value: object) -> None:
    ok = FeatureSummary(site="s", gateway="g", stream="das", t_ns=1, ch_start=0, group_size=4,
                        score=[1.0], energy=[1.0], threshold=[0.5], model_version="v")
    d = json.loads(ok.to_json())
    d[key] = value
    with pytest.raises(SummaryError):
        FeatureSummary.from_json(json.dumps(d))
