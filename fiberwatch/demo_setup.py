"""Everything the demo writes before it starts a process: keys, gateway configs, schedule.

The demo runs the shipped demo-site configs (`firmware_configs/gateways/*.toml`: two wells
and a pipeline) with the broker port, data dirs, model and channel counts rewritten for
this machine, and a simulator schedule that matches them fiber for fiber.
"""

from __future__ import annotations

import json
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from edge_agent.config import GatewayConfig, load_gateway_config
from firmware_configs import GATEWAYS
from sensors_sim.config import BENIGN

DEMO_GATEWAYS = ("well-a", "well-b", "pipeline-1")
# The demo's threshold warm-up (stream time; the shipped default is 300 s): with the
# quarantine the DAS thresholds flag from 36 s, so the first anomaly comes at 40 s or later
# (`check_onsets_after_warmup`).
DEMO_WARMUP_S = 30.0
# Time allowed for the agents to subscribe after the simulator starts (they miss frames
# until then, so their stream time starts later): ~2 s on an idle 2-core machine, ~3.5 s
# on a busy one.
AGENT_START_SLACK_S = 4.0


class _Under:
    """A path below the layout's root, read as an attribute."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __get__(self, layout: DemoLayout, owner: type | None = None) -> Path:
        return layout.root.joinpath(*self.parts)


@dataclass(frozen=True)
class DemoLayout:
    """Where the demo keeps everything, below ``root``."""

    root: Path
    keys = _Under("keys")
    signing_key = _Under("keys", "model-signing.key")
    public_key = _Under("keys", "model-signing.pub")
    flower_tls = _Under("flower-tls")
    registry = _Under("registry")
    models = _Under("models")
    gateways = _Under("gateways")
    logs = _Under("logs")
    tokens = _Under("tokens.json")
    schedule = _Under("schedule.json")
    labels = _Under("labels.jsonl")
    mqtt = _Under("mqtt")
    alerting_config = _Under("alerts.toml")
    alerts_received = _Under("alerts-received.jsonl")  # what the demo's webhook took

    def node_key(self, gateway: str) -> Path:
        return self.flower_tls / f"{gateway}.key"

    def config(self, gateway: str) -> Path:
        return self.gateways / f"{gateway}.toml"


@dataclass(frozen=True)
class DemoMqtt:
    """The demo broker's security, written by `fiberwatch.deploy` like a real site's: a CA,
    a server certificate for loopback, a login per gateway/interrogator/service, the ACL."""

    out: Path  # the generator's output folder (`fiberwatch.deploy.generate.Layout`)
    broker_dir: Path  # certs/, passwd, acl of the all-in-one broker

    @property
    def ca(self) -> Path:
        return self.broker_dir / "certs" / "ca.crt"

    def password_file(self, user: str) -> Path:
        from fiberwatch.deploy.generate import Layout

        return Layout(self.out).client_dir(user) / "password"

    def flags(self, user: str) -> list[str]:
        """``fiberwatch`` flags that log `user` in over TLS (``{site}``/``{gateway}`` allowed)."""
        return ["--mqtt-username", user, "--mqtt-password-file", str(self.password_file(user)),
                "--mqtt-ca", str(self.ca)]

    def gateway_broker(self, site: str, gw: str) -> dict[str, Any]:
        from fiberwatch.deploy.spec import gateway_user, raw_user

        user = gateway_user(site, gw)
        return {"tls": True, "ca_file": str(self.ca), "username": user,
                "source_username": raw_user(site, gw),
                "password_file": str(self.password_file(user))}


def ensure_mqtt(layout: DemoLayout) -> DemoMqtt:
    """Generate (or reuse) the demo broker's CA, certificate, logins and ACL."""
    from fiberwatch.deploy.generate import Layout, write_single_broker
    from fiberwatch.deploy.spec import DeploySpec, Site

    sites: dict[str, list[str]] = {}
    for name in DEMO_GATEWAYS:
        with (GATEWAYS / f"{name}.toml").open("rb") as f:
            gw = tomllib.load(f)["gateway"]
        sites.setdefault(gw["site"], []).append(gw["id"])
    spec = DeploySpec("127.0.0.1", tuple(Site(k, "127.0.0.1", tuple(v))
                                         for k, v in sites.items()))
    broker_dir = write_single_broker(spec, Layout(layout.mqtt), server_names=("127.0.0.1",))
    return DemoMqtt(layout.mqtt, broker_dir)


