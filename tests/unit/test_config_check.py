"""Bad configs give one line per problem that names the file and the field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from firmware_configs import GATEWAYS, INTERROGATORS
from firmware_configs.schema import (
    ConfigError,
    InterrogatorConfig,
    check_file,
    check_files,
    load_interrogator_config,
)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A copy of the shipped layout: gateways/ and interrogators/ side by side."""
    shutil.copytree(GATEWAYS, tmp_path / "gateways")
    shutil.copytree(INTERROGATORS, tmp_path / "interrogators")
    return tmp_path


def edit(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))
    return path


def only_problem(path: Path) -> str:
    problems = check_file(path)
    assert len(problems) == 1, problems
    line = problems[0]
    assert "\n" not in line
    assert line.startswith(f"{path}: ")
    return line.removeprefix(f"{path}: ")


# --- one file on its own -------------------------------------------------------------------


def test_wrong_type(site: Path) -> None:
    f = edit(site / "gateways/well-b.toml", "channels = 1024", 'channels = "many"')
    msg = only_problem(f)
    assert msg.startswith("streams.0.channels: Input should be a valid integer")
    assert "'many'" in msg


def test_missing_field(site: Path) -> None:
    f = edit(site / "gateways/well-b.toml", 'id = "well-b"\n', "")
    assert only_problem(f) == "gateway.id: required field is missing"


def test_out_of_range(site: Path) -> None:
    f = edit(site / "gateways/well-b.toml", "port = 8883", "port = 70000")
    assert only_problem(f).startswith("broker.port: Input should be less than or equal to 65535")


def test_unknown_field(site: Path) -> None:
    f = edit(site / "interrogators/das-well-b.toml", "spacing_m = 2.0\n",
             'spacing_m = 2.0\ncolour = "red"\n')
    assert only_problem(f).startswith("stream.colour: unknown field")


def test_unknown_table(site: Path) -> None:
    f = edit(site / "gateways/well-b.toml", "[outbox]", "[outbx]")
    assert only_problem(f).startswith("outbx: unknown field")


def test_toml_syntax_error_names_the_line(site: Path) -> None:
    f = site / "gateways/broken.toml"
    f.write_text('[gateway]\nsite = "demo"\nid = \n')
    msg = only_problem(f)
    assert msg.startswith("line 3, column ")
    assert "invalid TOML" in msg


def test_hop_longer_than_window(site: Path) -> None:
    f = edit(site / "gateways/well-b.toml", "hop_s = 0.5", "hop_s = 2.0")
    assert only_problem(f).startswith("streams.0.hop_s: hop_s must not exceed window_s")


def test_unknown_kind(site: Path) -> None:
    f = site / "gateways/other.toml"
    f.write_text("[something]\nx = 1\n")
    assert only_problem(f).startswith("(top level): no [interrogator] or [gateway] table")


def test_both_kinds(site: Path) -> None:
    f = site / "gateways/both.toml"
    f.write_text('[gateway]\nid = "x"\n[interrogator]\nid = "y"\n')
    assert only_problem(f).startswith("(top level): both [interrogator] and [gateway] table")


def test_missing_file(tmp_path: Path) -> None:
    assert check_file(tmp_path / "nope.toml") == [f"{tmp_path / 'nope.toml'}: file not found"]


def test_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "latin1.toml"
    f.write_bytes(b'[gateway]\nsite = "d\xe9mo"\n')
    assert check_file(f) == [f"{f}: not UTF-8 text (byte 19)"]


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        ("dts-well-a", "sample_rate_hz = 1.0", "sample_rate_hz = 10.0",
         "stream.sample_rate_hz: a DTS samples at most 1 Hz"),
        ("dts-well-a", "frame_samples = 1 ", "gauge_length_m = 5.0\nframe_samples = 1 ",
         "stream.gauge_length_m: only a DAS has a gauge length"),
        ("das-well-b", "gauge_length_m = 10.0\n", "",
         "stream.gauge_length_m: required for a DAS stream"),
        ("das-well-b", "gauge_length_m = 10.0", "gauge_length_m = 1.0",
         "stream.gauge_length_m: 1 m is shorter than spacing_m 2 m"),
        ("das-well-b", "length_m = 2400.0", "length_m = 2000.0",
         "stream.channels: channels 0..1023 at 2 m reach 2048 m, beyond fiber.length_m 2000 m"),
        ("dts-well-a", "scale = 1.0", "scale = 0.5",
         "stream.scale: applies to int16 frames only"),
        ("das-well-b", "port = 8883", 'port = 8883\ntopic = "fiberwatch/v1/demo/well-a/raw/das"',
         "mqtt.topic: 'fiberwatch/v1/demo/well-a/raw/das' is not where gateway 'well-b' listens"),
        ("das-well-b", 'site = "demo"', 'site = "de mo"',
         "interrogator.site: site 'de mo' must match"),
        ("das-well-b", "frame_samples = 100", "frame_samples = 40000",
         "stream.frame_samples: 40000 x 1024 channels of int16 is 81920000 bytes"),
        ("das-well-b", "spacing_m = 2.0", "spacing_m = nan", "stream.spacing_m: "),
        ("dts-well-a", "fiber_offset_m = 0.0", "fiber_offset_m = inf",
         "stream.fiber_offset_m: must be a finite number"),
        ("das-well-b", 'kind = "das"', 'kind = "otdr"',
         "stream.kind: Input should be 'das' or 'dts' (got 'otdr')"),
    ],
)
def test_interrogator_rules(site: Path, file: str, old: str, new: str, expected: str) -> None:
    f = edit(site / f"interrogators/{file}.toml", old, new)
    assert only_problem(f).startswith(expected)


