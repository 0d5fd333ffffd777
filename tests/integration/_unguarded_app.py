"""An ASGI app without the cloud app's insecure-dev bind guard: what `uvicorn` would serve if
the protection were switched off (tests/integration/test_security_trust.py shows the bind
check failing on it). It has no routes and no tokens: every request gets 404."""

from fastapi import FastAPI

app = FastAPI()