def ensure_keys(layout: DemoLayout) -> None:
    from federation.registry.keys import save_pair

    if not layout.signing_key.exists():
        layout.keys.mkdir(parents=True, exist_ok=True)
        save_pair(layout.signing_key, layout.public_key)


def ensure_flower_tls(layout: DemoLayout, gateways: tuple[str, ...]) -> Any:
    """A loopback CA + SuperLink certificate and one SuperNode auth key pair per gateway."""
    from federation.flower.deployment import generate_node_keys, local_tls

    tls = local_tls(layout.flower_tls)
    for name in gateways:
        key = layout.node_key(name)
        if not key.exists():
            generate_node_keys(key, key.with_suffix(".pub"))
    return tls


def write_tokens(layout: DemoLayout) -> str:
    """A fresh admin token for this demo run (the dashboard link carries it)."""
    token = "demo-" + secrets.token_urlsafe(24)
    layout.tokens.write_text(json.dumps({token: {"name": "demo-admin", "role": "admin"}}))
    layout.tokens.chmod(0o600)
    return token


def write_gateway_configs(
    layout: DemoLayout, *, broker_port: int, superlink: str, channels: int | None,
    package: Path | None, mqtt: DemoMqtt | None = None,
) -> dict[str, GatewayConfig]:
    """Rewrite the shipped demo-site configs for this run; return them validated."""
    out: dict[str, GatewayConfig] = {}
    layout.gateways.mkdir(parents=True, exist_ok=True)
    for name in DEMO_GATEWAYS:
        with (GATEWAYS / f"{name}.toml").open("rb") as f:
            data: dict[str, Any] = tomllib.load(f)
        data["gateway"]["data_dir"] = str(layout.root / "state" / name)
        data["broker"]["port"] = broker_port
        if mqtt is not None:
            data["broker"].pop("password_env", None)  # the demo's logins use password files
            data["broker"].update(mqtt.gateway_broker(data["gateway"]["site"],
                                                      data["gateway"]["id"]))
        fed = data.setdefault("federation", {})
        fed.update({"superlink": superlink, "insecure": False, "normal_buffer_windows": 4000,
                    "root_certificates": str(layout.flower_tls / "ca.pem"),
                    "auth_key": str(layout.node_key(name))})
        model = data.setdefault("model", {})
        model.pop("allow_unsigned", None)  # signed models only
        model["public_key"] = str(layout.public_key)
        if package is not None:
            model["package"] = str(package)
        model["latency_budget_ms"] = max(float(model.get("latency_budget_ms", 20.0)), 50.0)
        # short warm-up: the demo is minutes long (`check_onsets_after_warmup`)
        data.setdefault("threshold", {}).update(warmup_windows=20, warmup_s=DEMO_WARMUP_S)
        for stream in data["streams"]:
            stream.pop("interrogator", None)
            if channels is not None:
                stream["channels"] = channels
        path = layout.config(name)
        path.write_text(tomli_w.dumps(data))
        out[name] = load_gateway_config(path)
    return out


def das_flags_from_s(cfg: GatewayConfig) -> float:
    """Stream time (s after a gateway's first DAS frame) from which its DAS thresholds can
    flag: the first window, the warm-up windows (`ThresholdConfig.for_hop`) and the
    quarantine that holds each normal score back before it joins the history."""
    das = cfg.stream("das")
    assert das is not None
    spec = das.feature_spec()
    th = cfg.threshold.for_hop(spec.hop_s, spec.profile)
    return spec.window_s + (th.warmup_windows + th.quarantine_windows) * spec.hop_s


