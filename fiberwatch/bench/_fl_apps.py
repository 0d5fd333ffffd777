"""Misbehaving gateways for the FL benchmark and tests: the real ClientApp
(`federation.flower.client_app.build_app`) with `ClientHooks` that read the node config.

Node config keys (on top of the real app's)::

    attack       = "none"   # "scale:K", "flip:K", "noise:K": a poisoned or broken update
    hang-from    = 0        # from this round on, never reply (the test kills the node)
    hang-marker  = ""       # file created when the hang starts

A SuperNode runs it with ``GatewayNode(..., clientapp="fiberwatch.bench._fl_apps:app")``;
in process, ``rounds.InProcessGrid(app, ...)``.
"""

from __future__ import annotations

import threading

import numpy as np
from flwr.app import Context

from federation.flower.client_app import ClientHooks, build_app, warmup  # noqa: F401 - the worker's


def attack(delta: list[np.ndarray], spec: str, seed: int) -> list[np.ndarray]:
    """A poisoned or broken gateway's update (``spec``: ``kind:K``)."""
    kind, _, k = spec.partition(":")
    f = float(k or 1.0)
    if kind == "scale":
        return [d * f for d in delta]
    if kind == "flip":
        return [-f * d for d in delta]
    if kind == "noise":
        rng = np.random.default_rng(seed)
        return [d + f * rng.standard_normal(d.shape).astype(np.float32) for d in delta]
    return delta


def _attack_if_asked(delta: list[np.ndarray], context: Context, rnd: int) -> list[np.ndarray]:
    return attack(delta, str(context.node_config.get("attack", "none")), rnd)


def _hang_if_asked(context: Context, rnd: int) -> None:
    """A gateway stuck mid-round (the test kills it while it hangs here)."""
    start = int(str(context.node_config.get("hang-from", 0)))
    if start and rnd >= start:
        if marker := str(context.node_config.get("hang-marker", "")):
            open(marker, "w").close()  # noqa: SIM115 - an empty marker file
        threading.Event().wait()


app = build_app(ClientHooks(before_train=_hang_if_asked, on_update=_attack_if_asked))
