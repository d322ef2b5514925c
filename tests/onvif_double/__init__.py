"""An ONVIF camera double for tests: a real SOAP-over-HTTP server and a WS-Discovery responder.

It answers what onvif-zeep-async 3.2.5 sends (device, media ver10 and PTZ ver20 services),
checks WS-Security UsernameToken digests for real against its own clock, and records PTZ calls.
"""

from __future__ import annotations

from .double import (
    DiscoveryResponder,
    OnvifDouble,
    PlainHttpServer,
    PtzCall,
    StreamProfile,
    ws_security_digest,
)

__all__ = [
    "DiscoveryResponder",
    "OnvifDouble",
    "PlainHttpServer",
    "PtzCall",
    "StreamProfile",
    "ws_security_digest",
]