def check_onsets_after_warmup(configs: dict[str, GatewayConfig],
                              onsets: dict[str, list[float]]) -> None:
    """Raise `ValueError` if a scheduled anomaly starts before its gateway's DAS thresholds
    can flag (plus `AGENT_START_SLACK_S`): it would be seen only after the warm-up, not at
    its onset. ``onsets``: per gateway name, its anomalies' onsets (benign events, such as
    the valve, are not anomalies: not checked)."""
    for name, times in onsets.items():
        ready = das_flags_from_s(configs[name]) + AGENT_START_SLACK_S
        early = [t for t in times if t < ready]
        if early:
            raise ValueError(
                f"demo: an anomaly on {name} starts at {min(early):g} s, inside the threshold "
                f"warm-up (the DAS thresholds flag from {ready - AGENT_START_SLACK_S:g} s of "
                f"stream time, +{AGENT_START_SLACK_S:g} s for the agents to start): schedule "
                f"anomalies at {ready:g} s or later (DemoOptions.leak_onset_s)")


def write_schedule(
    layout: DemoLayout, configs: dict[str, GatewayConfig], *, seconds: float | None,
    leak_channel: int | None = None, leak_onset: float = 40.0, seed: int = 7,
    extra: dict[str, list[dict[str, Any]]] | None = None,
) -> None:
    """One simulated fiber per gateway, matching its streams; anomalies on a schedule
    (``extra``: more scenarios per gateway name, schedule-file dicts)."""
    gateways = []
    for name, cfg in configs.items():
        das = cfg.stream("das")
        dts = cfg.stream("dts")
        assert das is not None, f"demo gateway {name} has no DAS stream"
        n = das.channels
        g: dict[str, Any] = {
            "site": cfg.gateway.site, "gateway": cfg.gateway.id,
            "geometry": "pipeline" if name.startswith("pipeline") else "well",
            "channels": n, "first_channel": das.first_channel, "spacing_m": das.spacing_m,
            "das_rate": das.sample_rate_hz,
            "streams": ["das", "dts"] if dts is not None else ["das"],
        }
        if dts is not None:
            g["dts_interval_s"] = 1.0 / dts.sample_rate_hz
        scen: list[dict[str, Any]] = []
        if name == "well-a":
            ch = leak_channel if leak_channel is not None else int(n * 0.3)
            scen.append({"kind": "leak", "onset": leak_onset, "duration": 30.0, "channel": ch})
        elif name == "well-b":
            scen.append({"kind": "sand", "onset": leak_onset + 40, "duration": 20.0,
                         "channels": f"{int(n * 0.7)}-{int(n * 0.75)}"})
        else:
            scen.append({"kind": "slug", "onset": leak_onset + 80, "duration": 30.0,
                         "channels": f"{int(n * 0.2)}-{int(n * 0.5)}"})
        scen += [dict(x) for x in (extra or {}).get(name, [])]
        # an endless run repeats nothing: anomalies that start after a finite run are dropped
        g["scenario"] = [x for x in scen
                         if seconds is None or x["onset"] + 5.0 <= seconds]
        for x in g["scenario"]:
            if seconds is not None:
                x["duration"] = min(x["duration"], seconds - x["onset"])
        gateways.append(g)
    check_onsets_after_warmup(configs, {
        name: [x["onset"] for x in g["scenario"] if x["kind"] not in BENIGN]
        for name, g in zip(configs, gateways, strict=True)})
    schedule: dict[str, Any] = {"seed": seed, "gateways": gateways}
    if seconds is not None:
        schedule["seconds"] = seconds
    else:
        schedule["seconds"] = None
    layout.schedule.write_text(json.dumps(schedule, indent=1))
