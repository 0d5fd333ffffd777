"""fiberwatch cloud: ingestion, storage and the HTTP API.

Data side (this package's modules besides ``api`` and ``dashboard``):

- `cloud.influx` -- `InfluxClient`, the v1 HTTP API client (works with InfluxDB 1.x, 2.x
  compatibility endpoints and 3.x), raising `InfluxError`.
- `cloud.schema` -- the database, retention policies and measurements (a public contract,
  including the ``fl_round`` line format for the federation server); `ensure_schema`.
- `cloud.codec` -- line protocol for each measurement and the packed-array codec.
- `cloud.ingest` -- the MQTT -> InfluxDB ingestion process (``python -m cloud.ingest``).
- `cloud.store` -- `Store`, the read layer the API calls; `cloud.window` its waterfall math.

Nothing is imported here, so ``import cloud.influx`` stays light.
"""
