"""fiberwatch: the thin composition layer (command line, demo launcher, benchmarks).

None of the product packages (`edge_agent`, `sensors_sim`, `federation`, `cloud`,
`firmware_configs`) imports this package; it wires them together.
"""

__version__ = "0.1.0"
