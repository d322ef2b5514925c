"""ONVIF: read a camera's streams from its address and login, find cameras, move PTZ cameras.

Built on the libraries Home Assistant's own `onvif` integration uses (onvif-zeep-async and
WSDiscovery), so no second copy gets installed next to Home Assistant.
"""

from __future__ import annotations
