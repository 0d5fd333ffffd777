"""firmware_configs: the TOML configs of interrogators and gateways, and their schema.

``interrogators/*.toml`` describe the units that produce frames, ``gateways/*.toml`` the edge
agents that consume them, ``bridges/*.toml`` the bridges that turn a real interrogator's files
into frames (the demo site: gateways well-a, well-b and pipeline-1). The schema
and the checker live in `firmware_configs.schema`; this module only names the folders, so
importing it costs nothing.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent
GATEWAYS = ROOT / "gateways"
INTERROGATORS = ROOT / "interrogators"
BRIDGES = ROOT / "bridges"
ALERTS = ROOT / "alerts"

__all__ = ["ALERTS", "BRIDGES", "GATEWAYS", "INTERROGATORS", "ROOT"]
