"""Check one firmware config file: one line per problem, ``FILE: field.path: message``.

A file's kind is told by its top-level table: ``[interrogator]``, ``[gateway]``, ``[bridge]``
(`edge_agent.bridge.config.BridgeConfig`) or ``[alerting]``; it is then
validated against that kind's schema. Checks across files are in `firmware_configs.crosscheck`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from edge_agent.bridge.config import BridgeConfig
from edge_agent.config import ConfigError, GatewayConfig
from firmware_configs.alerting import AlertingConfig
from firmware_configs.interrogator import InterrogatorConfig

Kind = Literal["interrogator", "gateway", "bridge", "alerting"]
KINDS: dict[str, type[BaseModel]] = {"interrogator": InterrogatorConfig, "gateway": GatewayConfig,
                                     "bridge": BridgeConfig, "alerting": AlertingConfig}
_SCALAR = (int, float, str, bool)
_LINE = re.compile(r"\(at line (\d+), column (\d+)\)")


@dataclass
class CheckResult:
    """The outcome for one file; `kind` is None when it could not be told."""

    path: Path
    kind: Kind | None = None
    problems: list[str] = field(default_factory=list)
    config: BaseModel | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, loc: str, message: str) -> None:
        self.problems.append(f"{self.path}: {loc}: {message}")


T = TypeVar("T")

def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field (not in the schema; check the spelling and the table)"
    if kind == "missing":
        return "required field is missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    if kind not in ("inconsistent", "value_error") and isinstance(value, _SCALAR):
        msg += f" (got {value!r})"
    return msg


def add_validation_errors(result: CheckResult, exc: ValidationError) -> None:
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        result.add(loc, _message(err))


def _read(result: CheckResult) -> dict[str, Any] | None:
    try:
        with result.path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        result.problems.append(f"{result.path}: file not found")
    except IsADirectoryError:
        result.problems.append(f"{result.path}: is a directory, not a TOML file")
    except UnicodeDecodeError as exc:
        result.problems.append(f"{result.path}: not UTF-8 text (byte {exc.start})")
    except tomllib.TOMLDecodeError as exc:
        m = _LINE.search(str(exc))
        where = f"line {m.group(1)}, column {m.group(2)}" if m else "(toml)"
        result.add(where, f"invalid TOML: {_LINE.sub('', str(exc)).strip()}")
    except OSError as exc:
        result.problems.append(f"{result.path}: cannot read: {exc.strerror}")
    return None


def validate_file(path: Path | str) -> CheckResult:
    """Parse one file, tell its kind and validate it against that kind's schema."""
    result = CheckResult(Path(path))
    data = _read(result)
    if data is None:
        return result
    tables = [k for k in KINDS if isinstance(data.get(k), dict)]
    if len(tables) != 1:
        what = ("both " + " and ".join(f"[{t}]" for t in tables) if tables
                else "no [interrogator] or [gateway]")
        result.add("(top level)", f"{what} table: cannot tell the kind of config "
                   "(one of [interrogator], [gateway], [bridge], [alerting])")
        return result
    result.kind = tables[0]  # type: ignore[assignment]
    try:
        result.config = KINDS[tables[0]].model_validate(data)
    except ValidationError as exc:
        add_validation_errors(result, exc)
    return result


def load_kind(path: Path | str, kind: str, model: type[T]) -> T:
    """Load and validate one config of ``kind``; raise `ConfigError` naming file and field."""
    result = validate_file(path)
    if result.ok and result.kind != kind:
        result.add("(top level)", f"a {result.kind} config, not an {kind} config")
    if not result.ok:
        raise ConfigError("\n".join(result.problems))
    assert isinstance(result.config, model)
    return result.config


def load_interrogator_config(path: Path | str) -> InterrogatorConfig:
    """Load and validate one interrogator config; raise `ConfigError` naming file and field."""
    return load_kind(path, "interrogator", InterrogatorConfig)
