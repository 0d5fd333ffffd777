"""Model registry: add, transitions, rollback, history, two processes."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from edge_agent.features import FeatureSpec
from federation.registry.keys import generate, load_private
from federation.registry.package import build_package
from federation.registry.store import Registry

SPEC = FeatureSpec(profile="dts", sample_rate_hz=1.0, window_s=8.0, hop_s=4.0)
KEYS = generate()


def _pkg(version: str, parent: str | None = None, model: bytes = b"m" * 300) -> bytes:
    d = SPEC.dim
    q = {"dtype": "int8", "scale": 0.05, "zero_point": 0}
    return build_package(
        tflite=model, spec=SPEC, mean=np.zeros(d), std=np.ones(d), error_scale=np.ones(d),
        input_quant=q, output_quant=q, threshold={"quantiles": {"0.5": 1.0}},
        version=version, parent=parent, evaluation={"auc": 0.9},
        private_key=load_private(KEYS[0]),
    )


def test_add_get_list(tmp_path: Path) -> None:
    reg = Registry(tmp_path, public_key=KEYS[1])
    rec = reg.add(_pkg("v1"))
    assert rec.state == "candidate" and rec.parent is None
    assert rec.metrics == {"auc": 0.9}
    assert reg.get("v1").package_hash == rec.package_hash
    assert reg.package_bytes("v1") == _pkg_bytes_of(reg, "v1")
    reg.add(_pkg("v2", "v1"), metrics={"f1": 0.8})
    assert [r.version for r in reg.list()] == ["v1", "v2"]
    assert reg.get("v2").parent == "v1" and reg.get("v2").metrics == {"f1": 0.8}
    assert reg.get("v2").to_dict()["state"] == "candidate"
    with pytest.raises(KeyError):
        reg.get("nope")
    assert reg.production() is None


def _pkg_bytes_of(reg: Registry, version: str) -> bytes:
    return Path(reg.get(version).path).read_bytes()


def test_add_is_idempotent_but_refuses_a_different_package(tmp_path: Path) -> None:
    reg = Registry(tmp_path, public_key=KEYS[1])
    data = _pkg("v1")
    assert reg.add(data).package_hash == reg.add(data).package_hash
    with pytest.raises(ValueError, match="already exists"):
        reg.add(_pkg("v1", model=b"x" * 300))


def test_add_refuses_bad_signature(tmp_path: Path) -> None:
    from edge_agent.package import PackageError

    reg = Registry(tmp_path, public_key=generate()[1])
    with pytest.raises(PackageError):
        reg.add(_pkg("v1"))
    assert reg.list() == []


def test_transitions_and_rollback(tmp_path: Path) -> None:
    reg = Registry(tmp_path, public_key=KEYS[1])
    for v in ("v1", "v2", "v3"):
        reg.add(_pkg(v))
    reg.promote("v1", to="production", reason="first", actor="ops")
    reg.promote("v2", to="canary", actor="fl")
    reg.promote("v2", to="production", reason="canary ok", actor="fl")
    assert reg.production().version == "v2"
    assert reg.get("v1").state == "retired"
    with pytest.raises(ValueError, match="cannot promote"):
        reg.promote("v1", to="production")  # retired -> production only via rollback
    with pytest.raises(ValueError, match="cannot promote"):
        reg.promote("v2", to="canary")
    with pytest.raises(ValueError, match="unknown state"):
        reg.promote("v3", to="gold")
    rec = reg.rollback(reason="false alarms", actor="ops")
    assert rec.version == "v1" and reg.production().version == "v1"
    assert reg.get("v2").state == "retired"
    # the history names every change, in order
    h = reg.history()
    assert [(e["version"], e["from"], e["to"]) for e in h] == [
        ("v1", None, "candidate"), ("v2", None, "candidate"), ("v3", None, "candidate"),
        ("v1", "candidate", "production"), ("v2", "candidate", "canary"),
        ("v1", "production", "retired"), ("v2", "canary", "production"),
        ("v2", "production", "retired"), ("v1", "retired", "production"),
    ]
    assert h[-1]["reason"] == "false alarms" and h[-1]["actor"] == "ops" and h[-1]["time"]
    # rolling back again goes to v2 (most recent previous production)
    assert reg.rollback().version == "v2"


def test_rollback_without_previous_production(tmp_path: Path) -> None:
    reg = Registry(tmp_path, public_key=KEYS[1])
    reg.add(_pkg("v1"), state="production")
    with pytest.raises(ValueError, match="no previous production"):
        reg.rollback()


def test_state_survives_reopen(tmp_path: Path) -> None:
    Registry(tmp_path, public_key=KEYS[1]).add(_pkg("v1"), state="production")
    assert Registry(tmp_path).production().version == "v1"
    assert not list(tmp_path.glob("**/*.tmp"))


def _worker(root: str, start: int) -> None:
    reg = Registry(Path(root), public_key=KEYS[1])
    for i in range(start, start + 8):
        reg.add(_pkg(f"w{i}"))
        reg.promote(f"w{i}", to="production", actor=str(start))


def test_two_processes_do_not_lose_updates(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), s)) for s in (0, 100)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    reg = Registry(tmp_path, public_key=KEYS[1])
    recs = reg.list()
    assert len(recs) == 16
    assert sum(r.state == "production" for r in recs) == 1
    assert len(reg.history()) == 16 + 16 + 15  # added, promoted, retired by the next one


@pytest.mark.parametrize("version", ["v1\n", "v1/../x", ".hidden"])
def test_a_version_that_is_not_a_safe_file_name_is_refused(tmp_path: Path, version: str) -> None:
    reg = Registry(tmp_path, public_key=KEYS[1])
    with pytest.raises(ValueError, match="safe file name"):
        reg.add(_pkg(version))


@pytest.mark.parametrize("start", ["candidate", "canary", "production", "retired"])
def test_the_api_fake_moves_as_the_real_registry(tmp_path: Path, start: str) -> None:
    """`cloud.api.memory.MemoryRegistry` (the API and dashboard tests' registry) accepts and
    refuses exactly the moves the real one does."""
    from cloud.api.memory import MemoryModel, MemoryRegistry
    from federation.registry.store import STATES

    for to in STATES:
        real = Registry(tmp_path / f"{start}-{to}", public_key=KEYS[1])
        real.add(_pkg("v1"), state=start)
        fake = MemoryRegistry(MemoryModel("v1", state=start))
        outcomes = []
        for reg in (real, fake):
            try:
                outcomes.append(reg.promote("v1", to=to).state)
            except ValueError as exc:
                outcomes.append(str(exc))
        assert outcomes[0] == outcomes[1], (start, to)
