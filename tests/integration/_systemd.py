"""Reading the shipped systemd units and their environment examples (the unit tests' helpers)."""

from __future__ import annotations

import configparser
from pathlib import Path


def service_settings(unit: Path) -> dict[str, list[str]]:
    """[Service] settings, each key with every value it is given (systemd allows repeats)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def env_example(path: Path) -> dict[str, str]:
    """An ``*.env.example`` file's ``KEY=value`` lines (comments and blank lines skipped)."""
    parser_ = configparser.ConfigParser(interpolation=None)
    parser_.optionxform = str  # type: ignore[assignment,method-assign]
    lines = [ln for ln in path.read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    parser_.read_string("[env]\n" + "\n".join(lines))
    return dict(parser_["env"])
