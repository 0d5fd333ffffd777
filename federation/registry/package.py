"""Build and sign model packages (the format is `edge_agent.package`'s).

`package_model` is the one-call path: trained `AutoEncoder` -> int8 conversion -> threshold
calibration on the int8 scores -> manifest -> signed bytes. `build_package` assembles a
package from parts, `sign_package` (re-)signs one, optionally with new trust fields
(``serial``, ``targets``, ``not_after``, ``version``): that is how a rollback re-publishes old
weights as a *new* package with a higher serial (`federation.registry.store.Registry.republish`).

The default ``serial`` is the signing time in milliseconds since the Unix epoch
(`default_serial`), so packages signed later by any signer of a fleet carry higher serials.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.features import FeatureSpec
from edge_agent.inference import Int8AutoencoderScorer
from edge_agent.package import FORMAT, SIGNATURE_SIZE, key_id, pack, parse_manifest, split
from federation.registry.keys import public_of

QUANTILE_LEVELS = (0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 1.0)
HIST_EDGES = np.concatenate([[0.0], np.logspace(-3, 6, 451)])  # score histogram bins


def libraries() -> dict[str, str]:
    out = {}
    for name in ("fiberwatch", "torch", "litert-torch", "ai-edge-litert", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def score_quantiles(scores: np.ndarray, levels: Sequence[float] = QUANTILE_LEVELS) -> dict:
    s = np.asarray(scores, np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ValueError("no finite scores to calibrate thresholds on")
    return {f"{q:g}": float(np.quantile(s, q)) for q in levels}


def score_histogram(scores: np.ndarray) -> list[int]:
    """Counts on the fixed bins `HIST_EDGES` (clients send these; the server merges them)."""
    s = np.clip(np.asarray(scores, np.float64), 0, HIST_EDGES[-1] * 0.999)
    return np.histogram(s[np.isfinite(s)], bins=HIST_EDGES)[0].tolist()


def quantiles_from_histograms(
    hists: Sequence[Sequence[int]], levels: Sequence[float] = QUANTILE_LEVELS
) -> dict:
    """Approximate score quantiles (upper bin edge, so conservative) from merged histograms."""
    counts = np.sum(np.asarray(hists, np.int64), axis=0)
    cum = np.cumsum(counts)
    if cum[-1] == 0:
        raise ValueError("empty histograms")
    return {f"{q:g}": float(HIST_EDGES[1 + min(int(np.searchsorted(cum, q * cum[-1])),
                                                 len(counts) - 1)]) for q in levels}


def calibration_block(scores: np.ndarray, max_scores: int = 4096) -> dict[str, Any]:
    """Manifest ``threshold.calibration``: held-back normal scores, sorted (at most
    ``max_scores``, evenly spaced quantiles of them beyond that)."""
    s = np.sort(np.asarray(scores, np.float64)[np.isfinite(scores)])
    if s.size > max_scores:
        s = np.quantile(s, np.linspace(0, 1, max_scores))
    return {"scores": [float(f"{v:.6g}") for v in np.maximum(s, 0.0)], "n": int(len(scores)),
            "source": "held-back normal rows"}


def _operating_point(held: np.ndarray, span: int, margin: float) -> dict[str, Any]:
    """Manifest ``threshold`` entries from held-back scores (time order): ``calibration``
    (smoothed with ``span``), and ``smoothing`` / ``margin`` when they are not neutral."""
    from edge_agent.smoothing import ewma

    out: dict[str, Any] = {"calibration": calibration_block(ewma(held, span))}
    if span > 1:
        out["smoothing"] = {"method": "ewma", "span": int(span)}
    if margin != 1.0:
        out["margin"] = float(margin)
    return out


def default_serial() -> int:
    """Milliseconds since the Unix epoch: increases from one signing to the next."""
    return time.time_ns() // 1_000_000


def trust_fields(serial: int | None = None, targets: Sequence[str] | None = None,
                 not_after: datetime | str | None = None) -> dict[str, Any]:
    """The manifest's trust fields (see `edge_agent.package`), checked."""
    if isinstance(not_after, datetime):
        if not_after.tzinfo is None:
            raise ValueError("not_after needs a time zone")
        not_after = not_after.astimezone(UTC).isoformat(timespec="seconds")
    if targets is not None:
        targets = [str(t) for t in targets]
        if not targets:
            raise ValueError("targets: give at least one SITE or SITE/GATEWAY (None = all)")
    return {"serial": default_serial() if serial is None else int(serial),
            "targets": targets, "not_after": not_after}


def default_version(stream: str, tflite: bytes) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stream}-{stamp}-{hashlib.sha256(tflite).hexdigest()[:6]}"


