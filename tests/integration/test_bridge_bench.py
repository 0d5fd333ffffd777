"""`fiberwatch bench bridge --quick` runs end to end against a real Mosquitto and renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from fiberwatch.bench import bridge

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_quick_bench_measures_bridge_and_dascore_and_renders(tmp_path: Path) -> None:
    result = bridge.run(quick=True, out_dir=tmp_path)
    samples = 2 * 1 * 2000 * 2048  # 2 files of 1 s, 2,048 channels at 2 kHz
    assert set(result["formats"]) == {"DASDAE", "PRODML"}
    for f in result["formats"].values():
        assert f["dascore"]["samples"] == samples
        for who in ("bridge", "bridge_no_broker"):
            assert f[who]["samples"] == samples and f[who]["files"] == 2
            assert f[who]["frames"] == 40 and f[who]["errors"] == {}
        assert f["bridge"]["received_frames"] == 40  # every frame went through the broker
        assert f["ratio"] == pytest.approx(
            f["bridge"]["samples_per_s"] / f["dascore"]["samples_per_s"], rel=1e-2)
    for key in ("bridge_samples_per_s", "dascore_samples_per_s", "ratio", "realtime_x"):
        assert result[key] > 0
    text = bridge.to_markdown(result)
    assert text.startswith("## bridge") and "DASCore alone" in text and "nan" not in text
