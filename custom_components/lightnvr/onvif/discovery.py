"""Find ONVIF cameras (NetworkVideoTransmitter) with a WS-Discovery probe.

The LAN-wide search is WSDiscovery's multicast probe, run in the executor (the library sleeps
and runs its own threads), as Home Assistant's onvif integration does. A probe to given
addresses (`unicast_to`) is sent from an asyncio socket with WSDiscovery's own message
builder and parser: WSDiscovery 2.1.2 sends unicast probes from a socket it never reads, so the
answer (sent back to the probe's source, as the spec asks) would be lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
import contextlib
from dataclasses import dataclass
import logging
import socket
from typing import Any
from urllib.parse import unquote, urlsplit

from homeassistant.core import HomeAssistant
from wsdiscovery.actions import NS_ACTION_PROBE_MATCH, constructProbe
from wsdiscovery.discovery import ThreadedWSDiscovery
from wsdiscovery.message import createSOAPMessage, parseSOAPMessage
from wsdiscovery.qname import QName

_LOGGER = logging.getLogger(__name__)

WS_DISCOVERY_PORT = 3702
NVT_TYPE = ("http://www.onvif.org/ver10/network/wsdl", "NetworkVideoTransmitter", "dn")
SCOPE_NAME = "onvif://www.onvif.org/name/"
SCOPE_HARDWARE = "onvif://www.onvif.org/hardware/"


@dataclass(frozen=True, slots=True)
class DiscoveredDevice:
    """A camera that answered the probe."""

    host: str
    port: int
    name: str | None
    hardware: str | None
    xaddrs: tuple[str, ...]


async def async_discover(
    hass: HomeAssistant,
    timeout: float = 3.0,  # noqa: ASYNC109 - how long to listen for answers, not a deadline
    unicast_to: Sequence[str] = (),
) -> list[DiscoveredDevice]:
    """Probe for ONVIF cameras for `timeout` seconds; one entry per device, sorted by host.

    `unicast_to` ("host" or "host:port") probes those addresses only, without multicast.
    """
    if unicast_to:
        services = await _async_unicast_probe(unicast_to, timeout)
    else:
        services = await hass.async_add_executor_job(_multicast_probe, timeout)
    devices: dict[tuple[str, int], DiscoveredDevice] = {}
    for service in services:
        if (device := _device(service)) is not None:
            devices.setdefault((device.host, device.port), device)
    return sorted(devices.values(), key=lambda d: (d.host, d.port))


def _nvt_type() -> Any:
    return QName(*NVT_TYPE)


def _multicast_probe(timeout: float) -> list[Any]:
    """Blocking: WSDiscovery's multicast probe on every interface."""
    discovery = ThreadedWSDiscovery(relates_to=True)
    discovery.start()
    try:
        return list(discovery.searchServices(types=[_nvt_type()], timeout=timeout))
    finally:
        discovery.stop()


class _ProbeProtocol(asyncio.DatagramProtocol):
    """Collects the ProbeMatches answering our probe's message id."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.matches: list[Any] = []

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            env = parseSOAPMessage(data, addr[0])
        except Exception:  # noqa: BLE001 - anything may arrive on a UDP port
            _LOGGER.debug("Unreadable WS-Discovery answer from %s", addr[0])
            return
        if env is None or env.getAction() != NS_ACTION_PROBE_MATCH:
            return
        if env.getRelatesTo() != self.message_id:
            return
        self.matches.extend(env.getProbeResolveMatches())


async def _async_unicast_probe(targets: Iterable[str], seconds: float) -> list[Any]:
    probe = constructProbe([_nvt_type()], [])
    data = createSOAPMessage(probe).encode("utf-8")
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _ProbeProtocol(probe.getMessageId()), family=socket.AF_INET
    )
    try:
        for target in targets:
            host, _, port = target.rpartition(":") if ":" in target else (target, "", "")
            # Resolved here, not by sendto (which would look the name up on the event loop);
            # IPv4 only, as the socket is.
            try:
                resolved = await loop.getaddrinfo(
                    host.strip("[]"),
                    int(port or WS_DISCOVERY_PORT),
                    family=socket.AF_INET,
                    type=socket.SOCK_DGRAM,
                )
            except OSError as err:
                _LOGGER.debug("WS-Discovery: cannot resolve %s: %s", host, err)
                continue
            address = resolved[0][4]
            # UDP may drop a datagram: send twice, as SOAP-over-UDP repeats unicast messages.
            for _ in range(2):
                transport.sendto(data, address)
        await asyncio.sleep(seconds)
    finally:
        transport.close()
    return protocol.matches


def _device(service: Any) -> DiscoveredDevice | None:
    """Return the device of a ProbeMatch: its first HTTP XAddr gives host and port."""
    xaddrs = tuple(str(x) for x in (service.getXAddrs() or ()))
    for xaddr in xaddrs:
        parts = urlsplit(xaddr)
        if parts.scheme in ("http", "https") and parts.hostname:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            break
    else:
        return None
    name = hardware = None
    for scope in service.getScopes() or ():
        value = str(scope.getValue())
        lowered = value.lower()
        with contextlib.suppress(IndexError):
            if lowered.startswith(SCOPE_NAME):
                name = unquote(value[len(SCOPE_NAME) :]).strip() or None
            elif lowered.startswith(SCOPE_HARDWARE):
                hardware = unquote(value[len(SCOPE_HARDWARE) :]).strip() or None
    return DiscoveredDevice(parts.hostname, port, name, hardware, xaddrs)
