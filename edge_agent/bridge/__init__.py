"""The interrogator bridge: files an interrogator writes -> wire frames -> the site broker.

A gateway-side process (``fiberwatch bridge``) beside the edge agent. DAS files are read with
DASCore (the ``bridge`` extra, imported lazily: the edge agent itself never needs it), DTS
text/CSV with the offline scorer's CSV reader. See `edge_agent.bridge.service`.
"""

from edge_agent.bridge.config import BridgeConfig, load_bridge_config
from edge_agent.bridge.reader import Block, FileError, read_file

__all__ = ["Block", "BridgeConfig", "FileError", "load_bridge_config", "read_file"]
