"""Tests for the LightNVR integration."""
