"""The event classifier: `class_hint`'s kind with a confidence in 0..1.

`edge_agent.event_builder.class_hint` decides the kind by rules over the mean feature row of
the flagged channels (band-power rises against the normal reference, kurtosis, extent).
The confidence says by how much the deciding rule held: each rule is a few conditions
``value > limit``; its margin is the smallest ``value / limit`` over them (1 = just held), and
the confidence is ``1 - 0.5 * exp(-(margin - 1))``: 0.5 at the limit, 0.82 at twice it,
-> 1 far beyond. Faults from non-finite samples are certain (1.0). ``unknown`` gets
``0.25 + 0.5 * (1 - best partial margin of the other rules)`` (an event that almost looked
like a leak is a less confident ``unknown``). DTS has one rule per kind (cooling for leaks).
"""

from __future__ import annotations

import math

import numpy as np

from edge_agent.event_builder import _RISE, _band_rises, class_hint


def _confidence(margin: float) -> float:
    return float(min(1.0, max(0.5, 1.0 - 0.5 * math.exp(-(margin - 1.0)))))


def _ratio(value: float, limit: float) -> float:
    return value / limit if limit > 0 else 0.0


def _margins(kind: str, names: tuple[str, ...], row: np.ndarray, reference: np.ndarray | None,
             extent: int, group_size: int) -> dict[str, float]:
    """The margin (min value/limit of its conditions) of every rule."""
    d = dict(zip(names, (row - reference).tolist(), strict=False)) if reference is not None \
        else dict.fromkeys(names, 0.0)
    if kind == "dts":
        return {"leak": _ratio(-d.get("baseline_dev", 0.0), 0.1)}
    b = _band_rises(names, d)
    many = extent / (4 * group_size)
    return {
        "fault": _ratio(-d.get("log_rms", 0.0), 1.0),
        "sand": min(_ratio(d.get("log_kurtosis", 0.0), _RISE), _ratio(b["high"], _RISE),
                    _ratio(b["high"], b["mid"]) if b["mid"] > 0 else 2.0),
        "flow": min(_ratio(b["low"], _RISE), many,
                    _ratio(0.5 * b["low"], b["high"]) if b["high"] > 0 else 2.0),
        "leak": min(_ratio(b["high"], _RISE), _ratio(b["mid"], _RISE / 2), b["broad"] / 0.5),
    }


def classify(kind: str, names: tuple[str, ...], row: np.ndarray, reference: np.ndarray | None,
             *, extent: int, nonfinite: bool, group_size: int) -> tuple[str, float]:
    """(kind, confidence) for an event's mean feature row; kind is `class_hint`'s."""
    hint = class_hint(kind, names, row, reference, extent=extent, nonfinite=nonfinite,
                      group_size=group_size)
    if nonfinite:
        return hint, 1.0
    margins = _margins(kind, names, row, reference, extent, group_size)
    if hint == "unknown":
        best = max([m for m in margins.values() if math.isfinite(m)] or [0.0])
        return hint, round(float(min(1.0, max(0.0, 1.0 - min(best, 1.0)))) * 0.5 + 0.25, 3)
    m = margins.get(hint, 1.0)
    return hint, round(_confidence(m if math.isfinite(m) else 1.0), 3)
