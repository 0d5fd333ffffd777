"""`edge_agent.memory.tune_malloc`: glibc's thresholds set once, an operator's own win."""

from __future__ import annotations

import ctypes

import pytest

from edge_agent import memory


def test_the_thresholds_are_set_through_mallopt(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []

    class Libc:
        class mallopt:  # noqa: N801 - mimics a ctypes function
            argtypes: list = []
            restype = None

            def __new__(cls, param: int, value: int) -> int:  # type: ignore[misc]
                calls.append((param, value))
                return 1

    for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(ctypes, "CDLL", lambda _name: Libc())
    assert memory.tune_malloc(1 << 20, 8 << 20) is True
    assert calls == [(memory.M_MMAP_THRESHOLD, 1 << 20), (memory.M_TRIM_THRESHOLD, 8 << 20)]


def test_an_operators_environment_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    monkeypatch.setattr(ctypes, "CDLL", lambda _name: pytest.fail("mallopt was called"))
    assert memory.tune_malloc() is False


def test_a_c_library_without_mallopt_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(ctypes, "CDLL", lambda _name: object())  # no attribute mallopt
    assert memory.tune_malloc() is False


def test_on_this_machine_glibc_takes_them() -> None:
    assert memory.tune_malloc() is True  # the CI and gateway images are glibc (Debian)
