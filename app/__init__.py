"""The FastAPI application, the CLI and the web pages."""
