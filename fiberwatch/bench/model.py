"""`fiberwatch bench model`: train, convert, check int8 parity, evaluate against peers.

Steps (``quick`` shrinks every size): simulate normal training runs; train each candidate
architecture (`federation.model.autoencoder.ARCHS`, the comparison that chose the default); convert
each to an int8 package; evaluate the packages, the float reference of the default, and the
peers (IsolationForest, HalfSpaceTrees, robust z) on every scenario family through the
gateway's pipeline; measure LiteRT throughput; the public-data section
(`fiberwatch.bench.public`: labelled multivariate process faults through the CLI, against
IsolationForest and PCA T^2/SPE), carried over from the previous run's ``model.json`` unless
``FIBERWATCH_BENCH_PUBLIC=1`` (it has its own data and baselines and takes long); the long
normal runs (`fiberwatch.bench._model_long`: thousands of channel-hours through the
gateway's fast path at its default operating point, pooled into ``pooled.model``). Plots go
to ``docs/model/``.
"""

from __future__ import annotations

import json
import logging
import os
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
    models, pkgs, conv, datas = {}, {}, {}, {}
    for arch in variants:
        model, summary, _ = train(rows, arch=arch, epochs=epochs)
        data, report = package_model(model, spec, rows=rows, version=f"bench-{arch}",
                                     training={**summary, "source": source})
        models[arch], pkgs[arch], datas[arch] = model, read_package(data, None), data
        conv[arch] = {**report, "params": model.n_params(), "train": summary}
    default = variants[0]
    from fiberwatch.bench import _model_long

    # the long normal runs go on in worker processes while this one evaluates the families
    long = _model_long.start(datas[default], _model_long.QUICK_LONG if quick
                             else _model_long.LongPlan())
    extra: dict[str, Any] = {"float": peers.FloatReference(models[default], spec)}
    extra.update({a: LiteRTDetector(pkgs[a]) for a in variants[1:]})
    ev = evaluate.evaluate_runs(
        pkgs[default], peers=("iforest", "hst", "robust_z"), quick=quick, train_rows=rows,
        extra=extra, progress=True,
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
    add_long_normal(result, _model_long.finish(long))
    result["public"] = public_section(quick, out_dir)
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
    lines += long_markdown(result)
    for fam, s in result["summary"].items():
        lines.append(f"- {fam}: model F1 {s['model_f1']:.2f}; beats every peer: "
                     f"{s['beats_every_peer']} (best peer {s['best_peer']})"
                     + (f"; leak/sand target met: {s['meets_target']}" if "meets_target" in s
                        else ""))
    if "public" in result:
        from fiberwatch.bench import public

        lines += ["", public.to_markdown(result["public"])]
    return "\n".join(lines) + "\n"


def add_long_normal(result: dict[str, Any], long: dict[str, Any]) -> None:
    """The long normal runs of the default package, pooled into ``pooled.model`` (the
    family runs' figures stay under ``pooled_families``); the summary is redone with them."""
    from federation.model import evaluate
    from fiberwatch.bench import _model_long

    result["long_normal"] = long
    plan = _model_long.LongPlan(**long["plan"])
    result["pooled_families"] = json.loads(json.dumps(result["pooled"]))
    m = result["pooled"]["model"]
    m["false_alarms"] += long["false_alarms"]
    m["channel_hours"] += long["channel_hours"]
    m["fa_per_1000_ch_h"] = m["false_alarms"] / m["channel_hours"] * 1000
    m["sources"] = "family runs + long normal runs (the peers: family runs only)"
    result["summary"] = evaluate.summary(result)
    result["seeds"] = {
        "train": list(_model_long.TRAIN_SEEDS),
        "family_evaluation": [_model_long.FAMILY_SEED + i for i in range(6)],
        "long_normal_evaluation": [plan.seed + k for k in range(plan.shards)],
        "validation_only": list(_model_long.VALIDATION_SEEDS) + [20_100],
        "note": "features and operating point were chosen on the validation seeds only"}


def public_section(quick: bool, out_dir: Path) -> dict[str, Any]:
    """The public-data section: the previous full run's, unless ``FIBERWATCH_BENCH_PUBLIC=1``
    (or there is none)."""
    from fiberwatch.bench import public

    prev = out_dir / "model.json"
    if os.environ.get("FIBERWATCH_BENCH_PUBLIC") != "1" and prev.exists():
        old = json.loads(prev.read_text()).get("public")
        if old:
            log.info("public-data section carried over from %s", prev)
            return old
    return public.run(quick, out_dir / "public-data")


def long_markdown(result: dict[str, Any]) -> list[str]:
    """The long normal runs and the pooled false-alarm rate."""
    long = result.get("long_normal")
    if not long:
        return []
    p, m = long["plan"], result["pooled"]["model"]
    return [
        "", "Long normal runs (the gateway's fast path at its default operating point, "
        f"cold start: the warm-up is counted): {p['shards']} runs x {p['channels']} channels x "
        f"{p['seconds']:g} s, frames dropped with p = {p['drop_p']:g}, seeds "
        f"{', '.join(str(s['seed']) for s in long['shards'])}: {long['false_alarms']} false "
        f"alarms in {long['channel_hours']:.0f} channel-hours = "
        f"{long['fa_per_1000_ch_h']:.2f} per 1,000 channel-hours ({long['seconds']:.0f} s on "
        f"{long['workers']} processes).", "",
        f"Pooled (family runs + long runs): {m['false_alarms']} false alarms in "
        f"{m['channel_hours']:.0f} channel-hours = {m['fa_per_1000_ch_h']:.2f} per 1,000 "
        "channel-hours (goal <= 1 over >= 3,000).", ""]
