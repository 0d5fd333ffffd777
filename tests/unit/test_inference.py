"""The int8 LiteRT detector against the float model (one small conversion per module)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from edge_agent.detectors.base import Detector
from edge_agent.features import FeatureSpec
from edge_agent.inference import CHUNK_ROWS, LiteRTDetector
from edge_agent.package import PackageError, pack, read_package, split
from federation.model import task
from federation.model.convert import to_tflite
from federation.registry.keys import generate, load_private
from federation.registry.package import package_model

pytestmark = pytest.mark.slow  # converts a model (~5-20 s)

SPEC = FeatureSpec()  # das, 24 features


def _rows(n: int, seed: int) -> np.ndarray:
    """Correlated rows: 4 latent factors + noise, offset and scaled per feature."""
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(99).normal(size=(4, SPEC.dim))
    scale = np.linspace(0.5, 3.0, SPEC.dim)
    return ((rng.normal(size=(n, 4)) @ w + 0.3 * rng.normal(size=(n, SPEC.dim))) * scale
            + 7.0).astype(np.float32)


def _anomalies(n: int, seed: int) -> np.ndarray:
    x = _rows(n, seed)
    rng = np.random.default_rng(seed + 1)
    cols = rng.integers(0, SPEC.dim, size=(n, 3))
    for i in range(n):  # break the correlation structure on 3 features
        x[i, cols[i]] += rng.choice([-1, 1], 3) * rng.uniform(1.0, 3.0, 3) * 1.5
    return x


@pytest.fixture(scope="module")
def built() -> dict:
    train = _rows(6000, 0)
    model, _ = task.prepare_and_fit(train, epochs=8, batch_size=256)
    priv, pub = generate()
    data, report = package_model(model, SPEC, rows=train, private_key=load_private(priv),
                                 version="t-1")
    return {"model": model, "train": train, "data": data, "pub": pub, "report": report,
            "pkg": read_package(data, pub)}


def test_size_bound_and_report(built: dict) -> None:
    assert len(built["pkg"].tflite) <= 32 * 1024
    assert built["report"]["calibration_rows"] == len(built["train"])
    q = built["pkg"].manifest["threshold"]["quantiles"]
    assert q["0.5"] < q["0.99"] < q["1"]


def test_detector_protocol(built: dict) -> None:
    det = LiteRTDetector(built["pkg"])
    assert isinstance(det, Detector)
    assert det.version == "t-1"
    assert det.package_hash == built["pkg"].sha256
    assert det.feature_spec_hash == SPEC.hash


def test_int8_ranks_like_float(built: dict) -> None:
    det = LiteRTDetector(built["pkg"])
    normal, anom = _rows(3000, 5), _anomalies(3000, 6)
    x = np.concatenate([normal, anom])
    y = np.r_[np.zeros(len(normal)), np.ones(len(anom))]
    s_int8, s_float = det.score(x), task.score_rows(built["model"], x)
    assert s_int8.dtype == np.float32 and s_int8.shape == (len(x),)
    assert spearmanr(s_int8, s_float).statistic > 0.95
    auc_i, auc_f = roc_auc_score(y, s_int8), roc_auc_score(y, s_float)
    assert auc_f > 0.9  # the test data is separable at all
    assert abs(auc_i - auc_f) <= 0.01
    # normal training rows score about 1 (error scale calibration)
    assert 0.7 < float(np.median(det.score(built["train"]) / 1.0)) < 1.3


def test_batches_give_identical_scores(built: dict) -> None:
    det = LiteRTDetector(built["pkg"])
    x = _rows(CHUNK_ROWS + 1234, 7)
    whole = det.score(x)
    parts = np.concatenate([det.score(x[i:i + 777]) for i in range(0, len(x), 777)])
    one = np.concatenate([det.score(x[i:i + 1]) for i in range(5)])
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_array_equal(whole[:5], one)
    assert det.score(x[:0]).shape == (0,)


def test_nonfinite_rows_score_nan_and_do_not_leak(built: dict) -> None:
    det = LiteRTDetector(built["pkg"])
    x = _rows(10, 8)
    ref = det.score(x)
    x[3, 2] = np.nan
    s = det.score(x)
    assert np.isnan(s[3])
    np.testing.assert_array_equal(np.delete(s, 3), np.delete(ref, 3))


def test_wrong_width_is_a_value_error(built: dict) -> None:
    det = LiteRTDetector(built["pkg"])
    assert det.dim != 5
    with pytest.raises(ValueError, match=rf"\(N, {det.dim}\), got shape \(3, 5\)"):
        det.score(np.zeros((3, 5), np.float32))


def test_manifest_quantization_must_match_the_model(built: dict) -> None:
    _, blob, model, _ = split(built["data"])
    m = json.loads(blob)
    m["input"]["scale"] *= 2
    pkg = read_package(pack(m, model), None)
    with pytest.raises(PackageError) as err:
        LiteRTDetector(pkg)
    assert err.value.reason == "model"


def test_calibration_from_federated_stats(built: dict) -> None:
    """A server without data calibrates on rows synthesised from feature statistics."""
    stats = task.combine_stats([task.feature_stats(built["train"][:3000]),
                                task.feature_stats(built["train"][3000:])])
    conv = to_tflite(built["model"], stats=stats, n_synth=6000)
    assert conv.calibration_source == "stats"
    assert len(conv.tflite) <= 32 * 1024
    x = np.concatenate([_rows(2000, 9), _anomalies(2000, 10)])
    y = np.r_[np.zeros(2000), np.ones(2000)]
    m = dict(built["pkg"].manifest, input=conv.input_quant, output=conv.output_quant)
    from edge_agent.inference import Int8AutoencoderScorer

    s = Int8AutoencoderScorer(conv.tflite, m).score(x)
    assert abs(roc_auc_score(y, s) - roc_auc_score(y, task.score_rows(built["model"], x))) < 0.02


def test_threshold_floor_is_the_manifest_quantile(built: dict) -> None:
    from edge_agent.config import ThresholdConfig
    from edge_agent.thresholds import GroupThreshold

    det = LiteRTDetector(built["pkg"])
    q = built["pkg"].manifest["threshold"]["quantiles"]
    assert det.threshold_quantiles[0.9999] == q["0.9999"]
    thr = GroupThreshold.for_detector(4, ThresholdConfig(), det)
    assert thr.floor == q["0.9999"] > 0
    assert GroupThreshold.for_detector(4, ThresholdConfig(floor_quantile=0.99999), det).floor \
        == q["0.99999"]


def test_saturation_counts_clipped_int8_inputs(built: dict) -> None:
    from edge_agent.model_health import ModelHealth

    det = LiteRTDetector(built["pkg"])
    normal = _rows(200, 7)
    sat_values, sat_rows = det.saturation(normal)
    far = normal.copy()
    far[:10, 0] = 1e6  # ten rows far outside anything seen in training
    far_values, far_rows = det.saturation(far)
    assert far_rows - sat_rows >= 9 and far_values > sat_values
    mh = ModelHealth()
    mh.observe(det, normal, det.score(normal), fallback=False)
    (r,) = mh.take()
    assert r["score_psi"] is not None and r["saturation_rate"] is not None
