"""Model trust: serial / targets / not_after in the signed manifest, the gateway's policy and its
persisted serials, the slot's typed and counted refusals, the config's key-or-dev-flag rule,
health, the registry's verification and re-publication."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edge_agent.config import ConfigError, load_gateway_config
from edge_agent.features import FeatureSpec
from edge_agent.hot_swap import ModelSlot
from edge_agent.main import trust_health
from edge_agent.package import PackageError, read_package
from edge_agent.trust import ModelTrust, SerialStore
from federation.registry.keys import generate, load_private
from federation.registry.package import build_package, sign_package
from federation.registry.store import Registry, RegistryTrustError
from firmware_configs import GATEWAYS

SPEC = FeatureSpec(profile="dts", sample_rate_hz=1.0, window_s=8.0, hop_s=4.0)
KEYS = generate()
OTHER = generate()
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def pkg(version: str, *, serial: int = 1, key: bytes | None = KEYS[0], **kw: object) -> bytes:
    d = SPEC.dim
    q = {"dtype": "int8", "scale": 0.05, "zero_point": 0}
    return build_package(
        tflite=b"m" * 300, spec=SPEC, mean=np.zeros(d), std=np.ones(d), error_scale=np.ones(d),
        input_quant=q, output_quant=q, threshold={"quantiles": {"0.5": 1.0}}, version=version,
        private_key=load_private(key) if key else None, serial=serial, **kw)  # type: ignore[arg-type]


def trust(tmp_path: Path, *, site: str = "s1", gw: str = "g1") -> ModelTrust:
    return ModelTrust(site, gw, "dts", SerialStore(tmp_path / "serials.json"), clock=lambda: NOW)


# -- the manifest ------------------------------------------------------------------------------
def test_trust_fields_are_signed_and_read_back() -> None:
    p = read_package(pkg("v1", serial=7, targets=["s1/g1", "s2"],
                         not_after=NOW + timedelta(days=1)), KEYS[1])
    assert p.serial == 7 and p.targets == ["s1/g1", "s2"]
    assert p.not_after == NOW + timedelta(days=1)


def test_default_serial_is_the_signing_time_in_ms() -> None:
    d = SPEC.dim
    q = {"dtype": "int8", "scale": 0.05, "zero_point": 0}
    before = datetime.now(UTC).timestamp() * 1000
    data = build_package(tflite=b"m" * 300, spec=SPEC, mean=np.zeros(d), std=np.ones(d),
                         error_scale=np.ones(d), input_quant=q, output_quant=q,
                         threshold={"quantiles": {"0.5": 1.0}}, version="v")
    assert read_package(data, None).serial >= before - 1


@pytest.mark.parametrize("updates", [{"targets": "s1"}, {"targets": [1]}, {"serial": -1},
                                     {"serial": "3"}, {"not_after": "2026-12-04T12:00:00"},
                                     {"not_after": "tomorrow"}])
def test_malformed_trust_fields_are_manifest_errors(updates: dict) -> None:
    with pytest.raises(PackageError) as err:
        sign_package(pkg("v1"), load_private(KEYS[0]), updates)
    assert err.value.reason == "manifest"


def test_changing_a_signed_serial_breaks_the_signature() -> None:
    data = pkg("v1", serial=5)
    forged = data.replace(b'"serial":5', b'"serial":9')
    assert forged != data
    with pytest.raises(PackageError) as err:
        read_package(forged, KEYS[1])
    assert err.value.reason == "signature"


# -- the gateway's policy ------------------------------------------------------------------------
def _check(t: ModelTrust, data: bytes) -> None:
    t.check(read_package(data, KEYS[1]))


@pytest.mark.parametrize(("targets", "ok"), [
    (None, True), (["s1"], True), (["s1/g1"], True), (["s2", "s1/g1"], True),
    (["s1/g2"], False), (["s2"], False), (["g1"], False), (["s2/g1"], False)])
def test_targets(tmp_path: Path, targets: list[str] | None, ok: bool) -> None:
    data = pkg("v1", targets=targets)
    if ok:
        _check(trust(tmp_path), data)
    else:
        with pytest.raises(PackageError) as err:
            _check(trust(tmp_path), data)
        assert err.value.reason == "target"


def test_expired_is_refused(tmp_path: Path) -> None:
    _check(trust(tmp_path), pkg("v1", not_after=NOW + timedelta(seconds=1)))
    with pytest.raises(PackageError) as err:
        _check(trust(tmp_path), pkg("v2", not_after=NOW - timedelta(seconds=1)))
    assert err.value.reason == "expired"


def test_serials_only_go_up_and_survive_a_restart(tmp_path: Path) -> None:
    t = trust(tmp_path)
    v5 = read_package(pkg("v5", serial=5), KEYS[1])
    t.check(v5)
    t.accept(v5)
    t.check(v5)  # the same package again (the retained copy after a reconnect)
    for data, why in ((pkg("v4", serial=4), "lower"), (pkg("v5b", serial=5), "same, other")):
        with pytest.raises(PackageError) as err:
            _check(t, data)
        assert err.value.reason == "serial", why
    again = trust(tmp_path)  # a new process: the record is on disk
    with pytest.raises(PackageError, match="accepted serial 5"):
        _check(again, pkg("v4", serial=4))
    _check(again, pkg("v6", serial=6))
    assert json.loads((tmp_path / "serials.json").read_text())["dts"]["serial"] == 5


def test_a_corrupt_serial_record_is_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "serials.json").write_text("{not json")
    with pytest.raises(PackageError) as err:
        SerialStore(tmp_path / "serials.json")
    assert err.value.reason == "serial"


# -- the slot: typed, counted refusals; the active model stays -----------------------------------
class _Det:
    def __init__(self, version: str, package_hash: str) -> None:
        self.version, self.package_hash = version, package_hash
        self.feature_spec_hash = SPEC.hash

    def score(self, rows: np.ndarray) -> np.ndarray:
        return rows.sum(axis=1)


def _loader(data: bytes, public_key: bytes | None) -> _Det:
    p = read_package(data, public_key)
    return _Det(p.version, hashlib.sha256(data).hexdigest())


def _slot(tmp_path: Path, public_key: bytes | None = KEYS[1], with_trust: bool = True) -> ModelSlot:
    return ModelSlot(_Det("stat", ""), spec_hash=SPEC.hash, public_key=public_key,
                     latency_budget_ms=1e6, smoke_windows=1, loader=_loader,
                     trust=trust(tmp_path) if with_trust else None)


ROWS = np.ones((8, SPEC.dim), np.float32)


def test_slot_refusals_are_typed_counted_and_keep_the_active_model(tmp_path: Path) -> None:
    slot = _slot(tmp_path)
    slot.offer(pkg("v10", serial=10), ROWS)
    assert slot.apply_pending() and slot.active.version == "v10"
    offers = {"unsigned": pkg("u", serial=99, key=None),
              "signature": pkg("o", serial=99, key=OTHER[0]),
              "serial": pkg("old", serial=9),
              "target": pkg("t", serial=99, targets=["s1/g2"]),
              "expired": pkg("e", serial=99, not_after=NOW - timedelta(days=1))}
    for reason, data in offers.items():
        slot.offer(data, ROWS)
        assert not slot.apply_pending()
        st = slot.state()
        assert st["last_result"] == "refused" and st["refused"][reason] == 1, reason
        assert slot.active.version == "v10"
    assert slot.state()["refused"] == dict.fromkeys(offers, 1)
    slot.offer(pkg("v11", serial=11), ROWS)
    assert slot.apply_pending() and slot.active.version == "v11"


def test_without_the_policy_an_older_package_would_be_installed(tmp_path: Path) -> None:
    """The protection is what refuses it: the same offers without a policy swap."""
    slot = _slot(tmp_path, with_trust=False)
    slot.offer(pkg("v10", serial=10), ROWS)
    slot.apply_pending()
    slot.offer(pkg("old", serial=9), ROWS)
    assert slot.apply_pending() and slot.active.version == "old"


def test_health_says_loudly_when_unsigned_packages_are_accepted() -> None:
    h = trust_health(None, {"das": {"refused": {"serial": 2}}, "dts": {"refused": {"serial": 1}}})
    assert h["signed_only"] is False and "UNSIGNED" in h["warning"]
    assert h["refused"] == {"serial": 3}
    signed = trust_health(KEYS[1], {"das": {}})
    assert signed["signed_only"] and signed["warning"] is None and len(signed["key_id"]) == 16


# -- config: a key, or the explicit dev flag -----------------------------------------------------
def _variant(tmp_path: Path, name: str, model_lines: str) -> Path:
    text = (GATEWAYS / f"{name}.toml").read_text()
    lines = [x for x in text.splitlines() if not x.startswith("public_key")]
    out = "\n".join(lines).replace("[model]", "[model]\n" + model_lines, 1)
    path = tmp_path / f"{name}.toml"
    path.write_text(out.replace('data_dir = "../../', f'data_dir = "{tmp_path}/'))
    return path


@pytest.mark.parametrize("name", ["well-a", "well-b", "pipeline-1"])
def test_shipped_configs_need_a_key_or_the_dev_flag(tmp_path: Path, name: str) -> None:
    assert load_gateway_config(GATEWAYS / f"{name}.toml").model.public_key is not None
    with pytest.raises(ConfigError, match=r"model\.public_key is required"):
        load_gateway_config(_variant(tmp_path, name, ""))
    cfg = load_gateway_config(_variant(tmp_path, name, "allow_unsigned = true"))
    assert cfg.model.allow_unsigned and cfg.model.public_key is None
    with pytest.raises(ConfigError, match="not both"):
        load_gateway_config(_variant(tmp_path, name, 'allow_unsigned = true\npublic_key = "k"'))


def test_config_check_fails_without_a_key(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from fiberwatch import cli

    assert cli.main(["config", "check", str(_variant(tmp_path, "well-b", ""))]) != 0
    out = capsys.readouterr()
    assert "well-b.toml" in out.err + out.out and "model.public_key is required" in out.err
    assert cli.main(["config", "check",
                     str(_variant(tmp_path, "well-b", "allow_unsigned = true"))]) == 0


def test_insecure_flower_only_on_loopback(tmp_path: Path) -> None:
    path = _variant(tmp_path, "well-a", "allow_unsigned = true")
    text = path.read_text()
    text = "\n".join(x for x in text.splitlines()
                     if not x.startswith(("root_certificates", "auth_key")))
    path.write_text(text.replace("[federation]", "[federation]\ninsecure = true"))
    assert load_gateway_config(path).federation.insecure
    path.write_text(path.read_text().replace('"127.0.0.1:9092"', '"fl.example.com:9092"'))
    with pytest.raises(ConfigError, match="only for a loopback SuperLink"):
        load_gateway_config(path)


# -- registry -----------------------------------------------------------------------------------
def test_registry_refuses_to_promote_what_it_cannot_verify(tmp_path: Path) -> None:
    Registry(tmp_path / "a").add(pkg("v1"))
    with pytest.raises(RegistryTrustError, match="no public key"):
        Registry(tmp_path / "a").promote("v1", to="canary")
    Registry(tmp_path / "a", allow_unsigned=True).promote("v1", to="canary")  # dev
    reg = Registry(tmp_path / "b", public_key=KEYS[1])
    rec = reg.add(pkg("v2"))
    data = bytearray(Path(rec.path).read_bytes())
    data[-70] ^= 1  # the stored file is changed behind the registry's back
    Path(rec.path).write_bytes(bytes(data))
    with pytest.raises(RegistryTrustError, match="refused"):
        reg.promote("v2", to="production")
    assert reg.get("v2").state == "candidate"


def test_republish_is_a_new_version_with_a_higher_serial(tmp_path: Path) -> None:
    reg = Registry(tmp_path, public_key=KEYS[1])
    reg.add(pkg("v1", serial=100), state="production")
    reg.add(pkg("v2", serial=200))
    new = reg.republish("v1", load_private(KEYS[0]), reason="rollback")
    p = read_package(reg.verified_package(new.version), KEYS[1])
    assert new.version.startswith("v1.r") and p.serial > 200
    assert p.manifest["model_sha256"] == read_package(reg.package_bytes("v1"), None) \
        .manifest["model_sha256"]
    assert p.manifest["parent"] == "v1"
    t = trust(tmp_path / "gw")
    t.accept(read_package(reg.package_bytes("v2"), KEYS[1]))
    t.check(p)  # a gateway on v2 accepts the rollback package


# -- the command line ----------------------------------------------------------------------------
def _keys_on_disk(tmp_path: Path) -> tuple[Path, Path]:
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    priv.write_bytes(KEYS[0])
    pub.write_bytes(KEYS[1])
    return priv, pub


def test_cli_sign_sets_trust_fields_and_republish_rolls_back(tmp_path: Path) -> None:
    from fiberwatch import cli

    priv, pub = _keys_on_disk(tmp_path)
    f = tmp_path / "p.fwpkg"
    f.write_bytes(pkg("v1", serial=3))
    assert cli.main(["model", "sign", str(f), "--key", str(priv), "--serial", "40",
                     "--target", "s1/g1", "--target", "s2", "--valid-days", "2"]) == 0
    p = read_package(f.read_bytes(), KEYS[1])
    assert p.serial == 40 and p.targets == ["s1/g1", "s2"] and p.not_after is not None
    assert cli.main(["model", "sign", str(f), "--key", str(priv), "--target", "bad/x/y"]) == 2
    reg = Registry(tmp_path / "reg", public_key=KEYS[1])
    reg.add(f.read_bytes(), state="production")
    reg.add(pkg("v2", serial=50))
    reg.promote("v2", to="production")
    assert cli.main(["model", "republish", "v1", "--registry", str(tmp_path / "reg"), "--key",
                     str(priv), "--public-key", str(pub), "--to", "production"]) == 0
    prod = reg.production()
    assert prod is not None and prod.version.startswith("v1.r")
    assert read_package(reg.package_bytes(prod.version), KEYS[1]).serial > 50


def test_a_serial_that_cannot_be_recorded_refuses_the_package(tmp_path: Path) -> None:
    store = SerialStore(tmp_path / "blocked" / "serials.json")
    (tmp_path / "blocked").write_text("a file where the data_dir should be")
    slot = ModelSlot(_Det("stat", ""), spec_hash=SPEC.hash, public_key=KEYS[1],
                     latency_budget_ms=1e6, smoke_windows=1, loader=_loader,
                     trust=ModelTrust("s1", "g1", "dts", store, clock=lambda: NOW))
    slot.offer(pkg("v1", serial=3), ROWS)
    assert not slot.apply_pending() and slot.active.version == "stat"
    assert slot.state()["refused"] == {"serial": 1} and "cannot record" in slot.state()["reason"]