def test_cross_field_problems_are_reported_together(site: Path) -> None:
    f = edit(site / "interrogators/dts-well-a.toml", "sample_rate_hz = 1.0",
             "sample_rate_hz = 5.0\ngauge_length_m = 5.0")
    edit(f, "scale = 1.0", "scale = 2.0")
    fields = [p.split(": ")[1] for p in check_file(f)]
    assert fields == ["stream.sample_rate_hz", "stream.gauge_length_m", "stream.scale"]


def test_load_interrogator_config_raises_with_the_problems(site: Path) -> None:
    f = edit(site / "interrogators/das-well-b.toml", "channels = 1024", "channels = 0")
    with pytest.raises(ConfigError, match=r"das-well-b.toml: stream.channels: Input should be"):
        load_interrogator_config(f)
    with pytest.raises(ConfigError, match="a gateway config, not an interrogator config"):
        load_interrogator_config(site / "gateways/well-a.toml")
    cfg = load_interrogator_config(site / "interrogators/das-well-a.toml")
    assert isinstance(cfg, InterrogatorConfig) and cfg.stream.frame_bytes == 100 * 1024 * 2


# --- across files --------------------------------------------------------------------------


def test_gateway_stream_must_match_its_interrogator(site: Path) -> None:
    f = edit(site / "gateways/well-b.toml", "channels = 1024", "channels = 1000")
    msg = only_problem(f)
    assert msg.startswith("streams.0.channels: 1000 here, but interrogator 'das-well-b' (")
    assert msg.endswith("sends stream.channels = 1024")


def test_gateway_sample_rate_must_match(site: Path) -> None:
    f = edit(site / "gateways/well-a.toml", "sample_rate_hz = 1.0", "sample_rate_hz = 0.5")
    assert only_problem(f).startswith("streams.1.sample_rate_hz: 0.5 here, but interrogator "
                                      "'dts-well-a'")


def test_interrogator_of_another_gateway(site: Path) -> None:
    f = edit(site / "gateways/well-b.toml", 'interrogator = "das-well-b"',
             'interrogator = "das-well-a"')
    assert only_problem(f).startswith(
        "streams.0.interrogator: interrogator 'das-well-a' (")
    assert "feeds gateway 'well-a' at site 'demo', not 'well-b' at 'demo'" in check_file(f)[0]


def test_interrogator_whose_gateway_has_no_such_stream(site: Path) -> None:
    f = site / "interrogators/dts-well-b.toml"
    f.write_text((site / "interrogators/dts-well-a.toml").read_text()
                 .replace('"dts-well-a"', '"dts-well-b"').replace('"well-a"', '"well-b"'))
    assert only_problem(f).startswith("interrogator.gateway: gateway 'well-b' (")
    assert check_file(f)[0].endswith("has no dts stream: nothing would take these frames")


def test_interrogator_the_gateway_does_not_take(site: Path) -> None:
    f = site / "interrogators/das-well-a-spare.toml"
    f.write_text((site / "interrogators/das-well-a.toml").read_text()
                 .replace('id = "das-well-a"', 'id = "das-well-a-spare"'))
    assert only_problem(f).endswith(
        "takes its das stream from interrogator 'das-well-a', not 'das-well-a-spare'")


def test_cross_check_uses_the_files_of_the_run(tmp_path: Path) -> None:
    """Files in unrelated folders are compared when they are checked together."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    gw = shutil.copy(GATEWAYS / "well-b.toml", tmp_path / "a/gw.toml")
    ir = shutil.copy(INTERROGATORS / "das-well-b.toml", tmp_path / "b/ir.toml")
    edit(Path(ir), "sample_rate_hz = 2000.0", "sample_rate_hz = 1800.0")
    assert check_file(gw) == []  # alone: the interrogator is not at hand
    gw_result, ir_result = check_files([gw, ir])
    assert ir_result.ok
    assert [p.split(": ")[1] for p in gw_result.problems] == ["streams.0.sample_rate_hz"]


def test_duplicate_ids_in_one_run(site: Path) -> None:
    copy = shutil.copy(site / "interrogators/das-well-b.toml", site / "das-well-b-copy.toml")
    first, second = check_files([site / "interrogators/das-well-b.toml", copy])
    assert first.ok
    assert second.problems == [
        f"{copy}: interrogator.id: 'das-well-b' is also the id in "
        f"{site / 'interrogators/das-well-b.toml'}"
    ]


def test_a_lone_gateway_is_valid(tmp_path: Path) -> None:
    """A deployed gateway's /etc/fiberwatch/NAME.toml has no interrogator files beside it."""
    f = shutil.copy(GATEWAYS / "well-a.toml", tmp_path / "well-a.toml")
    assert check_file(f) == []


def test_an_invalid_neighbour_is_not_reported_against_the_checked_file(site: Path) -> None:
    (site / "interrogators/junk.toml").write_text("not toml at all [")
    assert check_file(site / "gateways/well-a.toml") == []
