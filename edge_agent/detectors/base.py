"""The detector contract: score a batch of feature rows, higher = more anomalous.

The frozen int8 LiteRT model (`edge_agent.inference`) and the statistical detectors satisfy
the same Protocol, so hot-swap replaces one object and peers are interchangeable.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Detector(Protocol):
    #: model version that every score and event names ("stat-…" for built-in detectors)
    version: str
    #: sha256 of the model package ("" for built-in detectors)
    package_hash: str
    #: `FeatureSpec.hash` of the rows it expects ("" = any spec with the right width)
    feature_spec_hash: str

    def score(self, rows: np.ndarray) -> np.ndarray:
        """(N, D) float32 feature rows -> (N,) float32 scores. Pure: no state changes."""
        ...


@runtime_checkable
class LearningDetector(Detector, Protocol):
    def learn(self, rows: np.ndarray) -> None:
        """Update from rows known to be normal (never from flagged windows)."""
        ...
