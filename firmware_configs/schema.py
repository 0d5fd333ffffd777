"""The schema of the firmware configs: one import for every kind of file.

``[interrogator]`` files: `InterrogatorConfig` (defined in `firmware_configs.interrogator`).
``[gateway]`` files: `GatewayConfig`, re-exported from `edge_agent.config`, which owns it
because the gateway agent must not import other packages.

`check_file` / `check_files` validate files and return one line per problem,
``FILE: field.path: message``.

Examples
--------
>>> from firmware_configs import GATEWAYS
>>> check_file(GATEWAYS / "well-a.toml")
[]
"""

from __future__ import annotations

from edge_agent.config import (
    BrokerConfig,
    ConfigError,
    GatewayConfig,
    StreamConfig,
    load_gateway_config,
)
from firmware_configs.check import CheckResult, load_interrogator_config, validate_file
from firmware_configs.crosscheck import check_file, check_files
from firmware_configs.interrogator import (
    FiberConfig,
    InterrogatorConfig,
    InterrogatorIdentity,
    InterrogatorMqtt,
    InterrogatorStream,
)

__all__ = [
    "BrokerConfig",
    "CheckResult",
    "ConfigError",
    "FiberConfig",
    "GatewayConfig",
    "InterrogatorConfig",
    "InterrogatorIdentity",
    "InterrogatorMqtt",
    "InterrogatorStream",
    "StreamConfig",
    "check_file",
    "check_files",
    "load_gateway_config",
    "load_interrogator_config",
    "validate_file",
]
