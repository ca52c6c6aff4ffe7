"""Benchmarks: scripts that print figures (never run by the tests)."""
