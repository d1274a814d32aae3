"""Benchmarks: scripts run by hand, not tests (see bench/ingest.py)."""
