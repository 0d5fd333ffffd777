"""The agent imports and scores with the ``edge`` extra alone: importing torch, TensorFlow,
Flower, FastAPI or scikit-learn anywhere on its path fails the test."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

BLOCK = textwrap.dedent("""
    import importlib.abc, sys
    FORBIDDEN = ("torch", "tensorflow", "flwr", "fastapi", "sklearn", "litert_torch")
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FORBIDDEN:
                raise ImportError(f"forbidden on a gateway: {name}")
            return None
    sys.meta_path.insert(0, Block())
""")

AGENT = BLOCK + textwrap.dedent("""
    import time
    import numpy as np
    import edge_agent.main, edge_agent.pipeline, edge_agent.mqtt_source, edge_agent.workers
    import edge_agent.hot_swap, edge_agent.uplink, edge_agent.inference
    import fiberwatch.commands.edge, fiberwatch.bench.edge
    from edge_agent import wire
    from edge_agent.config import EventConfig, StreamConfig, ThresholdConfig
    from edge_agent.detectors.stats import RobustZDetector
    from edge_agent.hot_swap import ModelSlot
    from edge_agent.metrics import Metrics
    from edge_agent.pipeline import StreamPipeline
    from edge_agent.types import RawMessage

    s = StreamConfig(kind="das", channels=16, sample_rate_hz=2000.0, window_s=0.5, hop_s=0.25)
    spec = s.feature_spec()
    slot = ModelSlot(RobustZDetector(spec.dim), spec_hash=spec.hash, public_key=None,
                     latency_budget_ms=50, smoke_windows=2)
    class Sink:
        def send_event(self, e): pass
        def send_summary(self, x): pass
    m = Metrics()
    p = StreamPipeline(site="s", gateway="g", stream=s, thresholds=ThresholdConfig(),
                       events=EventConfig(), slot=slot, sink=Sink(), metrics=m)
    rng = np.random.default_rng(0)
    for k in range(40):
        x = rng.normal(size=(100, 16)).astype(np.float32)
        p.handle(RawMessage("t", wire.encode(wire.StreamKind.DAS, k, k * 50_000_000, 2000.0,
                                             0, x), time.time_ns()))
    assert m.snapshot()["windows"] == 7, m.snapshot()
    bad = [n for n in sys.modules if n.split(".")[0] in ("torch", "tensorflow", "flwr",
                                                         "fastapi", "sklearn")]
    assert not bad, bad
    print("ok", m.snapshot()["windows"])
""")

CLI = BLOCK + textwrap.dedent("""
    from fiberwatch.cli import build_parser
    build_parser().parse_args(["edge", "run", "--config", "x.toml"])
    print("ok")
""")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_agent_imports_and_scores_without_training_or_cloud_packages() -> None:
    r = _run(AGENT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("ok")


@pytest.mark.parametrize("code", [CLI], ids=["cli"])
def test_the_edge_command_line_loads_without_them(code: str) -> None:
    r = _run(code)
    assert r.returncode == 0, r.stderr[-3000:]
