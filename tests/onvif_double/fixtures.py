"""Pytest fixtures around the ONVIF camera double.

tests/conftest.py imports them with ``from .onvif_double.fixtures import *`` (pytest then finds
the fixtures in conftest's namespace).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
from typing import Any

import pytest

from ..infra.rtsp import RtspServer
from .double import DiscoveryResponder, OnvifDouble, PlainHttpServer, StreamProfile

__all__ = [
    "DOUBLE_HARDWARE",
    "DOUBLE_NAME",
    "onvif_camera",
    "onvif_double_factory",
    "plain_http_server",
    "ws_discovery",
]

DOUBLE_NAME = "Garden PTZ"  # the name the WS-Discovery responder announces
DOUBLE_HARDWARE = "Double-PTZ"

type OnvifDoubleFactory = Callable[..., OnvifDouble]


@pytest.fixture
def onvif_double_factory(socket_enabled: None) -> Iterator[OnvifDoubleFactory]:
    """Start ONVIF doubles on 127.0.0.1 (arguments as OnvifDouble's); all stop at teardown."""
    with contextlib.ExitStack() as stack:

        def make(profiles: list[StreamProfile], **knobs: Any) -> OnvifDouble:
            return stack.enter_context(OnvifDouble(profiles, **knobs))

        yield make


@pytest.fixture
def onvif_camera(rtsp_camera: RtspServer, onvif_double_factory: OnvifDoubleFactory) -> OnvifDouble:
    """An ONVIF PTZ camera whose profiles stream from the `rtsp_camera` fixture's "cam" mount.

    Its ONVIF login is the RTSP login, as on real cameras. Profiles: "main" (H.264, PTZ) and
    "sub" (a smaller H.264 profile), both at the auth port's "cam" URL without credentials
    (the camera gives URIs without them); a "jpeg" profile as many cameras also list.
    """
    uri = rtsp_camera.auth_url("cam", credentials=False)
    return onvif_double_factory(
        [
            StreamProfile("main", "Main", uri, width=1920, height=1080, fps=25, ptz=True),
            StreamProfile("sub", "Sub", uri, width=640, height=360, fps=15, ptz=True),
            StreamProfile("jpeg", "Snapshot", uri, encoding="JPEG", width=640, height=360),
        ],
        username=rtsp_camera.user or "",
        password=rtsp_camera.password or "",
        model=DOUBLE_HARDWARE,
    )


@pytest.fixture
def ws_discovery(onvif_camera: OnvifDouble) -> Iterator[DiscoveryResponder]:
    """A WS-Discovery responder on 127.0.0.1 (UDP, unicast) announcing `onvif_camera`.

    Probe it with ``async_discover(hass, unicast_to=[ws_discovery.address])``.
    """
    with DiscoveryResponder(onvif_camera.device_xaddr, DOUBLE_NAME, DOUBLE_HARDWARE) as responder:
        yield responder


@pytest.fixture
def plain_http_server(socket_enabled: None) -> Iterator[PlainHttpServer]:
    """A web server on 127.0.0.1 that answers every request with HTML (not ONVIF)."""
    with PlainHttpServer() as server:
        yield server
