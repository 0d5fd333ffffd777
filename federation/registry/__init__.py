"""Model packages and their lifecycle: build, sign, store, publish, roll out.

`package` (build and sign packages), `keys` (Ed25519 signing keys), `store` (the on-disk
registry and its state machine), `publish` (the ServerApp's federated model -> registry) and
`rollout` (canary rollout to the gateways).
"""
