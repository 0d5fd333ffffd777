"""The ServerApp's last step: a federated model -> int8 package -> signed -> registry.

The candidate goes to the registry for `federation.registry.rollout`; the calibration rows are
synthesised from the clients' combined feature statistics (`federation.model.convert.synth_rows`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from federation.model.autoencoder import AutoEncoder

log = logging.getLogger(__name__)


def publish_candidate(registry_dir: Path, model: AutoEncoder, stats: dict[str, Any],
                      hists: list[Any], summary: dict[str, Any], *, stream: str, run_id: int,
                      signing_key: str = "", training: dict[str, Any] | None = None) -> str:
    """int8 convert, package, sign (with ``signing_key``, a PEM path, if given), add to the
    registry as a candidate whose parent is the current production model; the version."""
    from federation.model.datasets import DAS_SPEC, DTS_SPEC
    from federation.registry.keys import load_private
    from federation.registry.package import package_model, quantiles_from_histograms
    from federation.registry.store import Registry

    spec = DAS_SPEC if stream == "das" else DTS_SPEC
    registry = Registry(registry_dir)
    prod = registry.production()
    key = load_private(signing_key) if signing_key else None
    pkg, report = package_model(
        model, spec, stats=stats, threshold_quantiles=quantiles_from_histograms(hists),
        private_key=key, version=f"{stream}-fl-{run_id}", parent=prod.version if prod else None,
        training={"federated": {"run_id": run_id, **(training or {}),
                                "calibration": "synth_rows(stats)"}},
        evaluation=summary)
    rec = registry.add(pkg, state="candidate", metrics={**summary, "source": "federated"})
    log.warning("candidate added version=%s package_bytes=%d", rec.version,
                report["package_bytes"])
    return rec.version
