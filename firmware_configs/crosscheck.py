"""Checks across config files: gateways against the interrogators that feed them.

The other side of a pair is looked up among the files checked together, then in the file's
own folder and in the sibling ``interrogators/`` or ``gateways/`` folder (the layout of
``firmware_configs/``). A side that is not at hand is not checked: a deployed gateway's
``/etc/fiberwatch/well-a.toml`` has no interrogator files next to it, and needs none.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from edge_agent.bridge.config import BridgeConfig
from edge_agent.config import GatewayConfig, StreamConfig
from firmware_configs.check import CheckResult, validate_file
from firmware_configs.interrogator import InterrogatorConfig

#: Fields that a gateway's ``[[streams]]`` entry and the interrogator's ``[stream]`` share.
MATCHED = ("kind", "first_channel", "channels", "spacing_m", "fiber_offset_m", "sample_rate_hz")


class _Index:
    """Valid configs at hand: the files checked together first, then their neighbours."""

    def __init__(self, results: list[CheckResult]) -> None:
        self._seen = {r.path.resolve(): r for r in results}
        self._order = list(results)

    def near(self, path: Path, sibling: str) -> list[CheckResult]:
        folder = path.resolve().parent
        for d in (folder, folder.parent / sibling):
            for p in sorted(d.glob("*.toml")) if d.is_dir() else ():
                if p.resolve() not in self._seen:
                    self._seen[p.resolve()] = found = validate_file(p)
                    self._order.append(found)
        return [r for r in self._order if r.config is not None]

    def interrogator(self, near: Path, ident: str) -> CheckResult | None:
        return next((r for r in self.near(near, "interrogators")
                     if isinstance(r.config, InterrogatorConfig) and r.config.id == ident), None)

    def gateway(self, near: Path, site: str, ident: str) -> CheckResult | None:
        for r in self.near(near, "gateways"):
            cfg = r.config
            if isinstance(cfg, GatewayConfig) and (cfg.gateway.site, cfg.gateway.id) == (
                site, ident
            ):
                return r
        return None


def check_files(paths: Iterable[Path | str]) -> list[CheckResult]:
    """Check files together: each alone, then each against the other side of its pairs."""
    results = [validate_file(p) for p in paths]
    index = _Index(results)
    for r in results:
        _check_unique_id(r, results)
        if isinstance(r.config, InterrogatorConfig):
            _check_interrogator(r, r.config, index)
        elif isinstance(r.config, GatewayConfig):
            for i, stream in enumerate(r.config.streams):
                _check_stream(r, r.config, i, stream, index)
        elif isinstance(r.config, BridgeConfig):
            _check_bridge(r, r.config, index)
    return results


#: Fields a bridge's ``[das]``/``[dts]`` table shares with the interrogator's ``[stream]``.
BRIDGE_MATCHED = ("first_channel", "channels", "sample_rate_hz", "spacing_m", "fiber_offset_m",
                  "gauge_length_m")


def _check_bridge(r: CheckResult, cfg: BridgeConfig, index: _Index) -> None:
    """A bridge's streams against the interrogators of its gateway, when they are at hand."""
    site, gw = cfg.bridge.site, cfg.bridge.gateway
    for kind, inp in (("das", cfg.das), ("dts", cfg.dts)):
        if inp is None:
            continue
        found = next((x for x in index.near(r.path, "interrogators")
                      if isinstance(x.config, InterrogatorConfig)
                      and (x.config.interrogator.site, x.config.interrogator.gateway,
                           x.config.stream.kind) == (site, gw, kind)), None)
        if found is None or not isinstance(found.config, InterrogatorConfig):
            continue
        theirs = found.config.stream
        for name in BRIDGE_MATCHED:
            if not hasattr(inp, name):
                continue
            mine, other = getattr(inp, name), getattr(theirs, name)
            if mine is not None and other is not None and mine != other:
                r.add(f"{kind}.{name}", f"{mine!r} here, but interrogator "
                      f"{found.config.id!r} ({found.path}) has stream.{name} = {other!r}")


def check_file(path: Path | str) -> list[str]:
    """Problems of one file, checked against its neighbours too; [] when it is valid."""
    return check_files([path])[0].problems


def _identity(r: CheckResult) -> tuple[str, ...] | None:
    if isinstance(r.config, InterrogatorConfig):
        return ("interrogator.id", r.config.id)
    if isinstance(r.config, GatewayConfig):
        return ("gateway.id", r.config.gateway.site, r.config.gateway.id)
    return None


def _check_unique_id(r: CheckResult, results: list[CheckResult]) -> None:
    """Two interrogators with one id, or two gateways with one site and id, are one too many."""
    mine = _identity(r)
    for other in results:
        if other is r or mine is None:
            return
        if _identity(other) == mine:
            r.add(mine[0], f"{mine[-1]!r} is also the id in {other.path}")


def _check_stream(
    r: CheckResult, cfg: GatewayConfig, i: int, stream: StreamConfig, index: _Index
) -> None:
    if not stream.interrogator:
        return
    found = index.interrogator(r.path, stream.interrogator)
    if found is None:
        return  # not at hand: nothing to compare with
    icfg = found.config
    assert isinstance(icfg, InterrogatorConfig)
    where = f"interrogator {icfg.id!r} ({found.path})"
    for name in MATCHED:
        mine, theirs = getattr(stream, name), getattr(icfg.stream, name)
        if mine != theirs:
            r.add(f"streams.{i}.{name}", f"{mine!r} here, but {where} sends stream.{name} = "
                  f"{theirs!r}")
    ident = icfg.interrogator
    if (ident.site, ident.gateway) != (cfg.gateway.site, cfg.gateway.id):
        r.add(f"streams.{i}.interrogator", f"{where} feeds gateway {ident.gateway!r} at site "
              f"{ident.site!r}, not {cfg.gateway.id!r} at {cfg.gateway.site!r}")


def _check_interrogator(r: CheckResult, cfg: InterrogatorConfig, index: _Index) -> None:
    ident = cfg.interrogator
    found = index.gateway(r.path, ident.site, ident.gateway)
    if found is None:
        return
    gcfg = found.config
    assert isinstance(gcfg, GatewayConfig)
    stream = gcfg.stream(cfg.stream.kind)
    where = f"gateway {ident.gateway!r} ({found.path})"
    if stream is None:
        r.add("interrogator.gateway", f"{where} has no {cfg.stream.kind} stream: nothing would "
              "take these frames")
    elif stream.interrogator and stream.interrogator != cfg.id:
        r.add("interrogator.gateway", f"{where} takes its {cfg.stream.kind} stream from "
              f"interrogator {stream.interrogator!r}, not {cfg.id!r}")
