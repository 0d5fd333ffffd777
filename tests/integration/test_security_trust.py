"""The trust half of the self-attack (`fiberwatch.bench._security_trust`): every check passes
against the real parts, and every check fails when its protection is switched off."""

from __future__ import annotations

from pathlib import Path

import pytest

from fiberwatch.bench._security_trust import (
    BIND_CHECK,
    FLOWER_CHECK,
    MODEL_CHECKS,
    Protections,
    run_trust_checks,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAMES = {*MODEL_CHECKS, FLOWER_CHECK, BIND_CHECK}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trust")  # shared: the int8 package is converted once


def test_every_check_passes_against_the_real_parts(workdir: Path) -> None:
    res = run_trust_checks(workdir / "on")
    assert set(res) == NAMES
    failed = {k: v["detail"] for k, v in res.items() if not v["passed"]}
    assert not failed
    assert "refused (serial)" in res["older_serial_refused"]["detail"]


def test_every_check_fails_with_its_protection_switched_off(workdir: Path) -> None:
    off = Protections(signed_models=False, trust_policy=False, node_auth=False,
                      app="tests.integration._unguarded_app:app")
    res = run_trust_checks(workdir / "off", protections=off)
    assert set(res) == NAMES
    passed = {k: v["detail"] for k, v in res.items() if v["passed"]}
    assert not passed
    assert "NOT refused" in res["expired_package_refused"]["detail"]
    assert "served insecure dev on 0.0.0.0" in res[BIND_CHECK]["detail"]
    assert "2 node(s) online" in res[FLOWER_CHECK]["detail"]
