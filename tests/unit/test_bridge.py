"""The interrogator bridge without a broker: files -> frames, position, partial and bad files.

The MQTT side is a recording sink here (a unit test); tests/integration/test_bridge.py runs
the same paths against a real Mosquitto and a real agent.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge_agent import wire
from edge_agent.bridge import convert
from edge_agent.bridge.config import BridgeConfig
from edge_agent.bridge.reader import FileError, read_file
from edge_agent.bridge.service import Bridge, BridgeStats, replay, replay_frames
from edge_agent.bridge.state import State
from sensors_sim import SimConfig, Simulator, parse_scenario
from sensors_sim.files import write_run

CH = 32
T0 = 1_704_067_200 * 10**9


def sim_config(**over) -> SimConfig:
    base = dict(channels=CH, seconds=3.0, start_ns=T0, scenarios=(
        parse_scenario("leak:onset=0.3,duration=0.5,channel=12"),))
    return SimConfig(**{**base, **over})


def bridge_config(tmp_path: Path, watch: Path, **bridge) -> BridgeConfig:
    return BridgeConfig.model_validate({
        "bridge": {"site": "s", "gateway": "g", "watch_dir": str(watch),
                   "state_file": str(tmp_path / "state" / "bridge.sqlite"),
                   "allow_insecure": True, "settle_s": 0.0, **bridge},
        "das": {"channels": CH, "sample_rate_hz": 2000.0, "scale": 1 / 256, "units": "1/s",
                "gauge_length_m": 10.0},
        "dts": {"channels": CH, "sample_rate_hz": 1.0},
    })


class Sink:
    """Records what would be published; `crash_after` raises like a SIGKILL would stop it."""

    def __init__(self, crash_after: int | None = None) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.crash_after = crash_after

    def publish(self, stream: str, frame: bytes) -> None:
        if self.crash_after is not None and len(self.sent) >= self.crash_after:
            raise Killed
        self.sent.append((stream, frame))

    def flush(self, timeout: float = 30.0) -> None:
        pass

    def wait_connected(self, timeout: float) -> bool:
        return True


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (no flush, no commit)."""


def sim_frames(cfg: SimConfig) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {"das": [], "dts": []}
    for stream, frame in Simulator(cfg, 1).frames():
        out[stream].append(frame)
    return out


