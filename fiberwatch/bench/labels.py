"""Label effect: one federated round with an operator's labels (`fiberwatch.bench._labels`).

A recurring benign valve transient that the running int8 model flags is labelled a false
alarm on one gateway (plus one confirmed leak and sand event); one round over real Flower
SuperNodes on loopback continues from the running model with the labels. Both int8
packages are scored on fresh runs: valve strokes (false alarms) and leak/sand events
(recall). The peer (full runs): the same round without the label files, so the change can be
told apart from one more round of training.

JSON keys (a contract, issue 16): ``label_effect`` = ``{fa_events_before, fa_events_after,
fa_windows_before, fa_windows_after, recall_leak_before, recall_leak_after,
recall_sand_before, recall_sand_after}`` (the models alone) and the same keys ending
``_label`` (the running model with the gateway's false-alarm calibration,
`edge_agent.fa_calibration`, right after the label) and ``_calibrated`` (the round's model
with it: what the labelled gateway runs after the round); ``round_report`` (the round's
own report on the gateways' held-back copy, `federation.flower.label_round`); ``peer`` (full runs).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any


def _effect(figures: dict[str, Any]) -> dict[str, Any]:
    tags = [t for t in ("before", "after", "label", "calibrated")
            if f"fa_events_{t}" in figures]
    out = {f"{k}_{t}": figures[f"{k}_{t}"] for k in ("fa_events", "fa_windows") for t in tags}
    for kind in ("leak", "sand"):
        r = figures["recall"][kind]
        out.update({f"recall_{kind}_{t}": r[t] for t in tags})
    return out


def _peer(work: Path, plan: Any, prep: dict[str, Any]) -> dict[str, Any]:
    """The same round without labels (the gateways' label files left out)."""
    from fiberwatch.bench import _labels

    bare = {**prep, "gateways": [{k: v for k, v in g.items() if k != "labels"}
                                 for g in prep["gateways"]]}
    summary = _labels.label_round(work, plan, bare)
    return _effect(_labels.evaluate(plan, prep["package"], summary["package"]))


def run(quick: bool = False, out_dir: Path = Path("benchmarks")) -> dict[str, Any]:
    import torch

    from fiberwatch.bench import _labels

    del out_dir  # no side files
    torch.set_num_threads(1)
    plan = _labels.QUICK if quick else _labels.FULL
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fiberwatch-bench-labels-") as tmp:
        work = Path(tmp)
        prep = _labels.prepare(work / "data", plan)
        summary = _labels.label_round(work / "labelled", plan, prep)
        figures = _labels.evaluate(plan, prep["package"], summary["package"],
                                   Path(prep["gateways"][0]["labels"]))
        peer = None if quick else _peer(work / "peer", plan, prep)
    return {"benchmark": "labels", "quick": quick, "plan": dataclasses.asdict(plan),
            "label_effect": _effect(figures), "figures": figures,
            "labelled_false_alarms": prep["labelled_false_alarms"],
            "round_report": summary.get("labels", {}), "round_s": summary["round_s"],
            "peer": peer, "seconds_total": time.perf_counter() - t0}


def _row(name: str, e: dict[str, Any], peer: dict[str, Any] | None, key: str,
         fmt: str = "{}") -> str:
    cell = f"{fmt.format(e[key + '_before'])} → {fmt.format(e[key + '_after'])}"
    cal = (f"{fmt.format(e[key + '_label'])} / {fmt.format(e[key + '_calibrated'])}"
           if key + "_calibrated" in e else "")
    other = f"→ {fmt.format(peer[key + '_after'])}" if peer else ""
    return f"| {name} | {cell} | {cal} | {other} |"


def to_markdown(result: dict[str, Any]) -> str:
    e, p, plan = result["label_effect"], result.get("peer"), result["plan"]
    rep = result.get("round_report") or {}
    f = result["figures"]
    lines = [
        "## labels: label effect (one federated round with an operator's labels)", "",
        f"{plan['gateways']} gateways x {plan['channels']} channels on real Flower SuperNodes "
        f"(loopback); a valve stroking every {plan['period_s']:g} s that the running int8 "
        f"model flags; {result['labelled_false_alarms']} of its events labelled false alarm "
        f"on one gateway, one leak and one sand event confirmed; one round ({plan['epochs']} "
        f"local epochs, lr {plan['lr']}, false alarms {plan['label_share']:.0%} of the "
        "training rows). Fresh runs scored by the int8 packages before and after, each at "
        "its own 0.9999 score quantile" + (" (quick)" if result.get("quick") else "") + ".",
        "", "| figure (fresh runs) | models: before → after the round | with the gateway's "
        "false-alarm calibration: after the label / after the round | peer: round without "
        "labels |", "|---|---|---|---|",
        _row(f"valve false alarms, events ({f['valve_strokes']} strokes)", e, p, "fa_events"),
        _row("valve false alarms, flagged windows", e, p, "fa_windows"),
        _row("leak recall (events)", e, p, "recall_leak", "{:.2f}"),
        _row("sand recall (events)", e, p, "recall_sand", "{:.2f}"), "",
        f"The round's own report (gateways' held-back copy): labelled false-alarm windows "
        f"flagged {rep.get('fa_before', '?')} → {rep.get('fa_after', '?')} of "
        f"{rep.get('fa_windows', '?')}; labelled leak windows {rep.get('recall_leak_before', '?')}"
        f" → {rep.get('recall_leak_after', '?')} of {rep.get('recall_leak_windows', '?')}, "
        f"sand {rep.get('recall_sand_before', '?')} → {rep.get('recall_sand_after', '?')} of "
        f"{rep.get('recall_sand_windows', '?')}; threshold {rep.get('threshold_before', 0):.3g}"
        f" → {rep.get('threshold_after', 0):.3g}. Round (submit to summary, incl. int8 "
        f"packaging) {result['round_s']:.1f} s; total {result['seconds_total']:.0f} s.", "",
        "False-alarm calibration (`edge_agent.fa_calibration`): on the labelled gateway, "
        "the channel groups a false alarm covers flag only above 1.25 x the labelled "
        "pattern's highest score under the model it runs (recomputed on a label or a model "
        "change); other groups are unchanged.",
    ]
    return "\n".join(lines) + "\n"
