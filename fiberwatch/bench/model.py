"""`fiberwatch bench model`: train, convert, check int8 parity, evaluate against peers.

Steps (``quick`` shrinks every size): simulate normal training runs; train each candidate
architecture (`federation.model.autoencoder.ARCHS`, the comparison that chose the default); convert
each to an int8 package; evaluate the packages, the float reference of the default, and the
peers (IsolationForest, HalfSpaceTrees, robust z) on every scenario family through the
gateway's pipeline; measure LiteRT throughput; the public-data section
(`fiberwatch.bench.public`: labelled multivariate process faults through the CLI, against
IsolationForest and PCA T^2/SPE). Plots go to ``docs/model/``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "model"
VARIANTS = ("ae-32-8", "ae-16-4", "ae-64-32-8")


def _rows_per_s(call: Any, batch: int, seconds: float) -> float:
    """Rows per second of ``call()`` on a batch of ``batch`` rows, after one warm-up call."""
    call()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        call()
        n += batch
    return n / (time.perf_counter() - t0)


def throughput(det: Any, dim: int, *, batch: int, seconds: float = 1.0) -> float:
    """Rows per second of ``det.score`` on batches of ``batch`` rows."""
    x = np.random.default_rng(0).normal(size=(batch, dim)).astype(np.float32)
    return _rows_per_s(lambda: det.score(x), batch, seconds)


def invoke_throughput(det: Any, dim: int, *, batch: int, seconds: float = 1.0) -> float:
    """Rows per second of the LiteRT call alone (int8 in, int8 out; no numpy around it)."""
    q = np.zeros((batch, dim), np.int8)
    return _rows_per_s(lambda: det._scorer._invoke(q), batch, seconds)


def run(quick: bool, out_dir: Path) -> dict[str, Any]:
    from edge_agent.inference import LiteRTDetector
    from edge_agent.package import read_package
    from federation.model import evaluate, peers
    from federation.model.train import sim_training_rows, train
    from federation.registry.package import package_model

    t_start = time.perf_counter()
    channels, seconds, epochs = (128, 40.0, 8) if quick else (512, 120.0, 30)
    variants = VARIANTS[:2] if quick else VARIANTS
    rows, spec, source = sim_training_rows(channels=channels, seconds=seconds, runs=2)
    models, pkgs, conv = {}, {}, {}
    for arch in variants:
        model, summary, _ = train(rows, arch=arch, epochs=epochs)
        data, report = package_model(model, spec, rows=rows, version=f"bench-{arch}",
                                     training={**summary, "source": source})
        models[arch], pkgs[arch] = model, read_package(data, None)
        conv[arch] = {**report, "params": model.n_params(), "train": summary}
    default = variants[0]
    extra: dict[str, Any] = {"float": peers.FloatReference(models[default], spec)}
    extra.update({a: LiteRTDetector(pkgs[a]) for a in variants[1:]})
    ev = evaluate.evaluate_runs(
        pkgs[default], peers=("iforest", "hst", "robust_z"), quick=quick, train_rows=rows,
        extra=extra, progress=False,
        thresholds=evaluate.MAIN_POINT)  # = the gateway's default ThresholdConfig
    result = ev.result
    result["plots"] = write_plots(result, ev.raws, DOCS if not quick else out_dir / "model-plots")
    result["parity"] = parity(result)
    strict = evaluate.run_evaluation(
        pkgs[default], peers=("iforest", "hst", "robust_z"), quick=quick, train_rows=rows,
        thresholds=evaluate.MAIN_POINT, floor_quantile=evaluate.STRICT_FLOOR_QUANTILE)
    result["strict"] = {k: strict[k] for k in ("config", "families", "pooled", "summary")}
    det = LiteRTDetector(pkgs[default])
    result["throughput_rows_per_s"] = {
        "batch_256": throughput(det, spec.dim, batch=256),
        "batch_512_window": throughput(det, spec.dim, batch=512),
        "batch_8192": throughput(det, spec.dim, batch=8192),
        "invoke_only_batch_256": invoke_throughput(det, spec.dim, batch=256),
    }
    result["conversion"] = conv
    result["variants"] = variant_table(result, variants)
    result["training"] = {"rows": int(len(rows)), "source": source}
    from fiberwatch.bench import public

    result["public"] = public.run(quick, out_dir / "public-data")
    result["quick"] = quick
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    return result


def parity(result: dict[str, Any]) -> dict[str, Any]:
    """int8 ("model") vs float on the same windows: AUCs, |dAUC|, score correlation."""
    out = {}
    for fam, by_det in result["families"].items():
        a_i, a_f = by_det["model"]["row_auc"], by_det["float"]["row_auc"]
        corr = result.get("score_corr_int8_float", {}).get(fam, {})
        out[fam] = {"auc_int8": a_i, "auc_float": a_f, "abs_delta_auc": abs(a_i - a_f),
                    "pearson": corr.get("pearson"), "spearman": corr.get("spearman")}
    return out


def variant_table(result: dict[str, Any], variants: tuple[str, ...]) -> dict[str, Any]:
    names = {"model": variants[0], **{v: v for v in variants[1:]}}
    out = {}
    fams = {f: d for f, d in result["families"].items() if f != "normal"}
    for key, arch in names.items():
        f1 = {fam: d[key]["f1"] for fam, d in fams.items()}
        out[arch] = {"f1": f1, "mean_f1": float(np.mean(list(f1.values()))),
                     "row_auc": {fam: d[key]["row_auc"] for fam, d in fams.items()},
                     "pooled_fa_per_1000_ch_h": result["pooled"][key]["fa_per_1000_ch_h"]}
    return out


def write_plots(result: dict[str, Any], raws: dict[str, Any], out: Path) -> list[str]:
    """ROC curves per family and the detection table as PNG; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    out.mkdir(parents=True, exist_ok=True)
    fams = [f for f in raws if raws[f]["truth"].any()]
    fig, axes = plt.subplots(1, len(fams), figsize=(4 * len(fams), 4), squeeze=False)
    for ax, fam in zip(axes[0], fams, strict=True):
        raw = raws[fam]
        y = raw["truth"].ravel()
        for name, run in raw["runs"].items():
            s = np.nan_to_num(run.scores.ravel(), nan=0.0, posinf=1e30)
            if y.any() and not y.all():
                fpr, tpr, _ = roc_curve(y, s)
                ax.plot(fpr, tpr, label=f"{name} ({result['families'][fam][name]['row_auc']:.3f})")
        ax.set_xscale("log")
        ax.set_xlim(1e-5, 1)
        ax.set_title(f"{fam}: window x channel ROC")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    paths = [out / "roc.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    paths.append(_table_png(result, out / "detection_table.png"))
    return [str(p) for p in paths]


def _table_png(result: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    cells, rows = [], []
    for fam, by_det in result["families"].items():
        for name, m in by_det.items():
            rows.append(f"{fam} / {name}")
            cells.append([f"{m['recall']:.2f}", f"{m['precision']:.2f}", f"{m['f1']:.2f}",
                          f"{m['fa_per_1000_ch_h']:.1f}", f"{m['delay_s_median']:.1f}",
                          f"{m['loc_err_ch_median']:.1f}"])
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(rows) + 1))
    ax.axis("off")
    ax.table(cellText=cells, rowLabels=rows, loc="center",
             colLabels=["recall", "precision", "F1", "FA/1000 ch-h", "delay s", "loc err ch"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def to_markdown(result: dict[str, Any]) -> str:
    from federation.model.evaluate import table

    conv = result["conversion"]
    lines = ["## model: autoencoder vs peers (event level, simulator scenarios)", ""]
    lines.append("| variant | params | int8 .tflite bytes | mean F1 (4 families) "
                 "| FA/1000 ch-h | row AUC per family |")
    lines.append("|---|---|---|---|---|---|")
    for arch, v in result["variants"].items():
        aucs = ", ".join(f"{f} {a:.3f}" for f, a in v["row_auc"].items())
        lines.append(f"| {arch} | {conv[arch]['params']} | {conv[arch]['tflite_bytes']} "
                     f"| {v['mean_f1']:.3f} | {v['pooled_fa_per_1000_ch_h']:.1f} | {aucs} |")
    lines += ["", "int8 vs float (same windows):", "",
              "| family | AUC float | AUC int8 | abs dAUC | Pearson | Spearman |",
              "|---|---|---|---|---|---|"]
    for fam, p in result["parity"].items():
        lines.append(f"| {fam} | {p['auc_float']:.4f} | {p['auc_int8']:.4f} "
                     f"| {p['abs_delta_auc']:.4f} | {p['pearson'] or float('nan'):.4f} "
                     f"| {p['spearman'] or float('nan'):.4f} |")
    tp = result["throughput_rows_per_s"]
    lines += ["", "LiteRT int8 throughput (1 thread): " + ", ".join(
        f"{k.replace('batch_', 'batch ')}: {v / 1e6:.2f} M rows/s" for k, v in tp.items()), ""]
    cfg = result["config"]
    lines += [f"Operating point: per-group false-alarm rate {cfg['false_alarm_rate']:g}, "
              f"threshold floor at the {cfg['floor_quantile']} quantile of each detector's "
              "training scores.", "", table(result), ""]
    if "strict" in result:
        st = result["strict"]
        lines += [f"Stricter floor ({st['config']['floor_quantile']} quantile):", "",
                  table(st), ""]
    for fam, s in result["summary"].items():
        lines.append(f"- {fam}: model F1 {s['model_f1']:.2f}; beats every peer: "
                     f"{s['beats_every_peer']} (best peer {s['best_peer']})"
                     + (f"; leak/sand target met: {s['meets_target']}" if "meets_target" in s
                        else ""))
    if "public" in result:
        from fiberwatch.bench import public

        lines += ["", public.to_markdown(result["public"])]
    return "\n".join(lines) + "\n"
