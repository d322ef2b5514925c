"""The ONVIF camera double: SOAP 1.2 over HTTP on 127.0.0.1, WS-Discovery over UDP.

Like a real camera it:
- answers GetSystemDateAndTime without a login and everything else only with a valid
  WS-Security UsernameToken (PasswordDigest = Base64(SHA1(nonce + created + password))), whose
  `Created` must be within `MAX_TOKEN_SKEW` seconds of its own clock (real time + `clock_offset`);
- refuses with a SOAP 1.2 fault, subcode `ter:NotAuthorized`, HTTP 400 (or `auth_status`);
- reports the time of its own clock, so a client can sign with the camera's time.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
import datetime as dt
import hashlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import re
import socket
import threading
from typing import Any, Self
from urllib.parse import quote
import uuid
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

SOAP_ENV = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
NAMESPACES = {
    "env": SOAP_ENV,
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tptz": "http://www.onvif.org/ver20/ptz/wsdl",
    "tt": "http://www.onvif.org/ver10/schema",
    "ter": "http://www.onvif.org/ver10/error",
}
MAX_TOKEN_SKEW = 5.0  # seconds, like the cameras tried by Home Assistant's onvif integration
PRE_AUTH = frozenset({"GetSystemDateAndTime"})  # the ONVIF spec's PRE_AUTH class used here

# WS-Discovery (2005/04, as ONVIF devices use it)
WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
PROBE_MATCHES = "http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches"


def ws_security_digest(nonce: bytes, created: str, password: str) -> str:
    """Base64(SHA1(nonce + created + password)), the UsernameToken PasswordDigest."""
    return base64.b64encode(
        hashlib.sha1(nonce + created.encode() + password.encode()).digest()
    ).decode()


@dataclass(slots=True)
class StreamProfile:
    """One media profile of the double."""

    token: str
    name: str
    stream_uri: str
    encoding: str = "H264"
    width: int = 1920
    height: int = 1080
    fps: int = 25
    ptz: bool = False


@dataclass(frozen=True, slots=True)
class PtzCall:
    """A PTZ request the double received (and accepted)."""

    operation: str  # ContinuousMove | Stop | GotoPreset
    profile: str
    pan: float | None = None
    tilt: float | None = None
    zoom: float | None = None
    preset: str | None = None
    speed: float | None = None


class SoapFaultError(Exception):
    """Answer with a SOAP 1.2 fault."""

    def __init__(self, status: int, code: str, subcode: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.code, self.subcode, self.reason = status, code, subcode, reason


@dataclass
class OnvifDouble:
    """A camera's ONVIF device, media and PTZ services on 127.0.0.1."""

    profiles: list[StreamProfile]
    username: str = "admin"
    password: str = "onvif-Pa55!"
    clock_offset: float = 0.0  # seconds: the double's clock = real time + offset
    manufacturer: str = "LightNVR Labs"
    model: str = "Double-PTZ"
    firmware: str = "1.2.3"
    serial: str = "SN-0001"
    presets: list[tuple[str, str]] = field(default_factory=lambda: [("1", "Door"), ("2", "Gate")])
    auth_status: int = 400  # HTTP status of a NotAuthorized fault (some cameras send 401)
    utc_time: bool = True  # False: GetSystemDateAndTime gives only the local time (zone "UTC")
    # Recorded for the tests:
    ptz_calls: list[PtzCall] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)  # every operation asked, in order
    refused: list[str] = field(default_factory=list)  # operations refused for the login
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    # ----- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        double = self

        class Handler(_SoapHandler):
            owner = double

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = False  # stop() waits for every request thread
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="onvif-double", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- what tests use ----------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        assert self._server is not None, "double not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def device_xaddr(self) -> str:
        return f"{self.base_url}/onvif/device_service"

    @property
    def has_ptz(self) -> bool:
        return any(p.ptz for p in self.profiles)

    def set_stream_uri(self, token: str, uri: str) -> None:
        """Change a profile's stream URI (the camera's firmware moved its path)."""
        with self._lock:
            self._profile(token).stream_uri = uri

    def now(self) -> dt.datetime:
        """The double's clock (UTC)."""
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.clock_offset)

    # ----- request handling (request threads) --------------------------------------------------

    def handle(self, path: str, body: bytes) -> tuple[int, str]:
        try:
            envelope = ET.fromstring(body)
        except ET.ParseError:
            return 400, _fault("env:Sender", "ter:WellFormed", "Malformed XML")
        header = envelope.find(f"{{{SOAP_ENV}}}Header")
        request_body = envelope.find(f"{{{SOAP_ENV}}}Body")
        if request_body is None or len(request_body) == 0:
            return 400, _fault("env:Sender", "ter:InvalidArgs", "No body")
        request = request_body[0]
        operation = request.tag.rsplit("}", 1)[-1]
        with self._lock:
            self.operations.append(operation)
        try:
            if operation not in PRE_AUTH:
                self._check_login(header, operation)
            # GetStreamUri → _op_get_stream_uri
            handler = getattr(
                self, "_op_" + re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower(), None
            )
            service = path.rstrip("/").rsplit("/", 1)[-1]
            if handler is None or not _serves(service, operation):
                raise SoapFaultError(
                    400, "env:Receiver", "ter:ActionNotSupported", f"{operation} not supported"
                )
            return 200, _envelope(handler(request))
        except SoapFaultError as fault:
            return fault.status, _fault(fault.code, fault.subcode, fault.reason)

    def _check_login(self, header: ET.Element | None, operation: str) -> None:
        token = None
        if header is not None:
            token = header.find(f"{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
        if token is None or not self._token_valid(token):
            with self._lock:
                self.refused.append(operation)
            raise SoapFaultError(
                self.auth_status, "env:Sender", "ter:NotAuthorized", "Sender not Authorized"
            )

    def _token_valid(self, token: ET.Element) -> bool:
        username = token.findtext(f"{{{WSSE}}}Username") or ""
        password = token.find(f"{{{WSSE}}}Password")
        nonce = token.findtext(f"{{{WSSE}}}Nonce") or ""
        created = token.findtext(f"{{{WSU}}}Created") or ""
        if username != self.username or password is None or not created:
            return False
        if not (password.get("Type") or "").endswith("#PasswordDigest"):
            return False  # cameras ask for digests; a plain-text password is refused here
        try:
            nonce_bytes = base64.b64decode(nonce, validate=True)
            when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            return False
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        if abs((when - self.now()).total_seconds()) > MAX_TOKEN_SKEW:
            return False  # a replayed or badly clocked token
        return (password.text or "") == ws_security_digest(nonce_bytes, created, self.password)

    def _profile(self, token: str | None) -> StreamProfile:
        for profile in self.profiles:
            if profile.token == token:
                return profile
        raise SoapFaultError(400, "env:Sender", "ter:InvalidArgVal", f"No profile {token}")

    # ----- device service ----------------------------------------------------------------------

    def _op_get_system_date_and_time(self, request: ET.Element) -> str:
        now = self.now()
        return (
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
            "<tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
            f"<tt:TimeZone><tt:TZ>{'UTC0' if self.utc_time else 'UTC'}</tt:TZ></tt:TimeZone>"
            + (f"<tt:UTCDateTime>{_datetime(now)}</tt:UTCDateTime>" if self.utc_time else "")
            + f"<tt:LocalDateTime>{_datetime(now)}</tt:LocalDateTime>"
            + "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        )

    def _op_get_device_information(self, request: ET.Element) -> str:
        return (
            "<tds:GetDeviceInformationResponse>"
            f"<tds:Manufacturer>{escape(self.manufacturer)}</tds:Manufacturer>"
            f"<tds:Model>{escape(self.model)}</tds:Model>"
            f"<tds:FirmwareVersion>{escape(self.firmware)}</tds:FirmwareVersion>"
            f"<tds:SerialNumber>{escape(self.serial)}</tds:SerialNumber>"
            "<tds:HardwareId>double</tds:HardwareId>"
            "</tds:GetDeviceInformationResponse>"
        )

    def _op_get_capabilities(self, request: ET.Element) -> str:
        base = self.base_url
        ptz = (
            f"<tt:PTZ><tt:XAddr>{base}/onvif/ptz_service</tt:XAddr></tt:PTZ>"
            if self.has_ptz
            else ""
        )
        return (
            "<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Device><tt:XAddr>{base}/onvif/device_service</tt:XAddr></tt:Device>"
            f"<tt:Media><tt:XAddr>{base}/onvif/media_service</tt:XAddr>"
            "<tt:StreamingCapabilities><tt:RTPMulticast>false</tt:RTPMulticast>"
            "<tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP>"
            "</tt:StreamingCapabilities></tt:Media>"
            f"{ptz}"
            "</tds:Capabilities></tds:GetCapabilitiesResponse>"
        )

    def _op_get_services(self, request: ET.Element) -> str:
        services = [
            (NAMESPACES["tds"], "device_service"),
            (NAMESPACES["trt"], "media_service"),
        ]
        if self.has_ptz:
            services.append((NAMESPACES["tptz"], "ptz_service"))
        items = "".join(
            f"<tds:Service><tds:Namespace>{ns}</tds:Namespace>"
            f"<tds:XAddr>{self.base_url}/onvif/{path}</tds:XAddr>"
            "<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version>"
            "</tds:Service>"
            for ns, path in services
        )
        return f"<tds:GetServicesResponse>{items}</tds:GetServicesResponse>"

    # ----- media service (ver10) ---------------------------------------------------------------

    def _op_get_profiles(self, request: ET.Element) -> str:
        with self._lock:
            profiles = "".join(_profile_xml(p) for p in self.profiles)
        return f"<trt:GetProfilesResponse>{profiles}</trt:GetProfilesResponse>"

    def _op_get_stream_uri(self, request: ET.Element) -> str:
        token = request.findtext(f"{{{NAMESPACES['trt']}}}ProfileToken")
        protocol = request.findtext(
            f"{{{NAMESPACES['trt']}}}StreamSetup/{{{NAMESPACES['tt']}}}Transport/"
            f"{{{NAMESPACES['tt']}}}Protocol"
        )
        if protocol not in (None, "RTSP"):
            raise SoapFaultError(400, "env:Sender", "ter:InvalidArgVal", "Only RTSP")
        with self._lock:
            uri = self._profile(token).stream_uri
        return f"<trt:GetStreamUriResponse>{_media_uri(uri)}</trt:GetStreamUriResponse>"

    def _op_get_snapshot_uri(self, request: ET.Element) -> str:
        token = request.findtext(f"{{{NAMESPACES['trt']}}}ProfileToken")
        self._profile(token)
        uri = f"{self.base_url}/snapshot/{token}.jpg"
        return f"<trt:GetSnapshotUriResponse>{_media_uri(uri)}</trt:GetSnapshotUriResponse>"

    # ----- PTZ service (ver20) -----------------------------------------------------------------

    def _ptz_profile(self, request: ET.Element) -> StreamProfile:
        profile = self._profile(request.findtext(f"{{{NAMESPACES['tptz']}}}ProfileToken"))
        if not profile.ptz:
            raise SoapFaultError(400, "env:Sender", "ter:InvalidArgVal", "No PTZ profile")
        return profile

    def _record(self, call: PtzCall) -> None:
        with self._lock:
            self.ptz_calls.append(call)

    def _op_continuous_move(self, request: ET.Element) -> str:
        profile = self._ptz_profile(request)
        velocity = request.find(f"{{{NAMESPACES['tptz']}}}Velocity")
        if velocity is None:
            raise SoapFaultError(400, "env:Sender", "ter:InvalidArgVal", "No velocity")
        pan_tilt = velocity.find(f"{{{NAMESPACES['tt']}}}PanTilt")
        zoom = velocity.find(f"{{{NAMESPACES['tt']}}}Zoom")
        self._record(
            PtzCall(
                "ContinuousMove",
                profile.token,
                pan=_attr(pan_tilt, "x"),
                tilt=_attr(pan_tilt, "y"),
                zoom=_attr(zoom, "x"),
            )
        )
        return "<tptz:ContinuousMoveResponse/>"

    def _op_stop(self, request: ET.Element) -> str:
        profile = self._ptz_profile(request)
        self._record(PtzCall("Stop", profile.token))
        return "<tptz:StopResponse/>"

    def _op_goto_preset(self, request: ET.Element) -> str:
        profile = self._ptz_profile(request)
        preset = request.findtext(f"{{{NAMESPACES['tptz']}}}PresetToken")
        if preset not in {token for token, _ in self.presets}:
            raise SoapFaultError(400, "env:Sender", "ter:InvalidArgVal", f"No preset {preset}")
        speed = request.find(f"{{{NAMESPACES['tptz']}}}Speed/{{{NAMESPACES['tt']}}}PanTilt")
        self._record(PtzCall("GotoPreset", profile.token, preset=preset, speed=_attr(speed, "x")))
        return "<tptz:GotoPresetResponse/>"

    def _op_get_presets(self, request: ET.Element) -> str:
        self._ptz_profile(request)
        presets = "".join(
            f"<tptz:Preset token={quoteattr(token)}><tt:Name>{escape(name)}</tt:Name></tptz:Preset>"
            for token, name in self.presets
        )
        return f"<tptz:GetPresetsResponse>{presets}</tptz:GetPresetsResponse>"


_SERVICE_OPERATIONS = {
    "device_service": {
        "GetSystemDateAndTime",
        "GetDeviceInformation",
        "GetCapabilities",
        "GetServices",
    },
    "media_service": {"GetProfiles", "GetStreamUri", "GetSnapshotUri"},
    "ptz_service": {"ContinuousMove", "Stop", "GotoPreset", "GetPresets"},
}


def _serves(service: str, operation: str) -> bool:
    return operation in _SERVICE_OPERATIONS.get(service, set())


def _attr(element: ET.Element | None, name: str) -> float | None:
    if element is None or element.get(name) is None:
        return None
    return float(element.get(name, "0"))


def _datetime(when: dt.datetime) -> str:
    return (
        f"<tt:Time><tt:Hour>{when.hour}</tt:Hour><tt:Minute>{when.minute}</tt:Minute>"
        f"<tt:Second>{when.second}</tt:Second></tt:Time>"
        f"<tt:Date><tt:Year>{when.year}</tt:Year><tt:Month>{when.month}</tt:Month>"
        f"<tt:Day>{when.day}</tt:Day></tt:Date>"
    )


def _media_uri(uri: str) -> str:
    return (
        f"<trt:MediaUri><tt:Uri>{escape(uri)}</tt:Uri>"
        "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
        "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot>"
        "<tt:Timeout>PT0S</tt:Timeout></trt:MediaUri>"
    )


def _profile_xml(profile: StreamProfile) -> str:
    token = escape(profile.token)
    ptz = ""
    if profile.ptz:
        ptz = (
            '<tt:PTZConfiguration token="ptz0"><tt:Name>PTZ</tt:Name><tt:UseCount>1</tt:UseCount>'
            "<tt:NodeToken>node0</tt:NodeToken>"
            "<tt:DefaultContinuousPanTiltVelocitySpace>"
            "http://www.onvif.org/ver10/tptz/PanTiltSpaces/VelocityGenericSpace"
            "</tt:DefaultContinuousPanTiltVelocitySpace>"
            "<tt:DefaultContinuousZoomVelocitySpace>"
            "http://www.onvif.org/ver10/tptz/ZoomSpaces/VelocityGenericSpace"
            "</tt:DefaultContinuousZoomVelocitySpace>"
            "<tt:DefaultPTZTimeout>PT5S</tt:DefaultPTZTimeout>"
            "</tt:PTZConfiguration>"
        )
    return (
        f'<trt:Profiles token="{token}" fixed="true"><tt:Name>{escape(profile.name)}</tt:Name>'
        '<tt:VideoSourceConfiguration token="vsc0"><tt:Name>Video source</tt:Name>'
        "<tt:UseCount>2</tt:UseCount><tt:SourceToken>vs0</tt:SourceToken>"
        f'<tt:Bounds x="0" y="0" width="{profile.width}" height="{profile.height}"/>'
        "</tt:VideoSourceConfiguration>"
        f'<tt:VideoEncoderConfiguration token="enc_{token}">'
        f"<tt:Name>enc_{token}</tt:Name><tt:UseCount>1</tt:UseCount>"
        f"<tt:Encoding>{escape(profile.encoding)}</tt:Encoding>"
        f"<tt:Resolution><tt:Width>{profile.width}</tt:Width>"
        f"<tt:Height>{profile.height}</tt:Height></tt:Resolution>"
        "<tt:Quality>5</tt:Quality>"
        f"<tt:RateControl><tt:FrameRateLimit>{profile.fps}</tt:FrameRateLimit>"
        "<tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>4096</tt:BitrateLimit>"
        "</tt:RateControl>"
        "<tt:Multicast><tt:Address><tt:Type>IPv4</tt:Type>"
        "<tt:IPv4Address>0.0.0.0</tt:IPv4Address></tt:Address><tt:Port>0</tt:Port>"
        "<tt:TTL>1</tt:TTL><tt:AutoStart>false</tt:AutoStart></tt:Multicast>"
        "<tt:SessionTimeout>PT60S</tt:SessionTimeout>"
        "</tt:VideoEncoderConfiguration>"
        f"{ptz}"
        "</trt:Profiles>"
    )


def _envelope(body: str) -> str:
    namespaces = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in NAMESPACES.items())
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<env:Envelope {namespaces}><env:Body>{body}</env:Body></env:Envelope>"
    )


