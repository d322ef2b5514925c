"""Benchmarks: each prints a table; run them by hand, never as tests."""
