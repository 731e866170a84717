"""The HTTP control plane: the FastAPI application and ``ketter api``'s server."""
