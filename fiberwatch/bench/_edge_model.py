"""The model `fiberwatch.bench.edge` runs the agent with: the gateway's real configuration.

A shipped gateway scores with a signed int8 autoencoder package (LiteRT), not with the
statistical fallback detector it starts with. `build` trains one on feature rows of the
bench's own simulated frames (a few seconds of normal 2,048-channel DAS), converts it to
int8, signs it with a key made for the run and writes the package and the public key; the
agent's config then names both (``model.package``, ``model.public_key``: signed models only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.config import StreamConfig

#: frames of the simulation the rows come from (3 s: 5 windows, 10,240 rows)
TRAIN_FRAMES = 60


def training_rows(frames: list[tuple[bytes, float]], stream: StreamConfig) -> np.ndarray:
    """Feature rows of every window over the first `TRAIN_FRAMES` frames (int16 payloads)."""
    from edge_agent.features import FeatureExtractor

    spec = stream.feature_spec()
    x = np.concatenate([np.frombuffer(p, np.int16).reshape(-1, stream.channels)
                        .astype(np.float32) * np.float32(s) for p, s in frames[:TRAIN_FRAMES]])
    fx = FeatureExtractor(spec)
    starts = range(0, x.shape[0] - spec.window_samples + 1, spec.hop_samples)
    rows = np.concatenate([fx.transform(x[k:k + spec.window_samples]) for k in starts])
    if not len(rows):
        raise ValueError(f"{len(frames)} frames hold no {spec.window_s:g} s window")
    return rows


def build(frames: list[tuple[bytes, float]], stream: StreamConfig,
          work: Path) -> dict[str, Any]:
    """Train, convert, sign; write ``work/edge-model.fwpkg`` and ``work/edge-model.pub``.

    Returns the config's ``model`` fields (``package``, ``public_key``) and a ``report``."""
    from federation.model import task
    from federation.registry.keys import generate, load_private
    from federation.registry.package import package_model

    rows = training_rows(frames, stream)
    model, _ = task.prepare_and_fit(rows, epochs=10, batch_size=256)
    private, public = generate()
    pkg, report = package_model(model, stream.feature_spec(), rows=rows,
                                private_key=load_private(private), version="bench-edge-1")
    package, key = work / "edge-model.fwpkg", work / "edge-model.pub"
    package.write_bytes(pkg)
    key.write_bytes(public)
    return {"package": str(package), "public_key": str(key),
            "report": {"version": "bench-edge-1", "training_rows": int(len(rows)),
                       "package_bytes": report["package_bytes"],
                       "tflite_bytes": report["tflite_bytes"]}}
