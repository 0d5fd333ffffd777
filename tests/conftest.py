"""Shared fixtures: real Mosquitto and influxd on free loopback ports, in temp dirs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fiberwatch.services import Influxd, Mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker  # type: ignore[misc]


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[Influxd]:
    with Influxd(tmp_path / "influxd") as server:
        yield server  # type: ignore[misc]