def _fault(code: str, subcode: str, reason: str) -> str:
    return _envelope(
        "<env:Fault><env:Code>"
        f"<env:Value>{code}</env:Value>"
        f"<env:Subcode><env:Value>{subcode}</env:Value></env:Subcode>"
        "</env:Code>"
        f'<env:Reason><env:Text xml:lang="en">{escape(reason)}</env:Text></env:Reason>'
        "</env:Fault>"
    )


class _SoapHandler(BaseHTTPRequestHandler):
    owner: OnvifDouble
    # One request per connection: stop() never waits on an idle keep-alive connection.
    protocol_version = "HTTP/1.0"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        status, text = self.owner.handle(self.path, self.rfile.read(length))
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        data = b"\xff\xd8\xff\xd9"  # the smallest JPEG-shaped answer, for snapshot URIs
        self.send_response(200 if self.path.startswith("/snapshot/") else 404)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        """Keep test output quiet."""


class PlainHttpServer:
    """A web server that is not a camera: every request gets an HTML page."""

    PAGE = b"<!DOCTYPE html><html><head><title>Router</title></head><body>Login</body></html>"

    def __init__(self) -> None:
        page = self.PAGE

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="plain-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class DiscoveryResponder:
    """Answers WS-Discovery Probes on 127.0.0.1 (unicast) with a ProbeMatch, like a camera."""

    def __init__(self, xaddr: str, name: str, hardware: str) -> None:
        self.xaddr, self.name, self.hardware = xaddr, name, hardware
        self.endpoint = f"urn:uuid:{uuid.uuid4()}"
        self.probes: list[str] = []  # message ids of the probes answered
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wsd-responder", daemon=True)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self._answer(data)
            if reply is not None:
                self._sock.sendto(reply, source)  # to the probe's source, as the spec says

    def _answer(self, data: bytes) -> bytes | None:
        try:
            envelope = ET.fromstring(data)
        except ET.ParseError:
            return None
        probe = envelope.find(f"{{{SOAP_ENV}}}Body/{{{WSD}}}Probe")
        message_id = envelope.findtext(f"{{{SOAP_ENV}}}Header/{{{WSA}}}MessageID")
        if probe is None or not message_id:
            return None
        types = probe.findtext(f"{{{WSD}}}Types") or ""
        if types and "NetworkVideoTransmitter" not in types:
            return None
        self.probes.append(message_id)
        scopes = " ".join(
            [
                "onvif://www.onvif.org/type/video_encoder",
                "onvif://www.onvif.org/Profile/Streaming",
                # Scopes are space-separated: cameras percent-encode spaces in names.
                f"onvif://www.onvif.org/name/{quote(self.name)}",
                f"onvif://www.onvif.org/hardware/{quote(self.hardware)}",
            ]
        )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}" xmlns:wsa="{WSA}" '
            f'xmlns:d="{WSD}" xmlns:dn="http://www.onvif.org/ver10/network/wsdl">'
            "<SOAP-ENV:Header>"
            f"<wsa:MessageID>urn:uuid:{uuid.uuid4()}</wsa:MessageID>"
            f"<wsa:RelatesTo>{escape(message_id)}</wsa:RelatesTo>"
            "<wsa:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>"
            f"<wsa:Action>{PROBE_MATCHES}</wsa:Action>"
            '<d:AppSequence InstanceId="1" MessageNumber="1"/>'
            "</SOAP-ENV:Header><SOAP-ENV:Body><d:ProbeMatches><d:ProbeMatch>"
            f"<wsa:EndpointReference><wsa:Address>{self.endpoint}</wsa:Address>"
            "</wsa:EndpointReference>"
            "<d:Types>dn:NetworkVideoTransmitter</d:Types>"
            f"<d:Scopes>{escape(scopes)}</d:Scopes>"
            f"<d:XAddrs>{escape(self.xaddr)}</d:XAddrs>"
            "<d:MetadataVersion>1</d:MetadataVersion>"
            "</d:ProbeMatch></d:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"
        ).encode()