def build_package(
    *, tflite: bytes, spec: FeatureSpec, mean: np.ndarray, std: np.ndarray,
    error_scale: np.ndarray, input_quant: dict, output_quant: dict,
    threshold: dict[str, Any], name: str = "fiberwatch-ae", version: str | None = None,
    parent: str | None = None, training: dict | None = None, evaluation: dict | None = None,
    private_key: Ed25519PrivateKey | None = None, serial: int | None = None,
    targets: Sequence[str] | None = None, not_after: datetime | str | None = None,
) -> bytes:
    """Assemble (and sign, with ``private_key``) a package from its parts.

    ``threshold`` must hold ``quantiles`` (`score_quantiles`) and may add ``source``, ``n``.
    ``serial``/``targets``/``not_after``: see `trust_fields` (default serial: now in ms).
    """
    manifest: dict[str, Any] = {
        "format": FORMAT, "name": name, "version": version or default_version(spec.profile, tflite),
        "parent": parent, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "stream": spec.profile, "feature_spec": spec.to_dict(), "feature_spec_hash": spec.hash,
        "feature_names": list(spec.names), "dim": spec.dim,
        "model_sha256": hashlib.sha256(tflite).hexdigest(), "model_bytes": len(tflite),
        "input": {k: input_quant[k] for k in ("dtype", "scale", "zero_point")},
        "output": {k: output_quant[k] for k in ("dtype", "scale", "zero_point")},
        "normalization": {"mean": _floats(mean), "std": _floats(std)},
        "error_scale": _floats(error_scale),
        "score": "mean over features of ((z - recon) / error_scale)^2, z = (x - mean) / std",
        "threshold": threshold, "training": training or {}, "evaluation": evaluation or {},
        "libraries": libraries(),
        "signer_key_id": key_id(public_of(private_key)) if private_key else None,
        **trust_fields(serial, targets, not_after),
    }
    parse_manifest(_blob(manifest))  # the reader's checks, before anything is signed
    unsigned = pack(manifest, tflite)
    return sign_package(unsigned, private_key) if private_key else unsigned


def sign_package(data: bytes, private_key: Ed25519PrivateKey,
                 updates: dict[str, Any] | None = None) -> bytes:
    """Sign (or re-sign) a package; the manifest's ``signer_key_id`` is updated.

    ``updates`` replaces manifest fields first (only ``serial``, ``targets``, ``not_after``,
    ``version``, ``parent``); the result is checked like any package.
    """
    _, blob, model, _ = split(data)
    manifest = parse_manifest(blob)
    bad = set(updates or {}) - {"serial", "targets", "not_after", "version", "parent"}
    if bad:
        raise ValueError(f"sign_package cannot change {', '.join(sorted(bad))}")
    manifest.update(updates or {})
    manifest["signer_key_id"] = key_id(public_of(private_key))
    parse_manifest(_blob(manifest))
    signed_part = pack(manifest, model, bytes(SIGNATURE_SIZE))[:-SIGNATURE_SIZE]
    return signed_part + private_key.sign(signed_part)


def _blob(manifest: dict) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _floats(a: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(a, np.float64).ravel()]


def package_model(
    model: Any, spec: FeatureSpec, *, rows: np.ndarray | None = None,
    stats: dict | None = None, threshold_quantiles: dict | None = None,
    private_key: Ed25519PrivateKey | None = None, name: str = "fiberwatch-ae",
    version: str | None = None, parent: str | None = None, training: dict | None = None,
    evaluation: dict | None = None, progress: Callable[[int, int], None] | None = None,
    held_back: np.ndarray | None = None, serial: int | None = None,
    smoothing_span: int = 1, margin: float = 1.0,
) -> tuple[bytes, dict[str, Any]]:
    """Convert a trained model and package it. Returns ``(package, report)``.

    Thresholds are calibrated on the int8 scores of ``rows`` (the training rows); without
    rows, pass ``threshold_quantiles`` (e.g. `quantiles_from_histograms` of the clients'
    `score_histogram`) or they are taken from rows synthesised from ``stats``. With
    ``held_back`` normal rows (never trained on), their int8 scores go to
    ``threshold.calibration``: the gateway's and ``score``'s calibrated operating point
    (`edge_agent.thresholds.calibrated_threshold`). ``smoothing_span`` > 1 (an ``mv``
    model): the gateway smooths the score with that EWMA (`edge_agent.smoothing`), so the
    held-back scores are smoothed the same way, in time order, before they calibrate;
    ``margin`` multiplies the calibrated threshold (``threshold.margin``).
    """
    from federation.model.convert import synth_rows, to_tflite

    if spec.dim != model.dim:
        raise ValueError(f"model width {model.dim} != feature spec width {spec.dim}")
    t0 = time.perf_counter()
    conv = to_tflite(model, rows, stats=stats, progress=progress)
    mean, std = model.mean.numpy(), model.std.numpy()
    err = model.err_scale.numpy()
    threshold: dict[str, Any]
    if threshold_quantiles is not None:
        threshold = {"quantiles": dict(threshold_quantiles), "source": "federated"}
    else:
        calib = rows if rows is not None else synth_rows(stats or {}, seed=1)
        manifest = {"dim": spec.dim, "input": conv.input_quant, "output": conv.output_quant,
                    "normalization": {"mean": _floats(mean), "std": _floats(std)},
                    "error_scale": _floats(err)}
        scores = Int8AutoencoderScorer(conv.tflite, manifest).score(calib)
        threshold = {"quantiles": score_quantiles(scores), "n": int(len(calib)),
                     "source": "data" if rows is not None else "stats"}
        if held_back is not None and len(held_back) >= 2:
            held = Int8AutoencoderScorer(conv.tflite, manifest).score(held_back)
            threshold.update(_operating_point(held, smoothing_span, margin))
    train = {"arch": {"dims": [model.dim, *model.hidden, model.latent], **model.hyper},
             "params": model.n_params(), **(training or {})}
    pkg = build_package(tflite=conv.tflite, spec=spec, mean=mean, std=std, error_scale=err,
                        input_quant=conv.input_quant, output_quant=conv.output_quant,
                        threshold=threshold, name=name, version=version, parent=parent,
                        training=train, evaluation=evaluation, private_key=private_key,
                        serial=serial)
    report = {"tflite_bytes": len(conv.tflite), "package_bytes": len(pkg),
              "calibration_rows": conv.calibration_rows, "calibration": conv.calibration_source,
              "convert_s": conv.seconds, "total_s": time.perf_counter() - t0}
    return pkg, report
