"""Mosquitto ACL files: each login may touch only its own topics.

Site broker, gateway G of site S (topics of `edge_agent.topics`):

- ``S.G`` writes ``fiberwatch/v1/S/G/{events,features/+,health,model_state}`` and reads only
  ``fiberwatch/v1/S/G/{model,config}``: it cannot publish for another gateway, overwrite its
  own model announcement, or read another gateway's model; it reads its own operator labels
  ``fiberwatch/v1/S/G/labels/+`` and nobody else's.
- ``S.G.raw`` reads ``fiberwatch/v1/S/G/raw/+``; ``S.G.interrogator`` writes it.

Cloud broker: ``bridge.S`` writes site S's uplink topics and reads its model topics;
``ingest`` and ``viewer`` read every uplink topic; ``rollout`` reads them and writes the
model topics; ``alerting`` reads every gateway's events and writes only the alert topics
(``fiberwatch/v1/alerts`` and below it: an mqtt receiver of `firmware_configs.alerting`
names one), which ``viewer`` may read; ``labels`` (the API's label publisher) writes the
label topics and nothing else, and no one else may write them (bridges and gateways only
read them); ingestion's feature workers ``ingest-fK`` (`ingest_worker_rules`) read only the
feature summaries (their ``$share/GROUP/...`` subscription is checked against the topic after
the share prefix). An all-in-one broker (the demo) carries both sets.
"""

from __future__ import annotations

from edge_agent.topics import ROOT
from fiberwatch.deploy.spec import (
    DeploySpec,
    Site,
    bridge_user,
    gateway_user,
    ingest_worker_users,
    interrogator_user,
    raw_user,
)

UPLINK = ("events", "features/+", "health", "model_state")
ALERTS = f"{ROOT}/alerts/#"  # the alert topics (`#` also matches fiberwatch/v1/alerts itself)
DOWNLINK = ("model", "config")
LABELS = ("labels/+",)  # operator labels (`edge_agent.labels`): the cloud's ``labels`` user only


def _user(name: str, rules: list[tuple[str, str]]) -> str:
    return f"user {name}\n" + "".join(f"topic {a} {t}\n" for a, t in rules) + "\n"


def gateway_rules(site: str, gw: str) -> str:
    base = f"{ROOT}/{site}/{gw}"
    return (_user(gateway_user(site, gw), [("write", f"{base}/{s}") for s in UPLINK]
                  + [("read", f"{base}/{s}") for s in DOWNLINK + LABELS])
            + _user(raw_user(site, gw), [("read", f"{base}/raw/+")])
            + _user(interrogator_user(site, gw), [("write", f"{base}/raw/+")]))


def site_acl(site: Site) -> str:
    head = (f"# Mosquitto ACL of site {site.name}'s broker. Written by `fiberwatch deploy acl`;\n"
            "# do not edit: change the site list and run it again.\n\n")
    return head + "".join(gateway_rules(site.name, g) for g in site.gateways)


def cloud_rules(spec: DeploySpec) -> str:
    every = [f"{ROOT}/+/+/{s}" for s in UPLINK]
    out = _user("ingest", [("read", t) for t in every])
    out += ingest_worker_rules(spec)
    out += _user("viewer", [("read", t) for t in every] + [("read", ALERTS)])
    out += _user("rollout", [("read", t) for t in every]
                 + [("write", f"{ROOT}/+/+/{s}") for s in DOWNLINK])
    out += alerting_rules()
    out += _user("labels", [("write", f"{ROOT}/+/+/{s}") for s in LABELS])
    for s in spec.sites:
        out += _user(bridge_user(s.name),
                     [("write", f"{ROOT}/{s.name}/+/{t}") for t in UPLINK]
                     + [("read", f"{ROOT}/{s.name}/+/{t}") for t in DOWNLINK + LABELS])
    return out


def alerting_rules() -> str:
    """The alerting process: every gateway's events in, alerts out, nothing else."""
    return _user("alerting", [("read", f"{ROOT}/+/+/events"), ("write", ALERTS)])


def ingest_worker_rules(spec: DeploySpec) -> str:
    """The feature workers' logins: each reads the feature summaries, nothing else."""
    return "".join(_user(u, [("read", f"{ROOT}/+/+/features/+")])
                   for u in ingest_worker_users(spec))


def cloud_acl(spec: DeploySpec) -> str:
    head = ("# Mosquitto ACL of the cloud broker. Written by `fiberwatch deploy acl`;\n"
            "# do not edit: change the site list and run it again.\n\n")
    return head + cloud_rules(spec)


def single_acl(spec: DeploySpec) -> str:
    """One broker for everything (the demo): every site's rules plus the cloud services'."""
    head = "# Mosquitto ACL of an all-in-one broker. Written by `fiberwatch deploy acl`.\n\n"
    return head + "".join(site_acl(s) for s in spec.sites) + cloud_rules(spec)
