"""Detectors behind one small contract (`Detector`): see `base.py`."""

from edge_agent.detectors.base import Detector, LearningDetector

__all__ = ["Detector", "LearningDetector"]
