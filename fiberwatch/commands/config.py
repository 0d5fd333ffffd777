"""`fiberwatch config check FILE...`: validate interrogator, gateway, bridge and alerting configs.

Prints ``OK FILE (kind)`` on stdout per valid file and ``FILE: field: message`` on stderr per
problem; exits 0 when every file is valid, 1 when any is not, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fiberwatch.cli import UsageError

_EPILOG = """\
A file's kind is told by its top-level table: [interrogator], [gateway], [bridge] or [alerting]
(rules and receivers, `fiberwatch cloud alerting`). A gateway stream
that names an interrogator is compared with that interrogator's file when it is checked in the
same run, or lies in the gateway's folder or the sibling interrogators/ folder.

exit status: 0 all valid, 1 a file has problems, 2 usage error
example: fiberwatch config check firmware_configs/"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config",
                       help="validate configs (interrogators, gateways, bridges, alerting)",
                       description="Configs: interrogators, gateways, bridges, alerting.")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    c = csub.add_parser(
        "check",
        help="validate config files",
        description="Validate interrogator, gateway, bridge and alerting configs (TOML).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("files", nargs="*", metavar="FILE",
                   help="a .toml file, or a folder: every *.toml below it")
    c.set_defaults(func=_check)
    p.set_defaults(func=_no_action)


def _no_action(_args: argparse.Namespace) -> int:
    raise UsageError("say what to do: fiberwatch config check FILE...")


def expand(names: list[str]) -> list[Path]:
    """Files as given; a folder stands for every ``*.toml`` below it."""
    if not names:
        raise UsageError("no files given: fiberwatch config check FILE...")
    out: list[Path] = []
    for name in names:
        p = Path(name)
        if p.is_dir():
            found = sorted(p.rglob("*.toml"))
            if not found:
                raise UsageError(f"{p}: no .toml files in this folder")
            out.extend(found)
        else:
            out.append(p)
    return out


def _check(args: argparse.Namespace) -> int:
    from firmware_configs.schema import check_files  # pydantic and numpy only when needed

    bad = 0
    for result in check_files(expand(args.files)):
        if result.ok:
            print(f"OK {result.path} ({result.kind})")
        else:
            bad += 1
            for line in result.problems:
                print(line, file=sys.stderr)
    return 1 if bad else 0
