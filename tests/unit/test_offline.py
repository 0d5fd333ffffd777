"""Offline scoring = the online pipeline: same frames, same scores, same events."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge_agent.config import EventConfig, ThresholdConfig
from edge_agent.hot_swap import ModelSlot
from edge_agent.inference import LiteRTDetector
from edge_agent.metrics import Metrics
from edge_agent.offline import (
    InputError,
    OfflineScorer,
    csv_frames,
    final_events,
    read_csv,
    stream_config_for,
)
from edge_agent.package import PackageError, read_package
from edge_agent.pipeline import StreamPipeline
from edge_agent.types import RawMessage
from federation.model import task
from federation.model.datasets import DAS_SPEC, from_frames
from federation.registry.package import package_model
from sensors_sim import SimConfig, Simulator, parse_scenario

pytestmark = pytest.mark.slow  # converts a model

CH = 48
THR = ThresholdConfig(warmup_windows=10, false_alarm_rate=1e-3)


def _frames(seconds: float, seed: int, scenarios: tuple = ()) -> list[bytes]:
    cfg = SimConfig(channels=CH, seconds=seconds, streams=("das",), scenarios=scenarios)
    return [f for _, f in Simulator(cfg, seed=seed).frames()]


@pytest.fixture(scope="module")
def pkg():
    train = from_frames(_frames(40.0, 1), DAS_SPEC).normal_rows()
    model, _ = task.prepare_and_fit(train, epochs=5, batch_size=256)
    data, _ = package_model(model, DAS_SPEC, rows=train, version="off-1")
    return read_package(data, None)


class _Recorder:
    """Wraps a detector and keeps every batch of scores it returns."""

    def __init__(self, det) -> None:
        self.det, self.batches = det, []
        self.version, self.package_hash = det.version, det.package_hash
        self.feature_spec_hash = det.feature_spec_hash
        self.threshold_quantiles = det.threshold_quantiles  # the threshold floor

    def score(self, rows):
        s = self.det.score(rows)
        self.batches.append(s.copy())
        return s


class _Sink:
    def __init__(self) -> None:
        self.events = []

    def send_event(self, e) -> None:
        self.events.append(e)

    def send_summary(self, s) -> None:
        pass


def _strip(e) -> dict:
    d = e.to_dict()
    d.pop("detected_ns")  # wall clock online, stream time offline
    return d


def test_online_and_offline_scores_and_events_are_identical(pkg) -> None:
    leak = parse_scenario(f"leak:onset=14,duration=8,channel={CH // 2}")
    frames = _frames(30.0, 2, (leak,))
    stream = stream_config_for(DAS_SPEC, channels=CH)
    # online: the agent's pipeline with a model slot, fed frames as MQTT messages
    online_det = _Recorder(LiteRTDetector(pkg))
    slot = ModelSlot(online_det, spec_hash=DAS_SPEC.hash, public_key=None,
                     latency_budget_ms=1e6, smoke_windows=4)
    sink = _Sink()
    pipe = StreamPipeline(site="s", gateway="g", stream=stream, thresholds=THR,
                          events=EventConfig(), slot=slot, sink=sink, metrics=Metrics())
    for f in frames:
        pipe.handle(RawMessage("x", f, 0))
    pipe.flush()
    # offline
    windows = []
    off = OfflineScorer(LiteRTDetector(pkg), stream, thresholds=THR, site="s", gateway="g",
                        on_window=windows.append)
    events = off.run(frames)
    assert len(windows) == len(online_det.batches) > 50
    for s, online in zip(windows, online_det.batches, strict=True):
        np.testing.assert_array_equal(s.scores, online)
    assert [_strip(e) for e in events] == [_strip(e) for e in final_events(sink.events)]
    assert len({e.id for e in events}) == len(events)
    # and the leak is found where it is
    assert any(e.ch_start - 6 <= CH // 2 <= e.ch_end + 6 for e in events)
    assert all(e.model_version == "off-1" for e in events)


def test_package_for_another_spec_is_refused(pkg) -> None:
    other = dataclasses.replace(DAS_SPEC, hop_s=0.25)
    stream = stream_config_for(other, channels=CH)
    with pytest.raises(PackageError) as err:
        OfflineScorer(LiteRTDetector(pkg), stream)
    assert err.value.reason == "feature_spec"


def test_csv_frames_round_trip(tmp_path) -> None:
    p = tmp_path / "tags.csv"
    t = np.arange(50) * 2.0 + 100
    lines = ["time,a,b"] + [f"{ti},{i * 0.5},{'' if i == 7 else -i}" for i, ti in enumerate(t)]
    p.write_text("\n".join(lines) + "\n")
    tn, x, names = read_csv(p)
    assert names == ["a", "b"] and x.shape == (50, 2) and np.isnan(x[7, 1])
    from edge_agent import wire

    frames = [wire.decode(f) for f in csv_frames(tn, x, kind="dts", rate=0.5, frame_samples=8)]
    assert sum(f.n_samples for f in frames) == 50
    assert [f.seq for f in frames] == list(range(len(frames)))
    p.write_text("time,a\n1,2\n1,3\n")
    with pytest.raises(InputError, match="increase"):
        read_csv(p)
