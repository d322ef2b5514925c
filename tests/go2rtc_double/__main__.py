"""Run the go2rtc protocol double: ``python -m tests.go2rtc_double -c go2rtc.yaml``."""

from __future__ import annotations

from .double import main

main()
