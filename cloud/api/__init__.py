"""The cloud HTTP API (FastAPI): routes under /api/v1, bearer-token auth with roles."""
