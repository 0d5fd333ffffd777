"""`fiberwatch model train --files` and `fiberwatch score --input` on an interrogator's files
(DASDAE/PRODML through DASCore, as the bridge reads them) give what the same run gives as
recorded wire frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fiberwatch.cli import main
from sensors_sim import SimConfig, Simulator, parse_scenario, write_frames
from sensors_sim.files import write_run

pytestmark = pytest.mark.slow


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_and_score_interrogator_files_like_recorded_frames(tmp_path: Path,
                                                                   capsys) -> None:
    cfg = SimConfig(channels=32, seconds=20, streams=("das",), das_dtype="float32",
                    scenarios=(parse_scenario("leak:onset=12,duration=6,channel=16"),))
    rec = tmp_path / "run.fwrec"
    write_frames(rec, (f for _, f in Simulator(cfg, seed=5).frames()))
    dasdae = write_run(Simulator(cfg, seed=5), tmp_path / "dasdae", file_s=5.0)
    assert len(dasdae) == 4
    code, out, err = _cli(capsys, "model", "train", "--files", str(tmp_path / "dasdae"),
                          "--epochs", "1", "--out", str(tmp_path / "f.ckpt"))
    assert code == 0, err
    code2, out2, _ = _cli(capsys, "model", "train", "--recording", str(rec), "--epochs", "1",
                          "--out", str(tmp_path / "r.ckpt"))
    assert code2 == 0 and json.loads(out)["rows"] == json.loads(out2)["rows"] > 0
    pkg = tmp_path / "f.fwpkg"
    assert _cli(capsys, "model", "convert", str(tmp_path / "f.ckpt"), "--out", str(pkg),
                "--version", "files-1")[0] == 0
    docs = {}
    for name, inp in (("rec", rec), ("dir", tmp_path / "dasdae")):
        out_json = tmp_path / f"{name}.json"
        code, out, err = _cli(capsys, "score", "--model", str(pkg), "--input", str(inp),
                              "--output", str(out_json), "--allow-unsigned")
        assert code == 0, err
        docs[name] = json.loads(out_json.read_text())
    assert docs["dir"]["windows"] == docs["rec"]["windows"]
    assert docs["dir"]["events"] == docs["rec"]["events"]
    # one PRODML file of another geometry is scored on its own; a bad file is one line
    prodml = write_run(Simulator(cfg, seed=5), tmp_path / "prodml", das_format="PRODML",
                       file_s=20.0)
    code, out, err = _cli(capsys, "score", "--model", str(pkg), "--input", str(prodml[0]),
                          "--output", str(tmp_path / "p.csv"), "--allow-unsigned")
    assert code == 0, err
    assert json.loads(out)["windows"] == len(docs["rec"]["windows"])
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    code, _, err = _cli(capsys, "score", "--model", str(pkg), "--input", str(bad),
                        "--output", str(tmp_path / "b.csv"), "--allow-unsigned")
    assert code == 2 and "unreadable" in err and len(err.strip().splitlines()) == 1
