"""`fiberwatch sim` without a broker: help, record, info, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent import wire
from fiberwatch.cli import main
from fiberwatch.services import free_port
from sensors_sim import read_frames, read_labels, read_meta


@pytest.mark.parametrize("argv", [["sim"], ["sim", "run"], ["sim", "record"],
                                  ["sim", "replay"], ["sim", "info"]])
def test_help_everywhere(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    assert "usage: fiberwatch sim" in capsys.readouterr().out


def test_record_writes_frames_and_labels_beside_them(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run.fwrec"
    rc = main(["sim", "record", "--out", str(out), "--channels", "64", "--seconds", "2",
               "--seed", "5", "--scenario", "leak:onset=0.5,duration=1,channel=30",
               "--scenario", "dead:onset=1,duration=0.5,channels=3-4",
               "--labels", str(tmp_path / "all.jsonl")])
    assert rc == 0
    assert f"recorded: {out} frames=42" in capsys.readouterr().out
    frames = [wire.decode(f) for f in read_frames(out)]
    assert {f.n_channels for f in frames} == {64} and len(frames) == 42
    labels = read_labels(tmp_path / "run.labels.jsonl")
    assert [lb.kind for lb in labels] == ["leak", "dead"]
    assert read_labels(tmp_path / "all.jsonl") == labels
    assert read_meta(out)["seed"] == 5


def test_record_is_reproducible(tmp_path: Path) -> None:
    args = ["sim", "record", "--channels", "32", "--seconds", "1", "--seed", "2",
            "--scenario", "sand:onset=0.2,duration=0.5,channels=3-9"]
    assert main([*args, "--out", str(tmp_path / "a.fwrec")]) == 0
    assert main([*args, "--out", str(tmp_path / "b.fwrec")]) == 0
    assert (tmp_path / "a.fwrec").read_bytes() == (tmp_path / "b.fwrec").read_bytes()


def test_record_fleet_schedule_needs_placeholders(tmp_path: Path, capsys) -> None:
    sched = tmp_path / "f.toml"
    sched.write_text('seed = 4\nseconds = 1\nchannels = 32\n'
                     '[[gateways]]\nsite = "w"\ngateway = "g1"\n'
                     '[[gateways]]\nsite = "w"\ngateway = "g2"\n')
    rc = main(["sim", "record", "--schedule", str(sched), "--out", str(tmp_path / "x.fwrec")])
    assert rc == 2 and "{site} or {gateway}" in capsys.readouterr().err
    rc = main(["sim", "record", "--schedule", str(sched),
               "--out", str(tmp_path / "x-{gateway}.fwrec")])
    assert rc == 0
    assert read_meta(tmp_path / "x-g2.fwrec")["gateway"] == "g2"
    assert read_meta(tmp_path / "x-g1.fwrec")["seed"] == 4


@pytest.mark.parametrize(("argv", "message"), [
    (["record", "--scenario", "leak:onset=1"], "needs 'duration'"),
    (["record", "--scenario", "volcano:onset=1,duration=1"], "unknown anomaly kind"),
    (["record", "--seconds", "0"], "seconds > 0"),
    (["record", "--channels", "1"], "channels must be"),
    (["record", "--start", "yesterday"], "--start"),
    (["record", "--schedule", "/nonexistent/s.toml"], "cannot read schedule"),
    (["record", "--fleet", "--site", "x"], "single-gateway"),
    (["run", "--broker", "localhost"], "HOST:PORT"),
    (["info", "/nonexistent.fwrec"], "No such file"),
    (["replay", "/nonexistent.fwrec"], "No such file"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, argv, message, capsys) -> None:
    if argv[0] == "record":
        argv = [*argv, "--out", str(tmp_path / "o.fwrec")]
    assert main(["sim", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("fiberwatch sim: error:")


def test_run_without_a_broker_fails_cleanly(capsys) -> None:
    rc = main(["sim", "run", "--broker", f"127.0.0.1:{free_port()}", "--seconds", "1",
               "--channels", "16"])
    assert rc == 2 and "cannot connect" in capsys.readouterr().err


def test_info_summarises_a_recording(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.fwrec"
    main(["sim", "record", "--out", str(out), "--channels", "16", "--seconds", "2",
          "--scenario", "dropped:onset=0.5,duration=0.25"])
    capsys.readouterr()
    assert main(["sim", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["streams"]["das"]["frames"] == 35 and info["streams"]["das"]["gaps"] == 5
    assert info["labels"] == 1 and info["site"] == "well-a"
    out.write_bytes(out.read_bytes()[:-3])
    assert main(["sim", "info", str(out)]) == 2


def test_scenario_help_lists_every_kind_and_parameter() -> None:
    from fiberwatch.commands.sim import SCENARIO_HELP
    from sensors_sim import KINDS

    for kind, (_streams, params) in KINDS.items():
        assert kind in SCENARIO_HELP
        assert all(p in SCENARIO_HELP for p in params), kind
