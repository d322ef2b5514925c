"""Benchmarks run inside the test harness (a real HA core in-process): reuse the test fixtures."""

from tests.conftest import auto_enable_custom_integrations, media_cache, webrtc_loopback  # noqa: F401 - pytest finds fixtures by name
