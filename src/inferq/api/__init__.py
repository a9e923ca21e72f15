"""The HTTP API: FastAPI app, routers, dependencies and the error mapping."""
