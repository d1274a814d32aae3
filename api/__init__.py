"""The HTTP front-end (FastAPI): thin routes over the shared services."""
