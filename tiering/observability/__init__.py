"""Logs (structlog) and, later, metrics and health endpoints."""
