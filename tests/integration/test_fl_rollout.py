"""The canary rollout on a real Mosquitto: publish, judge the gateways' summaries, roll back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edge_agent import topics
from edge_agent.summary import FeatureSummary
from federation.model.datasets import DAS_SPEC
from federation.registry.keys import generate, load_private
from federation.registry.package import build_package
from federation.registry.rollout import Policy, RolloutService
from federation.registry.store import Registry
from tests.integration._polling import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _package(version: str, key: Any) -> bytes:
    dim = DAS_SPEC.dim
    q = {"dtype": "int8", "scale": 0.1, "zero_point": 0}
    return build_package(tflite=f"not-a-model-{version}".encode(), spec=DAS_SPEC,
                         mean=np.zeros(dim), std=np.ones(dim), error_scale=np.ones(dim),
                         input_quant=q, output_quant=q, threshold={"quantiles": {"0.99": 3.0}},
                         version=version, private_key=key)


def _summary(gw: str, version: str, flagged: int) -> bytes:
    return FeatureSummary(site="site", gateway=gw, stream="das", t_ns=1, ch_start=0,
                          group_size=8, score=[1.0] * 50, energy=[0.0] * 50,
                          threshold=[4.0] * 50, model_version=version,
                          flagged=list(range(flagged))).to_json()


def test_degraded_canary_is_rolled_back_over_mqtt(tmp_path: Path, mosquitto: Any) -> None:
    priv, pub = generate()
    key = load_private(priv)
    reg = Registry(tmp_path / "registry", public_key=pub)
    reg.add(_package("v1", key), state="production")
    reg.add(_package("v2", key), metrics={"source": "federated"})

    got: dict[str, bytes] = {}
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-watcher")
    watcher.on_message = lambda _c, _u, m: got.__setitem__(m.topic, m.payload)
    watcher.connect("127.0.0.1", mosquitto.port)
    watcher.subscribe(f"{topics.ROOT}/+/+/model", qos=1)
    watcher.loop_start()

    policy = Policy(canary=("site/gw1",), window_s=60, min_summaries=5, adopt_timeout_s=60)
    service = RolloutService(reg, policy, "127.0.0.1", mosquitto.port,
                             gateways=["site/gw1", "site/gw2"], poll_s=0.1)
    service.start()
    pub_client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-gateways")
    pub_client.connect("127.0.0.1", mosquitto.port)
    pub_client.loop_start()
    canary_topic = topics.model("site", "gw1")
    try:
        wait_for(lambda: got.get(canary_topic) == reg.package_bytes("v2"), 30,
                  "the candidate on the canary's model topic")
        assert reg.get("v2").state == "canary"
        assert topics.model("site", "gw2") not in got  # control gateways keep their model
        pub_client.publish(topics.model_state("site", "gw1"), json.dumps(
            {"model_version": "v2", "last_result": "swapped"}), qos=1, retain=True)
        for _ in range(10):  # the canary flags 20 % of its groups, the control none
            pub_client.publish(topics.features("site", "gw1", "das"), _summary("gw1", "v2", 10))
            pub_client.publish(topics.features("site", "gw2", "das"), _summary("gw2", "v1", 0))
        wait_for(lambda: reg.get("v2").state == "retired", 30, "the rollback")
        wait_for(lambda: got.get(canary_topic) == reg.package_bytes("v1"), 30,
                  "the production package re-published")
    finally:
        service.stop()
        pub_client.loop_stop()
        watcher.loop_stop()
    assert reg.production().version == "v1"  # type: ignore[union-attr]
    steps = [(h["version"], h["from"], h["to"]) for h in reg.history()]
    assert steps[-2:] == [("v2", "candidate", "canary"), ("v2", "canary", "retired")]
    assert "false alarms" in reg.history()[-1]["reason"]
    assert reg.get("v2").metrics["canary"]["baseline_kind"] == "control"
