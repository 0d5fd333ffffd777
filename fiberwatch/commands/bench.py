"""`fiberwatch bench NAME [--json FILE] [--quick]`: benchmarks against real parts.

Each benchmark is a module `fiberwatch.bench.<name>` with::

    def run(quick: bool, out_dir: Path) -> dict  # figures, the peer of the same run, ratios
    def to_markdown(result: dict) -> str         # its section of BENCHMARKS.md

Results are written to ``benchmarks/<name>.json`` (and to ``--json FILE``), and
BENCHMARKS.md is regenerated from every JSON in ``benchmarks/``. With ``--out-dir DIR``
(any other directory) results and the report go to DIR (``DIR/BENCHMARKS.md``): a scratch
run leaves the repository's report alone.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
from pathlib import Path

from fiberwatch.cli import UsageError


def available() -> list[str]:
    import fiberwatch.bench as pkg

    return sorted(
        m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark (sim, edge, model, cloud, fl, security, "
                       "bridge, chaos, all)")
    p.add_argument("name", help="benchmark name, 'all', or 'report' (rebuild BENCHMARKS.md)")
    p.add_argument("--json", type=Path, help="also write the result object to this file")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks"),
                   help="where results, plots and (for another directory than ./benchmarks) "
                   "the report go (default: ./benchmarks, report ./BENCHMARKS.md)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fiberwatch.bench import _report

    names = available()
    if args.name == "report":
        _report.write(args.out_dir)
        return 0
    todo = names if args.name == "all" else [args.name]
    unknown = [n for n in todo if n not in names]
    if unknown:
        raise UsageError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(names)}, all")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in todo:
        module = importlib.import_module(f"fiberwatch.bench.{name}")
        result = module.run(quick=args.quick, out_dir=args.out_dir)
        result.setdefault("benchmark", name)
        result["machine"] = _report.machine()
        (args.out_dir / f"{name}.json").write_text(json.dumps(result, indent=2))
        results[name] = result
        print(json.dumps(result, indent=2))
    if args.json:
        payload = results[todo[0]] if len(todo) == 1 else results
        args.json.write_text(json.dumps(payload, indent=2))
    _report.write(args.out_dir)
    return 0
