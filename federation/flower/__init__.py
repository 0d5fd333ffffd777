"""The Flower runtime: the thin apps, the server's rounds and strategies, and deployment.

`client_app` / `server_app` (the ClientApp and ServerApp, ``flwr_app/`` is the App folder
that `flwr run` builds), `rounds` and `strategies` (the server's message loop and
aggregation), `compression` (quantised update deltas), `metrics_sink` (round metrics to
InfluxDB), `node_runtime` (a gateway's SuperNode and warm ClientApp worker) and
`deployment` (launching SuperLink, SuperNodes and `flwr run`).
"""