def by_stream(sent: list[tuple[str, bytes]]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {"das": [], "dts": []}
    for stream, frame in sent:
        out[stream].append(frame)
    return out


@pytest.mark.parametrize(("fmt", "dtype"), [("DASDAE", "float32"), ("PRODML", "int16"),
                                            ("DASDAE", "int16")])
def test_simulator_files_become_the_simulators_own_frames(tmp_path: Path, fmt: str,
                                                          dtype: str) -> None:
    cfg = sim_config(das_dtype=dtype)
    files = write_run(Simulator(cfg, 1), tmp_path / "in", das_format=fmt, file_s=1.0,
                      dts_traces=2)
    assert {p.suffix for p in files} == {".h5", ".csv"}
    sink = Sink()
    bridge = Bridge(bridge_config(tmp_path, tmp_path / "in"), sink, State(tmp_path / "s.db"))
    assert bridge.step() == len(files)
    # byte for byte what the simulator would have sent over MQTT: geometry, time, seq, dtype,
    # scale and samples all carried over through DASCore / the CSV reader
    assert by_stream(sink.sent) == sim_frames(cfg)
    assert bridge.stats.errors == {} and bridge.stats.files == len(files)
    das = [wire.decode(f) for s, f in sink.sent if s == "das"]
    expected = wire.DType.INT16 if dtype == "int16" else wire.DType.FLOAT32
    assert all(f.n_channels == CH and f.sample_rate == 2000.0 for f in das)
    assert {f[6] for s, f in sink.sent if s == "das"} == {int(expected)}  # byte 6: dtype


def test_a_file_with_another_geometry_is_refused_and_the_stream_goes_on(tmp_path: Path) -> None:
    watch = tmp_path / "in"
    write_run(Simulator(sim_config(seconds=2.0, streams=("das",)), 1), watch, file_s=1.0)
    odd = tmp_path / "odd"
    write_run(Simulator(sim_config(seconds=1.0, channels=CH + 1, streams=("das",),
                                   start_ns=T0 + 2 * 10**9, scenarios=()), 1), odd)
    (f,) = odd.glob("*.h5")
    shutil.move(f, watch / ("g_das_z_" + f.name))  # sorts after the good ones
    fast = tmp_path / "fast"
    write_run(Simulator(sim_config(seconds=1.0, das_rate=4000.0, streams=("das",),
                                   scenarios=()), 1), fast)
    (f,) = fast.glob("*.h5")
    shutil.move(f, watch / ("g_das_y_" + f.name))
    sink = Sink()
    state = State(tmp_path / "s.db")
    bridge = Bridge(bridge_config(tmp_path, watch), sink, state)
    assert bridge.step() == 4
    assert bridge.stats.errors == {"channels": 1, "sample_rate": 1}
    assert bridge.stats.files == 2 and len(sink.sent) == 40
    assert state.counts() == {"published": 2, "error": 2}
    errors = sqlite3.connect(state.path).execute(
        "SELECT error FROM files WHERE status = 'error' ORDER BY name").fetchall()
    assert errors[0][0].startswith("sample_rate: 4000 Hz in the file, the stream has 2000")
    assert errors[1][0].startswith(f"channels: {CH + 1} channels, the stream has {CH}")
    assert bridge.step() == 0, "a refused file is not retried"
    assert len(list(watch.iterdir())) == 4, "nothing is deleted unless configured"


def test_units_and_gauge_length_are_checked_and_converted(tmp_path: Path) -> None:
    watch = tmp_path / "in"
    (f,) = write_run(Simulator(sim_config(seconds=1.0, streams=("das",)), 1), watch)
    base = bridge_config(tmp_path, watch)
    with pytest.raises(FileError) as e:
        read_file(f, base.das.model_copy(update={"gauge_length_m": 20.0}))
    assert e.value.reason == "gauge_length"
    with pytest.raises(FileError) as e:
        read_file(f, base.das.model_copy(update={"units": "K"}))
    assert e.value.reason == "units"
    (b,) = read_file(f, base.das.model_copy(update={"units": "1/ms"}))
    (ref,) = read_file(f, base.das)
    np.testing.assert_allclose(b.data, ref.data / 1000, rtol=1e-5)
    assert b.meta["gauge_length_m"] == 10.0


def test_garbage_and_truncated_files_wait_then_fail_without_stopping_anything(
        tmp_path: Path) -> None:
    watch = tmp_path / "in"
    files = write_run(Simulator(sim_config(seconds=2.0, streams=("das",)), 1), watch,
                      file_s=1.0)
    good = files[1].read_bytes()
    files[1].write_bytes(good[: len(good) // 2])  # still being written
    (watch / "g_das_0_garbage.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\xff" * 100)
    now = [0.0]
    sink = Sink()
    bridge = Bridge(bridge_config(tmp_path, watch, incomplete_timeout_s=30.0), sink,
                    State(tmp_path / "s.db"), clock=lambda: now[0])
    bridge.watcher._leases = False  # as for another user's files: no word from the kernel
    assert bridge.step() == 0  # garbage sorts first and blocks the stream while it is young
    assert sink.sent == [] and bridge.stats.errors == {}
    now[0] = 31.0
    files[1].write_bytes(good[: 3 * len(good) // 4])  # the writer goes on: young again
    assert bridge.step() == 2  # garbage refused, the first real file published
    assert bridge.stats.errors == {"unreadable": 1}
    assert len(sink.sent) == 20 and bridge.stats.files == 1
    now[0] = 40.0
    assert bridge.step() == 0  # still unreadable, but not for 30 s yet
    files[1].write_bytes(good)  # complete
    assert bridge.step() == 1
    assert len(sink.sent) == 40 and bridge.stats.files == 2


def test_a_marker_file_says_when_a_file_is_complete(tmp_path: Path) -> None:
    watch = tmp_path / "in"
    (f,) = write_run(Simulator(sim_config(seconds=1.0, streams=("das",)), 1), watch)
    sink = Sink()
    bridge = Bridge(bridge_config(tmp_path, watch, marker_suffix=".done",
                                  delete_published=True), sink, State(tmp_path / "s.db"))
    assert bridge.step() == 0 and sink.sent == []
    Path(f"{f}.done").touch()
    assert bridge.step() == 1 and len(sink.sent) == 20
    assert list(watch.iterdir()) == [], "delete_published removes the file and its marker"


def test_a_kill_mid_directory_loses_nothing_and_resends_only_uncommitted_frames(
        tmp_path: Path) -> None:
    cfg = sim_config(seconds=4.0)
    watch = tmp_path / "in"
    write_run(Simulator(cfg, 1), watch, das_format="PRODML", file_s=1.0, dts_traces=2)
    bcfg = bridge_config(tmp_path, watch, commit_frames=8)
    sent: list[tuple[str, bytes]] = []
    for crash_after in (13, 35, 36, 61, None):  # several kills, one inside a commit batch
        state = State(bcfg.bridge.state_file)
        sink = Sink(crash_after)  # counts every frame sent so far, before this run too
        sink.sent = list(sent)
        try:
            Bridge(bcfg, sink, state).step()
        except Killed:
            pass
        sent = sink.sent
        state.close()
    got, want = by_stream(sent), sim_frames(cfg)
    for stream in ("das", "dts"):
        unique = {wire.decode(f).seq: f for f in got[stream]}
        assert sorted(unique) == [wire.decode(f).seq for f in want[stream]], "nothing lost"
        assert [unique[s] for s in sorted(unique)] == want[stream], "same bytes"
    resent = len(sent) - sum(len(v) for v in want.values())
    # each kill re-sends at most the frames after the last commit (commit_frames - 1)
    assert 0 < resent <= 4 * (8 - 1)
    state = State(bcfg.bridge.state_file)
    assert state.counts() == {"published": len(list(watch.iterdir()))}


def test_replay_merges_streams_in_time_and_paces_by_speed(tmp_path: Path) -> None:
    cfg = sim_config(seconds=3.0)
    watch = tmp_path / "in"
    write_run(Simulator(cfg, 1), watch, file_s=1.0, dts_traces=1)
    bcfg = bridge_config(tmp_path, watch)
    stats = BridgeStats()
    ends = [e for e, _s, _f in replay_frames(bcfg, watch, stats)]
    assert ends == sorted(ends) and stats.files == 6
    waits: list[float] = []
    now = [0.0]

    class Stop:
        def is_set(self) -> bool:
            return False

        def wait(self, d: float) -> bool:
            waits.append(d)
            now[0] += d
            return False

    sink = Sink()
    replay(bcfg, watch, sink, speed=10.0, stop=Stop(), clock=lambda: now[0])  # type: ignore[arg-type]
    assert by_stream(sink.sent) == sim_frames(cfg)
    assert now[0] == pytest.approx((3.0 - 0.05) / 10, rel=1e-6)  # first to last frame end


def test_plan_skips_a_sequence_number_at_a_time_gap_and_refuses_overlaps(tmp_path: Path) -> None:
    watch = tmp_path / "in"
    files = write_run(Simulator(sim_config(seconds=2.0, streams=("das",)), 1), watch,
                      file_s=1.0)
    das = bridge_config(tmp_path, watch).das
    first, second = (read_file(f, das) for f in files)
    p1 = convert.plan(first, das, 0, None)
    assert (p1.seqs, p1.next_seq) == ((0,), 20)
    assert convert.plan(second, das, p1.next_seq, first[-1].end_ns).seqs == (20,)
    assert convert.plan(second, das, 20, first[-1].end_ns - 10**8).seqs == (21,)  # gap
    with pytest.raises(FileError) as e:
        convert.plan(first, das, 20, first[-1].end_ns)
    assert e.value.reason == "overlap"


def test_explicit_int16_refuses_a_scale_too_small(tmp_path: Path) -> None:
    watch = tmp_path / "in"
    (f,) = write_run(Simulator(sim_config(seconds=1.0, streams=("das",),
                                          das_dtype="float32"), 1), watch)
    das = bridge_config(tmp_path, watch).das.model_copy(update={"dtype": "int16",
                                                                "scale": 1e-6})
    with pytest.raises(FileError) as e:
        convert.encoding(read_file(f, das), das)
    assert e.value.reason == "scale"


def test_config_refuses_an_insecure_broker_unless_dev_and_loopback(tmp_path: Path) -> None:
    ok = {"bridge": {"site": "s", "gateway": "g", "watch_dir": "w", "state_file": "s"},
          "dts": {"channels": 4, "sample_rate_hz": 1.0}}
    with pytest.raises(ValueError, match="tls = true and a username are required"):
        BridgeConfig.model_validate(ok)
    with pytest.raises(ValueError, match="must be on loopback"):
        BridgeConfig.model_validate({**ok, "bridge": {**ok["bridge"], "allow_insecure": True},
                                     "broker": {"host": "10.0.0.5"}})
    BridgeConfig.model_validate({**ok, "broker": {"tls": True, "username": "b",
                                                  "host": "10.0.0.5"}})
    with pytest.raises(ValueError, match="unknown DAS format"):
        BridgeConfig.model_validate({**ok, "broker": {"tls": True, "username": "b"},
                                     "das": {"format": "nope", "channels": 4,
                                             "sample_rate_hz": 1000.0}})


def test_the_agent_never_imports_dascore_or_h5py() -> None:
    code = textwrap.dedent("""
        import sys
        import edge_agent.main, edge_agent.offline, fiberwatch.commands.edge
        import edge_agent.bridge, edge_agent.bridge.service, edge_agent.bridge.publish
        bad = [m for m in sys.modules if m.split(".")[0] in ("dascore", "h5py", "pandas")]
        assert not bad, bad
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_a_file_open_for_writing_waits_and_holds_back_the_later_ones(tmp_path: Path) -> None:
    from edge_agent.bridge.watch import open_for_writing

    watch = tmp_path / "in"
    files = write_run(Simulator(sim_config(seconds=2.0, streams=("das",)), 1), watch,
                      file_s=1.0)
    if open_for_writing(files[0]) is None:
        pytest.skip("the kernel grants no leases here")
    sink = Sink()
    bridge = Bridge(bridge_config(tmp_path, watch), sink, State(tmp_path / "s.db"))
    with open(files[0], "ab"):  # the interrogator still has the first file open
        assert open_for_writing(files[0]) is True
        assert bridge.step() == 0 and sink.sent == [], "the second waits for the first"
    assert open_for_writing(files[0]) is False
    assert bridge.step() == 2
    assert by_stream(sink.sent)["das"] == sim_frames(sim_config(seconds=2.0,
                                                                streams=("das",)))["das"]


def test_without_its_marker_a_file_is_refused_after_the_timeout(tmp_path: Path) -> None:
    watch = tmp_path / "in"
    files = write_run(Simulator(sim_config(seconds=2.0, streams=("das",)), 1), watch,
                      file_s=1.0)
    Path(f"{files[1]}.done").touch()
    now = [0.0]
    sink = Sink()
    bridge = Bridge(bridge_config(tmp_path, watch, marker_suffix=".done",
                                  incomplete_timeout_s=60.0), sink, State(tmp_path / "s.db"),
                    clock=lambda: now[0])
    assert bridge.step() == 0, "the first file has no marker: the second waits"
    now[0] = 61.0
    assert bridge.step() == 2
    assert bridge.stats.errors == {"no_marker": 1} and len(sink.sent) == 20


def test_a_dropped_connection_resends_from_the_last_commit(tmp_path: Path) -> None:
    from edge_agent.bridge.publish import PublishLost

    class Flaky(Sink):
        """Loses the connection once, after 13 frames, before they are all written."""

        def __init__(self) -> None:
            super().__init__()
            self.failed = False

        def flush(self, timeout: float = 30.0) -> None:
            if not self.failed and len(self.sent) >= 13:
                self.failed = True
                raise PublishLost("the connection dropped")

    cfg = sim_config(seconds=2.0, streams=("das",))
    watch = tmp_path / "in"
    write_run(Simulator(cfg, 1), watch, file_s=2.0)
    sink = Flaky()
    bridge = Bridge(bridge_config(tmp_path, watch, commit_frames=8), sink,
                    State(tmp_path / "s.db"))
    assert bridge.step() == 1
    seqs = [wire.decode(f).seq for _s, f in sink.sent]
    # 0..15 went out, the flush at 16 failed: resent from the commit at 8
    assert seqs == list(range(16)) + list(range(8, 40))
    assert by_stream(sink.sent)["das"][16:] == sim_frames(cfg)["das"][8:]


def test_a_closed_unreadable_file_is_refused_at_once(tmp_path: Path) -> None:
    from edge_agent.bridge.watch import open_for_writing

    watch = tmp_path / "in"
    (f,) = write_run(Simulator(sim_config(seconds=1.0, streams=("das",)), 1), watch)
    bad = watch / "g_das_0_bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\xff" * 100)
    (watch / "g_dts_0_bad.csv").write_text("time,a,b\n2024-01-01T00:00:00Z,1,x\n")
    if open_for_writing(bad) is None:
        pytest.skip("the kernel grants no leases here")
    sink = Sink()
    bridge = Bridge(bridge_config(tmp_path, watch), sink, State(tmp_path / "s.db"))
    assert bridge.step() == 3
    assert bridge.stats.errors == {"unreadable": 2} and len(sink.sent) == 20


def test_cli_speed_bad_config_and_status(tmp_path: Path, capsys) -> None:
    import json

    from fiberwatch.cli import UsageError, main
    from fiberwatch.commands.bridge import parse_speed

    assert parse_speed("10x") == 10.0 and parse_speed("0.5") == 0.5 and parse_speed("max") is None
    for bad in ("fast-ish", "0x", "-2x"):
        with pytest.raises(UsageError):
            parse_speed(bad)
    cfg = tmp_path / "b.toml"
    cfg.write_text('[bridge]\nsite = "s"\ngateway = "g"\nwatch_dir = "in"\n'
                   'state_file = "st.sqlite"\nallow_insecure = true\n'
                   '[das]\nchannels = 0\nsample_rate_hz = 2000\n')
    assert main(["bridge", "run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: das.channels: Input should be greater than or equal to 1" in err
    cfg.write_text(cfg.read_text().replace("channels = 0", f"channels = {CH}"))
    assert main(["bridge", "status", "--config", str(cfg)]) == 2
    assert "no state yet" in capsys.readouterr().err
    watch = tmp_path / "in"
    write_run(Simulator(sim_config(seconds=1.0, streams=("das",)), 1), watch)
    (watch / "g_das_odd.h5").write_bytes(b"junk")
    state = State(tmp_path / "st.sqlite")
    Bridge(bridge_config(tmp_path, watch), Sink(), state).step()
    state.close()
    assert main(["bridge", "status", "--config", str(cfg)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["files"] == {"published": 1, "error": 1}
    assert out["streams"]["das"]["next_seq"] == 20 and out["errors"][0]["file"] == "g_das_odd.h5"


def test_config_check_validates_a_bridge_against_its_interrogators(tmp_path: Path) -> None:
    from firmware_configs import BRIDGES, INTERROGATORS
    from firmware_configs.schema import check_file, check_files

    assert check_file(BRIDGES / "well-a.toml") == []
    site = tmp_path / "site"
    shutil.copytree(INTERROGATORS, site / "interrogators")
    (site / "bridges").mkdir()
    text = (BRIDGES / "well-a.toml").read_text()
    bad = site / "bridges" / "b.toml"
    bad.write_text(text.replace("channels = 1024\nsample_rate_hz = 2000.0",
                                "channels = 1000\nsample_rate_hz = 2000.0"))
    (r,) = check_files([bad])
    assert r.kind == "bridge"
    assert r.problems == [f"{bad}: das.channels: 1000 here, but interrogator 'das-well-a' "
                          f"({site / 'interrogators' / 'das-well-a.toml'}) has stream.channels "
                          "= 1024"]
    insecure = site / "bridges" / "c.toml"
    insecure.write_text(text.replace("tls = true\n", ""))
    (r,) = check_files([insecure])
    assert any("tls = true and a username are required" in p for p in r.problems)


def test_prodml_processed_band_data_beside_the_raw_is_left_out(tmp_path: Path) -> None:
    import h5py

    cfg = sim_config(seconds=1.0, streams=("das",))
    watch = tmp_path / "in"
    (f,) = write_run(Simulator(cfg, 1), watch, das_format="PRODML")
    with h5py.File(f, "a") as h:  # an FBE band at 10 Hz over every locus, as vendors add
        fbe = h["Acquisition"].create_group("Processed").create_group("Fbe[0]")
        fbe.attrs["StartLocusIndex"], fbe.attrs["NumberOfLoci"] = 0, CH
        fbe.attrs["Dimensions"] = "time, locus"
        t = fbe.create_dataset("FbeDataTime", data=T0 // 1000 + np.arange(10) * 100_000)
        t.attrs["PartStartTime"] = "2024-01-01T00:00:00.000000+00:00"
        t.attrs["PartEndTime"] = "2024-01-01T00:00:00.900000+00:00"
        band = fbe.create_dataset("FbeData[0]", data=np.ones((10, CH), np.float32))
        band.attrs["StartFrequency"], band.attrs["EndFrequency"] = 10.0, 100.0
    import dascore as dc

    assert len(dc.read(f)) == 2, "DASCore sees both"
    sink = Sink()
    bridge = Bridge(bridge_config(tmp_path, watch), sink, State(tmp_path / "s.db"))
    assert bridge.step() == 1 and bridge.stats.errors == {}
    assert by_stream(sink.sent)["das"] == sim_frames(cfg)["das"]


def test_a_rate_not_whole_in_microseconds_goes_out_at_the_stream_rate(tmp_path: Path) -> None:
    """PRODML keeps times in microseconds: 3 kHz is 333.33 us, read back as ~3000.0003 Hz."""
    cfg = sim_config(seconds=1.0, streams=("das",), das_rate=3000.0, frame_s=0.05,
                     scenarios=())
    watch = tmp_path / "in"
    write_run(Simulator(cfg, 1), watch, das_format="PRODML")
    bcfg = bridge_config(tmp_path, watch)
    bcfg = bcfg.model_copy(update={"das": bcfg.das.model_copy(update={
        "sample_rate_hz": 3000.0, "frame_samples": 150})})
    sink = Sink()
    bridge = Bridge(bcfg, sink, State(tmp_path / "s.db"))
    assert bridge.step() == 1 and bridge.stats.errors == {}
    frames = [wire.decode(f) for _s, f in sink.sent]
    assert {f.sample_rate for f in frames} == {3000.0}
    assert [f.t0_ns for f in frames] == [T0 + k * 50_000_000 for k in range(20)]
    assert by_stream(sink.sent)["das"] == sim_frames(cfg)["das"]
