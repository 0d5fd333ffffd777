"""The operator's loop, last step: run the next federated round with the site's labels.

    from fiberwatch.label_round import publish_site_labels, next_round

    client = labels_client(host, port, ca=ca, password_file=pw)   # the cloud's ``labels`` login
    publish_site_labels(store, client)        # labels -> each gateway's retained label topic
    summary = next_round(link.control, results_dir, init_weights=prev / "final_weights.npz",
                         min_nodes=2, registry_dir=registry, signing_key=key)
    summary["labels"]   # fa_windows, fa_before, fa_after, recall_<kind>_{windows,before,after}
    summary["version"]  # the registry candidate: promote it, the rollout ships it

The gateways' SuperNodes must run with their label file (node config ``labels``:
`edge_agent.main.labels_path`, e.g. ``fiberwatch fl node --config gateway.toml`` does) beside
their normal buffer. The CLI equivalent: ``python -m cloud.labels --once`` then
``fiberwatch fl run --rounds 1 --init-weights prev/final_weights.npz`` (or a ``fiberwatch
model train`` checkpoint); in the demo ``demo.start_federated_round(run, 1, labels=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: run config of a label round unless overridden: one round must move the model, so more
#: local work than a normal round, and the labelled false alarms half of the training rows
#: (`fiberwatch bench labels`: with 2 epochs, lr 0.003 and a 0.2 share the labelled valve
#: still alerted after the round; with these it stopped and leak/sand recall held)
LABEL_ROUND = {"epochs": 5, "lr": 0.01, "label-share": 0.5}


def labels_client(host: str, port: int, *, ca: Path | None, password_file: Path | None,
                  username: str = "labels", timeout_s: float = 30.0) -> Any:
    """A connected paho client logged in as the cloud's ``labels`` user (TLS with ``ca``);
    the caller stops it (``loop_stop()``, ``disconnect()``). TimeoutError if it cannot."""
    import time

    from edge_agent.config import BrokerConfig
    from edge_agent.mqtt_client import make_client

    broker = BrokerConfig(host=host, port=port, tls=ca is not None, ca_file=ca,
                          username=username if password_file else None,
                          password_file=password_file)
    client = make_client(broker, f"{username}-publisher")
    client.loop_start()
    deadline = time.monotonic() + timeout_s
    while not client.is_connected():
        if time.monotonic() > deadline:
            client.loop_stop()
            raise TimeoutError(f"no connection to {host}:{port} as {username}")
        time.sleep(0.05)
    return client


def publish_site_labels(store: Any, client: Any, *, since_ns: int = 0) -> int:
    """Publish every stored operator label to its gateway (`cloud.labels.publish_labels`);
    how many. ``store``: the API's `cloud.store.Store`; ``client``: a connected paho client
    logged in as the cloud's ``labels`` user."""
    from cloud.labels import publish_labels

    return len(publish_labels(store, client, since_ns=since_ns))


def round_config(results_dir: Path, *, init_weights: Path, min_nodes: int = 1,
                 rounds: int = 1, registry_dir: Path | None = None,
                 signing_key: Path | None = None, **extra: Any) -> dict[str, Any]:
    """The run config of a label round (`federation.flower.server_app.Settings` keys)."""
    cfg: dict[str, Any] = {**LABEL_ROUND, "num-rounds": rounds, "min-nodes": min_nodes,
                           "init-weights": str(Path(init_weights).resolve()),
                           "results-dir": str(Path(results_dir).resolve())}
    if registry_dir is not None:
        cfg["registry-dir"] = str(Path(registry_dir).resolve())
    if signing_key is not None:
        cfg["signing-key"] = str(Path(signing_key).resolve())
    cfg.update({k.replace("_", "-"): v for k, v in extra.items()})
    return cfg


def next_round(control: Any, results_dir: Path, *, init_weights: Path, min_nodes: int = 1,
               rounds: int = 1, registry_dir: Path | None = None,
               signing_key: Path | None = None, timeout_s: float = 600.0,
               **extra: Any) -> dict[str, Any]:
    """Submit one federated round that continues from ``init_weights`` (the model the
    gateways run) and trains on their labels; wait for it; the run's ``summary.json``.

    ``control``: `federation.flower.deployment.Control` of the SuperLink (``link.control``).
    ``extra``: more run config (``epochs=2``, ``label_share=0.2``, ``influx_url=...``).
    The summary holds ``labels`` (`federation.flower.label_round`), ``version`` (with a
    registry) and ``final_weights.npz`` is in ``results_dir`` for the round after."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    cfg = round_config(results_dir, init_weights=init_weights, min_nodes=min_nodes,
                       rounds=rounds, registry_dir=registry_dir, signing_key=signing_key,
                       **extra)
    run_id = control.submit(cfg)
    return dict(control.follow(run_id, results_dir, timeout_s=timeout_s))
