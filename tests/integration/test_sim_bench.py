"""`fiberwatch bench sim --quick` runs end to end against a real Mosquitto and renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from fiberwatch.bench import sim

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_quick_bench_measures_both_parts_and_renders(tmp_path: Path) -> None:
    result = sim.run(quick=True, out_dir=tmp_path)
    gen, pub = result["generation"], result["publish"]
    for part in ("blocks", "frames_int16"):
        assert gen[part]["samples"] == 3 * 2000 * 1024 and gen[part]["samples_per_s_cpu"] > 0
    for who in ("sim", "bare_paho_peer"):
        assert pub[who]["frames_sent"] == 80
        assert 0 < pub[who]["frames_received"] <= pub[who]["frames_sent"]
    assert pub["sim_over_bare"] > 0
    text = sim.to_markdown(result)
    assert text.startswith("## sim:") and "bare paho" in text and "nan" not in text
