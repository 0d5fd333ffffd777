"""The detector contract, checked against every `Detector` implementation.

Statistical detectors run everywhere; the int8 `LiteRTDetector` needs a package built with
the training extra (torch + litert-torch, ~30 s), so that parameter is marked ``slow`` and
skipped when those are missing.
"""

from __future__ import annotations

import copy
import pickle
import time
from collections.abc import Callable

import numpy as np
import pytest

from edge_agent import wire
from edge_agent.config import EventConfig, StreamConfig, ThresholdConfig
from edge_agent.detectors import Detector, LearningDetector
from edge_agent.detectors.stats import MahalanobisDetector, RobustZDetector
from edge_agent.metrics import Metrics
from edge_agent.pipeline import StreamPipeline
from edge_agent.types import RawMessage

STREAM = StreamConfig(kind="das", channels=32, sample_rate_hz=2000.0, window_s=0.5,
                      hop_s=0.25, group_size=8)
SPEC = STREAM.feature_spec()
DIM = SPEC.dim
RNG = np.random.default_rng(42)
NORMAL = RNG.normal(size=(3000, DIM)).astype(np.float32)


@pytest.fixture(scope="session")
def litert_package() -> bytes:
    pytest.importorskip("torch")
    pytest.importorskip("litert_torch")
    from federation.model.autoencoder import AutoEncoder
    from federation.registry.package import package_model

    model = AutoEncoder(DIM)
    pkg, _ = package_model(model, SPEC, rows=NORMAL, version="contract-int8-1")
    return pkg


def _robustz(_request) -> Detector:
    return RobustZDetector(DIM, feature_spec_hash=SPEC.hash)


def _mahalanobis(_request) -> Detector:
    return MahalanobisDetector(DIM, feature_spec_hash=SPEC.hash)


def _litert(request) -> Detector:
    from edge_agent.hot_swap import load_litert

    return load_litert(request.getfixturevalue("litert_package"), None)


FACTORIES: list = [
    pytest.param(_robustz, id="robustz"),
    pytest.param(_mahalanobis, id="mahalanobis"),
    pytest.param(_litert, id="litert-int8", marks=pytest.mark.slow),
]


@pytest.fixture(params=FACTORIES)
def detector(request) -> Detector:
    det = request.param(request)
    if isinstance(det, LearningDetector):
        for i in range(0, len(NORMAL), 500):
            det.learn(NORMAL[i:i + 500])
    return det


def _state(det: Detector) -> bytes | None:
    try:
        return pickle.dumps(det.__dict__)
    except (TypeError, AttributeError, pickle.PicklingError):
        return None  # native interpreter state: purity is checked through outputs


def test_satisfies_the_protocol(detector: Detector) -> None:
    assert isinstance(detector, Detector)
    for name in ("version", "package_hash", "feature_spec_hash"):
        assert isinstance(getattr(detector, name), str)
    assert detector.version
    assert detector.feature_spec_hash in ("", SPEC.hash)


def test_shape_and_dtype(detector: Detector) -> None:
    rows = NORMAL[:257]
    s = detector.score(rows)
    assert isinstance(s, np.ndarray) and s.shape == (257,) and s.dtype == np.float32
    assert np.isfinite(s).all()


def test_scoring_is_pure(detector: Detector) -> None:
    rows = RNG.normal(size=(100, DIM)).astype(np.float32)
    before_rows = rows.copy()
    before = _state(detector)
    a = detector.score(rows)
    b = detector.score(rows)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(rows, before_rows)  # input not mutated
    assert _state(detector) == before


def test_rows_are_scored_independently(detector: Detector) -> None:
    rows = RNG.normal(size=(20, DIM)).astype(np.float32)
    batch = detector.score(rows)
    one_by_one = np.concatenate([detector.score(rows[i:i + 1]) for i in range(20)])
    np.testing.assert_allclose(batch, one_by_one, rtol=1e-5, atol=1e-6)


def test_obvious_anomalies_score_higher(detector: Detector) -> None:
    normal = RNG.normal(size=(200, DIM)).astype(np.float32)
    odd = normal + 8.0
    assert np.median(detector.score(odd)) > 2 * np.median(detector.score(normal))
    assert (detector.score(odd) > np.quantile(detector.score(normal), 0.99)).mean() > 0.95


def test_wrong_width_is_refused(detector: Detector) -> None:
    with pytest.raises(ValueError):
        detector.score(np.zeros((4, DIM + 1), np.float32))


LEARNERS: list[Callable[[], LearningDetector]] = [
    lambda: RobustZDetector(DIM), lambda: MahalanobisDetector(DIM)]


@pytest.mark.parametrize("make", LEARNERS, ids=["robustz", "mahalanobis"])
def test_learn_is_the_only_state_change_and_clone_is_independent(make) -> None:
    det = make()
    assert not det.ready
    twin = copy.deepcopy(det)
    det.learn(NORMAL[:500])
    assert det.ready and not twin.ready
    assert not np.array_equal(det.score(NORMAL[:10]), twin.score(NORMAL[:10]))


@pytest.mark.parametrize("make", LEARNERS, ids=["robustz", "mahalanobis"])
def test_the_pipeline_never_learns_from_flagged_rows(make) -> None:
    """Run a leak through a pipeline; every row given to `learn` must come from a group the
    threshold did not flag."""
    det = make()
    learned: list[np.ndarray] = []
    inner = det.learn
    det.learn = lambda rows: (learned.append(rows.copy()), inner(rows))[1]

    class Slot:
        active = det

        def apply_pending(self) -> bool:
            return False

        def report_latency(self, ms: float) -> None:
            pass

    class Sink:
        def send_event(self, e) -> None:
            pass

        def send_summary(self, s) -> None:
            pass

    p = StreamPipeline(site="s", gateway="g", stream=STREAM,
                       thresholds=ThresholdConfig(warmup_windows=40, history_windows=200),
                       events=EventConfig(), slot=Slot(), sink=Sink(), metrics=Metrics())
    flagged_rows: set[bytes] = set()
    orig = p.events.update

    def spy(s):
        for g in np.flatnonzero(s.flagged):
            flagged_rows.update(r.tobytes() for r in s.rows[g * 8:(g + 1) * 8])
        return orig(s)

    p.events.update = spy
    rng = np.random.default_rng(1)
    for k in range(360):
        x = rng.normal(size=(100, 32)).astype(np.float32)
        if k >= 300:
            x[:, 10:14] *= 5
        frame = wire.encode(wire.StreamKind.DAS, k, k * 50_000_000, 2000.0, 0, x)
        p.handle(RawMessage("t", frame, time.time_ns()))
    assert flagged_rows, "the anomaly should have been flagged"
    assert learned
    assert not any(r.tobytes() in flagged_rows for rows in learned for r in rows)
