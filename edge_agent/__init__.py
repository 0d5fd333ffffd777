"""edge_agent: the gateway's streaming anomaly detection pipeline.

Public contracts other packages may import: `edge_agent.wire` (frame format),
`edge_agent.topics` (MQTT layout), `edge_agent.events` (event schema), `edge_agent.summary`
(feature summaries, health), `edge_agent.features` (feature spec and extractor),
`edge_agent.config` (gateway config schema), `edge_agent.detectors` (detector contract),
`edge_agent.package` (model package reader). This package imports none of the others and
needs only the ``edge`` extra (no torch, no TensorFlow).
"""
