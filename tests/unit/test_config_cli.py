"""`fiberwatch config check`: output and exit status."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fiberwatch.cli import main
from firmware_configs import GATEWAYS, INTERROGATORS, ROOT


def test_valid_files_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    files = [GATEWAYS / "well-a.toml", INTERROGATORS / "dts-well-a.toml"]
    assert main(["config", "check", *map(str, files)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"OK {files[0]} (gateway)", f"OK {files[1]} (interrogator)"]
    assert err == ""


def test_a_folder_means_every_toml_below_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(ROOT)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(list(ROOT.rglob("*.toml"))) >= 7
    assert all(line.startswith("OK ") for line in out)


def test_an_invalid_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = shutil.copy(GATEWAYS / "well-b.toml", tmp_path / "good.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text((GATEWAYS / "well-b.toml").read_text().replace("hop_s = 0.5", "hop_s = 3.0"))
    assert main(["config", "check", str(good), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == f"OK {good} (gateway)\n"
    assert err.splitlines() == [
        f"{bad}: streams.0.hop_s: hop_s must not exceed window_s (windows would skip samples)"
    ]


def test_a_missing_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(tmp_path / "gone.toml")]) == 1
    assert capsys.readouterr().err == f"{tmp_path / 'gone.toml'}: file not found\n"


@pytest.mark.parametrize("argv", [["config", "check"], ["config"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith("fiberwatch config: error: ")


def test_an_empty_folder_is_a_usage_error(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(tmp_path)]) == 2
    assert "no .toml files" in capsys.readouterr().err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["config", "check", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: fiberwatch config check" in out and "exit status" in out


def test_an_alerting_file_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "alerts.toml"
    bad.write_text('[alerting]\nstate_db = "a.sqlite"\n[[receivers]]\nname = "hook"\n'
                   'type = "webhook"\nurl = "http://192.0.2.1/hook"\n'
                   '[[rules]]\nname = "r"\nreceivers = ["hook"]\n')
    assert main(["config", "check", str(bad)]) == 1
    assert "https" in capsys.readouterr().err  # plain http only on loopback
    bad.write_text(bad.read_text().replace("192.0.2.1", "127.0.0.1"))
    assert main(["config", "check", str(bad)]) == 0
    assert "(alerting)" in capsys.readouterr().out
