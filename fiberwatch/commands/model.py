"""`fiberwatch model train|convert|eval|inspect|sign|verify|keygen`: the model lifecycle.

    fiberwatch model keygen --private signing.pem --public signing.pub
    fiberwatch model train --sim --channels 512 --seconds 120 --out das.ckpt
    fiberwatch model train --csv tags.csv --out tags.ckpt
    fiberwatch model train --files /data/das-well-a/ --out das.ckpt   (PRODML, DASDAE, ...)
    fiberwatch model convert das.ckpt --key signing.pem --out das.fwpkg
    fiberwatch model verify das.fwpkg --public-key signing.pub [--config gw.toml]
    fiberwatch model eval --model das.fwpkg --json eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fiberwatch.cli import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="train, convert, sign, verify and evaluate models")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    for add in (_add_keygen, _register_train, _add_convert, _add_sign, _add_republish, _add_verify,
                _add_inspect, _add_eval):
        add(msub)


def _add_keygen(msub: argparse._SubParsersAction) -> None:
    k = msub.add_parser("keygen", help="make an Ed25519 signing key pair")
    k.add_argument("--private", type=Path, required=True, help="private key file (PEM, 0600)")
    k.add_argument("--public", type=Path, required=True, help="public key file (PEM)")
    k.add_argument("--force", action="store_true", help="overwrite existing files")
    k.set_defaults(func=_keygen)



def _add_convert(msub: argparse._SubParsersAction) -> None:
    c = msub.add_parser("convert", help="checkpoint -> int8 .tflite -> (signed) package")
    c.add_argument("checkpoint", type=Path)
    c.add_argument("--out", type=Path, required=True, help="package file to write")
    c.add_argument("--key", type=Path, help="private key to sign with (else unsigned)")
    c.add_argument("--version", help="package version (default: stream-time-hash)")
    c.add_argument("--parent", help="parent version")
    c.add_argument("--name", default="fiberwatch-ae")
    c.add_argument("--from-stats", action="store_true",
                   help="calibrate on rows synthesised from feature statistics only")
    c.set_defaults(func=_convert)


def _add_sign(msub: argparse._SubParsersAction) -> None:
    s = msub.add_parser("sign", help="(re-)sign a package, optionally with new trust fields")
    s.add_argument("package", type=Path)
    s.add_argument("--key", type=Path, required=True, help="private key (PEM)")
    s.add_argument("--out", type=Path, help="output (default: in place)")
    s.add_argument("--serial", type=int, help="monotonic serial (gateways refuse lower ones; "
                   "default: keep the package's; 'now' in ms: --serial-now)")
    s.add_argument("--serial-now", action="store_true",
                   help="set the serial to the signing time in ms (e.g. a rollback package)")
    s.add_argument("--target", action="append", default=None, metavar="SITE[/GATEWAY]",
                   help="only these sites/gateways install it (repeatable; default: keep)")
    s.add_argument("--not-after", metavar="ISO-TIME", help="gateways refuse it after this time")
    s.add_argument("--valid-days", type=float, help="not_after = now + this many days")
    s.add_argument("--version", help="new version (a re-published package needs one)")
    s.set_defaults(func=_sign)


def _add_republish(msub: argparse._SubParsersAction) -> None:
    r = msub.add_parser("republish", help="rollback: re-sign a registry version's weights as "
                        "a new version with a higher serial (and promote it)")
    r.add_argument("version")
    r.add_argument("--registry", type=Path, required=True)
    r.add_argument("--key", type=Path, required=True, help="private signing key (PEM)")
    r.add_argument("--public-key", type=Path, required=True, help="the registry's verify key")
    r.add_argument("--to", choices=("candidate", "canary", "production"), default="candidate")
    r.add_argument("--reason", default="")
    r.set_defaults(func=_republish)


def _add_verify(msub: argparse._SubParsersAction) -> None:
    v = msub.add_parser("verify", help="verify a package's signature, hashes and spec")
    v.add_argument("package", type=Path)
    v.add_argument("--public-key", type=Path, required=True)
    v.add_argument("--config", type=Path, help="gateway TOML: check the stream's feature spec")
    v.add_argument("--stream", choices=("das", "dts"), help="stream of --config")
    v.set_defaults(func=_verify)


def _add_inspect(msub: argparse._SubParsersAction) -> None:
    i = msub.add_parser("inspect", help="print a package's manifest")
    i.add_argument("package", type=Path)
    i.add_argument("--full", action="store_true", help="include per-feature arrays")
    i.set_defaults(func=_inspect)


def _add_eval(msub: argparse._SubParsersAction) -> None:
    e = msub.add_parser("eval", help="event-level evaluation vs peers on simulator scenarios")
    e.add_argument("--model", type=Path, required=True, help="package to evaluate")
    e.add_argument("--public-key", type=Path)
    e.add_argument("--quick", action="store_true", help="small runs (smoke test)")
    e.add_argument("--families", default="leak,sand,slug,faults")
    e.add_argument("--peers", default="iforest,hst,robust_z")
    e.add_argument("--train-rows", type=Path, help="checkpoint whose rows train the peers")
    e.add_argument("--seed", type=int, default=1000)
    e.add_argument("--plots", type=Path, help="directory for PNG plots")
    e.add_argument("--false-alarm-rate", type=float, default=None,
                   help="thresholds: target exceedance rate per group and window (default: "
                        "the gateway's, threshold.false_alarm_rate)")
    e.add_argument("--floor-quantile", type=float, default=None,
                   help="thresholds: floor at this quantile of each detector's training "
                        "scores (0 = no floor; default: the gateway's, "
                        "threshold.floor_quantile)")
    e.add_argument("--json", type=Path, help="write the result object here")
    e.set_defaults(func=_eval)


def _register_train(msub: argparse._SubParsersAction) -> None:
    t = msub.add_parser("train", help="train an autoencoder on normal data -> checkpoint")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--sim", action="store_true", help="simulate normal runs (sensors_sim)")
    src.add_argument("--recording", type=Path, help="recorded frames (.fwrec)")
    src.add_argument("--csv", type=Path, help="CSV: a time column + numeric sensor columns")
    src.add_argument("--files", type=Path, metavar="PATH",
                     help="an interrogator's files, read as the bridge reads them: a DAS file "
                     "(PRODML/DASDAE/... HDF5, TDMS: DASCore) or a directory of DAS files, or "
                     "with --stream dts a directory of DTS CSV files")
    t.add_argument("--stream", choices=("das", "dts"), default="das")
    t.add_argument("--config", type=Path, help="gateway TOML: take the stream's feature spec")
    t.add_argument("--channels", type=int, default=512, help="--sim: channels (default 512)")
    t.add_argument("--seconds", type=float, default=120.0, help="--sim: seconds per run")
    t.add_argument("--runs", type=int, default=2, help="--sim: runs (seeds) (default 2)")
    t.add_argument("--geometry", choices=("well", "pipeline"), default="well")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--profile", choices=("auto", "mv", "raw"), default="auto",
                   help="--csv: mv = one model over all columns (multivariate process data), "
                   "raw = each column on its own; auto = mv for 2+ columns at <= 100 Hz")
    t.add_argument("--window", type=int, help="--csv: samples per window (mv: lags); default "
                   "chosen from the data's length, printed")
    t.add_argument("--hop", type=int, help="--csv: samples per hop (mv default 1)")
    t.add_argument("--smooth", type=int, metavar="ROWS",
                   help="--csv mv: smooth the score with a causal EWMA over this many rows "
                   "(1 = off; default chosen from the data's length, printed)")
    t.add_argument("--threshold-margin", type=float, metavar="M",
                   help="--csv mv: multiply the threshold calibrated on the held-back rows "
                   "by M >= 1, an allowance for drift after training (default 2)")
    t.add_argument("--validation", type=float, default=0.2,
                   help="--csv: fraction of the (time-ordered) rows held back to calibrate "
                   "the threshold (default 0.2)")
    t.add_argument("--arch", help="ae-32-8 | ae-16-4 | ae-64-32-8 (autoencoders) | pca (a "
                   "linear autoencoder fitted in closed form: Hotelling T^2 + SPE); default "
                   "pca for mv, else ae-32-8 (printed)")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--batch-size", type=int, default=512)
    t.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    t.set_defaults(func=_train)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


def _keygen(args: argparse.Namespace) -> int:
    from federation.registry.keys import KeyFileError, save_pair

    try:
        kid = save_pair(args.private, args.public, overwrite=args.force)
    except KeyFileError as exc:
        raise UsageError(str(exc)) from None
    print(f"key id {kid}: private {args.private}, public {args.public}")
    return 0


def _spec_from_config(path: Path, stream: str) -> Any:
    from edge_agent.config import ConfigError, load_gateway_config

    try:
        cfg = load_gateway_config(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    s = cfg.stream(stream)
    if s is None:
        raise UsageError(f"{path}: no {stream} stream")
    return s.feature_spec()


def _training_rows(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    from tqdm import tqdm

    from federation.model import datasets
    from federation.model.train import sim_training_rows

    spec = _spec_from_config(args.config, args.stream) if args.config else None
    try:
        if args.sim:
            with tqdm(total=args.runs, desc="simulate", unit="run", disable=None) as bar:
                rows, spec, source = sim_training_rows(
                    stream=args.stream, channels=args.channels, seconds=args.seconds,
                    runs=args.runs, seed=args.seed, geometry=args.geometry, spec=spec,
                    progress=lambda n: bar.update(n - bar.n))
        elif args.files:
            fs = datasets.interrogator_files(args.files, args.stream, spec)
            rows, spec, source = fs.normal_rows(), fs.spec, {"kind": "files",
                                                             "path": str(args.files)}
        elif args.recording:
            fs = datasets.read_recording(args.recording, args.stream, spec)
            rows, spec, source = fs.normal_rows(), fs.spec, {"kind": "recording",
                                                             "path": str(args.recording)}
        else:
            fs = datasets.csv_features(args.csv, spec, window=args.window, hop=args.hop,
                                       profile=args.profile)
            rows, spec, source = fs.normal_rows(), fs.spec, {
                "kind": "csv", "path": str(args.csv), "columns": fs.channel_names}
            print(f"{args.csv}: {spec.sample_rate_hz:g} Hz, {fs.why}", file=sys.stderr)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    return rows, spec, source


def _fit_options(args: argparse.Namespace, spec: Any, source: dict[str, Any]) -> dict[str, Any]:
    """CSV input holds back a validation split; mv models scale robustly and need fewer
    rows (one per input row)."""
    from federation.model import datasets

    if not args.csv:
        return {}
    mv = spec.profile == "mv"
    per_window = 1 if mv else len(source["columns"])  # feature rows per window
    gap = (spec.window_samples - 1) // spec.hop_samples * per_window
    return {"validation": args.validation, "gap": gap, "robust": mv,
            "min_rows": datasets.MV_MIN_TRAIN if mv else 100,
            "columns": len(source["columns"]) if mv else 0}


def _mv_scoring(args: argparse.Namespace, spec: Any, n_rows: int) -> dict[str, Any]:
    """An mv model's score smoothing span and threshold margin: given, or from the data
    (`datasets.choose_smoothing`, `datasets.MV_THRESHOLD_MARGIN`); printed."""
    from federation.model import datasets

    if spec.profile != "mv":
        if args.smooth is not None or args.threshold_margin is not None:
            raise UsageError("--smooth and --threshold-margin apply to mv models (--csv)")
        return {}
    span = datasets.choose_smoothing(n_rows) if args.smooth is None else args.smooth
    margin = datasets.MV_THRESHOLD_MARGIN if args.threshold_margin is None \
        else args.threshold_margin
    if not 1 <= span <= 10_000 or not 1.0 <= margin <= 100.0:
        raise UsageError("--smooth must be in [1, 10000] rows, --threshold-margin in [1, 100]")
    return {"smoothing_span": int(span), "threshold_margin": float(margin),
            "why": f"score: EWMA over {span} rows{' (off)' if span == 1 else ''}"
                   f"{' (given)' if args.smooth is not None else ''}; threshold margin "
                   f"{margin:g}"}


def _arch(args: argparse.Namespace, spec: Any) -> tuple[str, str | None]:
    """``(arch, why)``: the given ``--arch`` (why None), else `datasets.choose_arch` for the
    profile (why printed after training)."""
    from federation.model import datasets
    from federation.model.autoencoder import ARCHS

    if args.arch is not None:
        if args.arch not in ARCHS:
            raise UsageError(f"unknown --arch {args.arch!r}; choose from {', '.join(ARCHS)}")
        return str(args.arch), None
    arch, why = datasets.choose_arch(spec.profile)
    return arch, f"model: {why}"


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from federation.model.train import TooLittleData, save_checkpoint, train

    rows, spec, source = _training_rows(args)
    opts = _fit_options(args, spec, source)
    args.arch, arch_why = _arch(args, spec)
    point = _mv_scoring(args, spec, len(rows) + spec.window_samples - 1)  # input rows
    with tqdm(total=args.epochs, desc="train", unit="epoch", disable=None) as bar:
        def progress(_epoch: int, loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.4f}")
            bar.update(1)

        try:
            model, summary, held = train(rows, arch=args.arch, epochs=args.epochs, lr=args.lr,
                                         batch_size=args.batch_size, seed=args.seed,
                                         progress=progress, **opts)
        except TooLittleData as exc:
            where = f"{args.csv}: " if args.csv else ""
            raise UsageError(f"{where}{exc} (at {spec.sample_rate_hz:g} Hz with "
                             f"{spec.window_samples}-sample windows every "
                             f"{spec.hop_samples}; record more normal operation)") from None
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if arch_why:
        print(arch_why, file=sys.stderr)
    if point:
        print(point.pop("why"), file=sys.stderr)
    summary.update(point)
    save_checkpoint(args.out, model, spec, rows=rows[:summary["rows"]], training=summary,
                    source=source, held_back=held)
    print(json.dumps({"checkpoint": str(args.out), "feature_spec_hash": spec.hash,
                      "dim": spec.dim, **summary}, indent=2))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from federation.model.train import load_checkpoint
    from federation.registry.package import package_model

    key = _private(args.key) if args.key else None
    try:
        ck = load_checkpoint(args.checkpoint)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    rows = None if args.from_stats else ck["rows"]
    if rows is None and ck["stats"] is None:
        raise UsageError(f"{args.checkpoint}: holds neither training rows nor statistics")
    with tqdm(desc="calibrate", unit="batch", disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            data, report = package_model(
                ck["model"], ck["spec"], rows=rows, stats=ck["stats"], private_key=key,
                name=args.name, version=args.version, parent=args.parent,
                training={**ck["training"], "source": ck["source"]}, progress=progress,
                held_back=ck["held_back"],
                smoothing_span=int(ck["training"].get("smoothing_span", 1)),
                margin=float(ck["training"].get("threshold_margin", 1.0)))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    args.out.write_bytes(data)
    from edge_agent.package import read_package

    pkg = read_package(data, None)
    print(json.dumps({"package": str(args.out), "version": pkg.version, "sha256": pkg.sha256,
                      "signed": pkg.signed, **report}, indent=2))
    return 0


def _private(path: Path) -> Any:
    from federation.registry.keys import KeyFileError, load_private

    try:
        return load_private(path)
    except KeyFileError as exc:
        raise UsageError(f"{path}: {exc}") from None


def _sign_updates(args: argparse.Namespace) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    from federation.registry.package import default_serial

    updates: dict[str, Any] = {}
    if args.serial is not None and args.serial_now:
        raise UsageError("give --serial or --serial-now, not both")
    if args.serial is not None or args.serial_now:
        updates["serial"] = default_serial() if args.serial_now else args.serial
    if args.target is not None:
        updates["targets"] = args.target
    if args.not_after and args.valid_days is not None:
        raise UsageError("give --not-after or --valid-days, not both")
    if args.valid_days is not None:
        updates["not_after"] = (datetime.now(UTC) + timedelta(days=args.valid_days)).isoformat(
            timespec="seconds")
    elif args.not_after:
        updates["not_after"] = args.not_after
    if args.version:
        updates["version"] = args.version
    return updates


def _sign(args: argparse.Namespace) -> int:
    from edge_agent.package import PackageError, read_package
    from federation.registry.package import sign_package

    try:
        data = sign_package(_read(args.package, "package"), _private(args.key),
                            _sign_updates(args))
    except (PackageError, ValueError) as exc:
        raise UsageError(f"{args.package}: {exc}") from None
    (args.out or args.package).write_bytes(data)
    pkg = read_package(data, None)
    print(f"signed {args.out or args.package}: {pkg.version} serial {pkg.serial} targets "
          f"{pkg.targets or 'all'} not_after {pkg.manifest.get('not_after') or 'never'}")
    return 0


def _republish(args: argparse.Namespace) -> int:
    from federation.registry.keys import KeyFileError, load_public
    from federation.registry.store import Registry

    try:
        reg = Registry(args.registry, public_key=load_public(args.public_key))
        rec = reg.republish(args.version, _private(args.key), reason=args.reason,
                            actor="cli")
        if args.to != "candidate":
            rec = reg.promote(rec.version, to=args.to, actor="cli",
                              reason=args.reason or f"re-published {args.version}")
    except KeyError:
        raise UsageError(f"no version {args.version} in {args.registry}") from None
    except (KeyFileError, ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    print(f"{rec.version}: {args.version}'s weights re-signed with a higher serial, {rec.state}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from edge_agent.package import PackageError, read_package

    spec_hash = None
    if args.config is not None:
        from edge_agent.config import ConfigError, load_gateway_config

        try:
            cfg = load_gateway_config(args.config)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        streams = [s for s in cfg.streams if args.stream in (None, s.kind)]
        if len(streams) != 1:
            raise UsageError(f"{args.config}: name the stream with --stream (das or dts)")
        spec_hash = streams[0].feature_spec().hash
    try:
        pkg = read_package(_read(args.package, "package"), _read(args.public_key, "public key"),
                           feature_spec_hash=spec_hash)
    except PackageError as exc:
        raise UsageError(f"{args.package}: refused ({exc})") from None
    print(f"ok: {pkg.version} sha256 {pkg.sha256} spec {pkg.feature_spec_hash[:12]} signed")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from edge_agent.package import PackageError, read_package

    try:
        pkg = read_package(_read(args.package, "package"), None)
    except PackageError as exc:
        raise UsageError(f"{args.package}: {exc}") from None
    m = dict(pkg.manifest)
    if not args.full:
        for key in ("normalization", "error_scale", "feature_names"):
            m.pop(key, None)
        cal = m.get("threshold", {}).get("calibration")
        if cal:  # the held-back scores: their count and range, not the list
            scores = cal.get("scores") or [0.0]
            m["threshold"] = {**m["threshold"], "calibration": {
                **{k: v for k, v in cal.items() if k != "scores"},
                "scores_min": min(scores), "scores_max": max(scores)}}
    m["package_sha256"] = pkg.sha256
    m["signed"] = pkg.signed
    print(json.dumps(m, indent=2))
    return 0


def _operating_point(args: argparse.Namespace) -> Any:
    """The gateway's default ThresholdConfig with the flags given on top (0 = no floor)."""
    from federation.model import evaluate

    update: dict[str, Any] = {}
    if args.false_alarm_rate is not None:
        update["false_alarm_rate"] = args.false_alarm_rate
    if args.floor_quantile is not None:
        update["floor_quantile"] = args.floor_quantile or None
    try:
        return evaluate.MAIN_POINT.model_validate({**evaluate.MAIN_POINT.model_dump(), **update})
    except ValueError as exc:
        raise UsageError(f"--false-alarm-rate/--floor-quantile: {exc}") from None


def _eval(args: argparse.Namespace) -> int:
    from edge_agent.package import PackageError, read_package
    from federation.model import evaluate

    public = _read(args.public_key, "public key") if args.public_key else None
    try:
        pkg = read_package(_read(args.model, "package"), public)
    except PackageError as exc:
        raise UsageError(f"{args.model}: {exc}") from None
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    try:
        ev = evaluate.evaluate_runs(
            pkg, families=families, peers=peers, quick=args.quick, seed=args.seed,
            train_checkpoint=args.train_rows, progress=True,
            thresholds=_operating_point(args))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    result = ev.result
    if args.plots is not None:
        from fiberwatch.bench.model import write_plots

        result["plots"] = write_plots(result, ev.raws, args.plots)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(evaluate.table(result))
    return 0
