"""Model package format: round trip, tampering, keys, feature-spec refusal."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.features import FeatureSpec
from edge_agent.package import (
    HEADER_SIZE,
    PackageError,
    check_feature_spec,
    read_package,
    split,
)
from federation.registry.keys import generate, load_private, save_pair
from federation.registry.package import build_package, quantiles_from_histograms, score_histogram

SPEC = FeatureSpec(profile="dts", sample_rate_hz=1.0, window_s=8.0, hop_s=4.0)
FAKE_MODEL = bytes(range(256)) * 8  # read_package never runs the model


def _build(private=None, spec: FeatureSpec = SPEC, version: str = "dts-test-1") -> bytes:
    d = spec.dim
    q = {"dtype": "int8", "scale": 0.05, "zero_point": 0}
    return build_package(
        tflite=FAKE_MODEL, spec=spec, mean=np.zeros(d), std=np.ones(d), error_scale=np.ones(d),
        input_quant=q, output_quant=q, threshold={"quantiles": {"0.5": 1.0, "0.999": 4.0}},
        version=version, parent="dts-test-0", training={"rows": 10}, private_key=private,
    )


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate()


def test_round_trip(keys: tuple[bytes, bytes]) -> None:
    priv, pub = keys
    data = _build(load_private(priv))
    pkg = read_package(data, pub)
    assert pkg.version == "dts-test-1"
    assert pkg.manifest["parent"] == "dts-test-0"
    assert pkg.tflite == FAKE_MODEL
    assert pkg.feature_spec_hash == SPEC.hash
    assert pkg.dim == SPEC.dim == 5
    assert pkg.signed
    assert len(pkg.sha256) == 64
    assert pkg.manifest["input"]["scale"] == 0.05


@pytest.mark.parametrize("section", ["header", "manifest", "model", "signature"])
def test_flipped_byte_is_refused(keys: tuple[bytes, bytes], section: str) -> None:
    priv, pub = keys
    data = bytearray(_build(load_private(priv)))
    signed, man, model, sig = split(bytes(data))
    offset = {"header": 9, "manifest": HEADER_SIZE + len(man) // 2,
              "model": HEADER_SIZE + len(man) + 100, "signature": len(data) - 10}[section]
    data[offset] ^= 0x01
    with pytest.raises(PackageError) as err:
        read_package(bytes(data), pub)
    assert err.value.reason == ("format" if section == "header" else "signature")


def test_tampered_model_without_key_fails_on_hash(keys: tuple[bytes, bytes]) -> None:
    data = bytearray(_build(load_private(keys[0])))
    data[-64 - 5] ^= 0xFF  # last bytes of the model
    with pytest.raises(PackageError) as err:
        read_package(bytes(data), None)
    assert err.value.reason == "model"


def test_wrong_key_is_refused(keys: tuple[bytes, bytes]) -> None:
    data = _build(load_private(keys[0]))
    _, other_pub = generate()
    with pytest.raises(PackageError) as err:
        read_package(data, other_pub)
    assert err.value.reason == "signature"
    assert "does not verify" in str(err.value)


def test_unsigned_package_refused_when_a_key_is_required(keys: tuple[bytes, bytes]) -> None:
    data = _build(None)
    assert read_package(data, None).signed is False
    with pytest.raises(PackageError, match="not signed") as err:
        read_package(data, keys[1])
    assert err.value.reason == "unsigned"


@pytest.mark.parametrize("cut", [0, 5, HEADER_SIZE, -1])
def test_truncated_is_format_error(keys: tuple[bytes, bytes], cut: int) -> None:
    data = _build(load_private(keys[0]))
    with pytest.raises(PackageError) as err:
        read_package(data[:cut] if cut >= 0 else data[:cut], keys[1])
    assert err.value.reason == "format"
    assert isinstance(err.value, ValueError)


def test_not_a_package() -> None:
    with pytest.raises(PackageError) as err:
        read_package(b"PK\x03\x04" + bytes(100), None)
    assert err.value.reason == "format"


def test_other_feature_spec_is_refused(keys: tuple[bytes, bytes]) -> None:
    pkg = read_package(_build(load_private(keys[0])), keys[1])
    other = FeatureSpec(profile="dts", sample_rate_hz=1.0, window_s=16.0, hop_s=4.0)
    with pytest.raises(PackageError) as err:
        check_feature_spec(pkg, other.hash)
    assert err.value.reason == "feature_spec"
    with pytest.raises(PackageError) as err:
        read_package(_build(load_private(keys[0])), keys[1], feature_spec_hash=other.hash)
    assert err.value.reason == "feature_spec"
    check_feature_spec(pkg, SPEC.hash)  # the right spec passes


def test_manifest_errors_name_the_field() -> None:
    from edge_agent.package import pack

    data = _build(None)
    _, man, model, _ = split(data)
    import json

    m = json.loads(man)
    m["error_scale"] = m["error_scale"][:-1]
    with pytest.raises(PackageError, match="error_scale") as err:
        read_package(pack(m, model), None)
    assert err.value.reason == "manifest"
    del m["version"]
    with pytest.raises(PackageError, match="'version'"):
        read_package(pack(m, model), None)


def test_keys_on_disk(tmp_path) -> None:
    kid = save_pair(tmp_path / "k.pem", tmp_path / "k.pub")
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    data = _build(load_private(tmp_path / "k.pem"))
    pkg = read_package(data, (tmp_path / "k.pub").read_bytes())
    assert pkg.manifest["signer_key_id"] == kid
    from federation.registry.keys import KeyFileError

    with pytest.raises(KeyFileError, match="exists"):
        save_pair(tmp_path / "k.pem", tmp_path / "k.pub")


def test_histogram_quantiles_bound_the_exact_ones() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.gamma(2.0, 0.5, 20000), rng.gamma(2.0, 0.6, 30000)
    q = quantiles_from_histograms([score_histogram(a), score_histogram(b)], (0.5, 0.99))
    exact = np.quantile(np.r_[a, b], [0.5, 0.99])
    assert exact[0] <= q["0.5"] <= exact[0] * 1.06
    assert exact[1] <= q["0.99"] <= exact[1] * 1.06
