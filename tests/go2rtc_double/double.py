"""go2rtc protocol double: the program. See ``__init__.py`` for what it does and its knobs.

Self-contained on purpose (run as a script by a launcher, like a binary): only the standard
library and packages of the project's venv (aiohttp, aiortc, av, PyYAML, Pillow). The one
exception is H.265 over WebRTC, which borrows the integration's aiortc H.265 support on the
first H.265 viewer (see `h265_webrtc`).

Media, like go2rtc (no transcoding): H.264 or H.265 video plus an optional AAC, G.711 A-law or
µ-law audio track. The RTSP restream describes one m-line per track (`?video` / `?audio`
select tracks) and sends each track that was SET UP on its own channel; WebRTC sends the
video only, and H.265 only to viewers that offer it. Other video codecs end in "codecs not
matched"; other audio codecs are left out.

Config files are expanded like go2rtc's (`expand_env`): `${NAME}` / `${NAME:default}` in the raw
text, from the file's `env:` section (1.9.11+), `$CREDENTIALS_DIRECTORY/NAME`, then the process's
environment — so a test can see what a value written into go2rtc.yaml would leak.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
from dataclasses import dataclass, field
import datetime as dt
from fractions import Fraction
import functools
import ipaddress
import itertools
import json
import os
from pathlib import Path
import re
import secrets
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import WSMsgType, web
import av
import yaml

DEFAULT_VERSION = "1.9.13"
REVISION = "d0ub1e0"
CONTROL_ENV = "GO2RTC_DOUBLE_CONTROL"
CONTROL_POLL_S = 0.05
DIAL_TIMEOUT_S = 5.0  # go2rtc's RTSP/TCP dial timeout
CONSUMER_QUEUE = 600
RTP_CLOCK = 90000
RTP_MAX_PAYLOAD = 1200
KNOWN_SCHEMES = frozenset(
    {"rtsp", "rtsps", "rtspx", "rtmp", "rtmps", "rtmpx", "http", "https", "httpx", "tcp"}
    | {"ffmpeg", "exec", "echo", "expr", "onvif", "webrtc", "webtorrent", "homekit", "hass"}
)
INSECURE_SCHEMES = frozenset({"exec", "echo", "expr"})
LEVELS = {"trace": 0, "debug": 1, "info": 2, "warn": 3, "error": 4, "fatal": 5, "panic": 6}
TAGS = ("TRC", "DBG", "INF", "WRN", "ERR", "FTL", "PNC")
TRC, DBG, INF, WRN, ERR, FTL = range(6)

_ids = itertools.count(1)


def version_tuple(version: str) -> tuple[int, ...]:
    """Return (1, 9, 13) for "1.9.13" or "1.9.14+dev.abc"."""
    numbers = re.findall(r"\d+", version.split("+", 1)[0])
    return tuple(int(n) for n in numbers[:3])


# ----- logging -------------------------------------------------------------------------------


class Log:
    """zerolog ConsoleWriter look-alike (no colour: stdout is never a TTY here)."""

    def __init__(self) -> None:
        self.level = INF
        self.modules: dict[str, int] = {}
        self.output = sys.stdout
        self.lock = threading.Lock()

    def configure(self, cfg: dict[str, Any]) -> None:
        self.level = LEVELS.get(str(cfg.get("level", "info")).lower(), INF)
        for key, value in cfg.items():
            if key not in ("level", "format", "output", "time") and str(value).lower() in LEVELS:
                self.modules[key] = LEVELS[str(value).lower()]
        if cfg.get("output") == "stderr":
            self.output = sys.stderr

    def __call__(self, level: int, module: str | None, msg: str, **fields: Any) -> None:
        threshold = self.modules.get(module, self.level) if module else self.level
        if level < threshold:
            return
        now = dt.datetime.now()
        parts = [f"{now:%H:%M:%S}.{now.microsecond // 1000:03d}", TAGS[level]]
        text = f"[{module}] {msg}".strip() if module else msg
        if text:
            parts.append(text)
        keys = sorted(fields, key=lambda k: (k != "error", k))
        for key in keys:
            value = str(fields[key])
            if not value or any(c in value for c in ' "=\\'):
                value = json.dumps(value)
            parts.append(f"{key}={value}")
        with self.lock:
            self.output.write(" ".join(parts) + "\n")
            self.output.flush()


LOG = Log()


# ----- control knobs -------------------------------------------------------------------------


class Control:
    """Reads the test's control file (missing or half-written file = no knobs)."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None

    def read(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


def crash() -> None:
    sys.stderr.write("panic: runtime error: invalid memory address or nil pointer dereference\n")
    sys.stderr.write("[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x0]\n")
    sys.stderr.flush()
    os._exit(2)


def hang(hard: bool) -> None:
    """Stop answering anything: block the event loop for good (threads keep running)."""
    if hard:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(3600)


# ----- configuration -------------------------------------------------------------------------


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value


# go2rtc's `${NAME}` / `${NAME:default}` template: no brace inside, no escape syntax.
_VAR_RE = re.compile(r"\$\{([^{}]+)\}")
ENV_SECTION_VERSION = (1, 9, 11)


def env_section(text: str) -> dict[str, str]:
    """The file's own `env:` mapping (go2rtc ≥1.9.11 reads it before expanding)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    env = data.get("env") if isinstance(data, dict) else None
    if not isinstance(env, dict):
        return {}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def lookup_var(name: str, section: dict[str, str]) -> str | None:
    """A variable's value like go2rtc looks it up: `env:` section, credential file, environment."""
    if name in section:
        return section[name]
    if (folder := os.environ.get("CREDENTIALS_DIRECTORY")) is not None:
        with contextlib.suppress(OSError):
            return (Path(folder) / name).read_text().strip()
    return os.environ.get(name)


def expand_env(text: str, version: tuple[int, ...] = (1, 9, 13)) -> str:
    """Expand templates in a config file's raw text (before YAML parsing), as go2rtc does.

    A default is only recognised after a non-empty name (`${:x}` is the variable ":x"); an unknown
    variable without default is left as written.
    """
    section = env_section(text) if version >= ENV_SECTION_VERSION else {}

    def _sub(match: re.Match[str]) -> str:
        key = match.group(1)
        default: str | None = None
        if (colon := key.find(":")) > 0:
            key, default = key[:colon], key[colon + 1 :]
        value = lookup_var(key, section)
        if value is not None:
            return value
        return default if default is not None else match.group(0)

    return _VAR_RE.sub(_sub, text)


def load_config(
    values: list[str], version: tuple[int, ...] = (1, 9, 13)
) -> tuple[dict[str, Any], str | None, list[str]]:
    """Merge -c values in order; return (config, first file path, yaml errors)."""
    merged: dict[str, Any] = {}
    config_path: str | None = None
    errors: list[str] = []
    for value in values or ["go2rtc.yaml"]:
        data: Any
        if value.startswith("{"):
            data = yaml.safe_load(value)
        elif "=" in value and "." in value.split("=", 1)[0] and not Path(value).exists():
            key, raw = value.split("=", 1)
            data = yaml.safe_load(raw) if raw else ""
            for part in reversed(key.split(".")):
                data = {part: data}
        else:
            path = Path(value).absolute()
            config_path = config_path or str(path)
            try:
                text = path.read_text()
            except OSError:
                continue  # go2rtc skips a missing file silently
            try:
                data = yaml.safe_load(expand_env(text, version)) or {}
            except yaml.YAMLError as err:
                errors.append(f"yaml: {str(err).splitlines()[0]}")
                continue  # runs with defaults, like go2rtc
        if isinstance(data, dict):
            deep_merge(merged, data)
    return merged, config_path, errors


def split_listen(listen: str, default_host: str = "127.0.0.1") -> tuple[str, int, str]:
    """Return (host, port, transport suffix) of "host:port[/tcp]"; an empty host is loopback."""
    addr, _, suffix = listen.partition("/")
    host, _, port = addr.rpartition(":")
    # The double never binds beyond loopback, whatever the config says.
    return (host or default_host), int(port or 0), suffix


def is_loopback(peer: Any) -> bool:
    if not peer:  # unix socket
        return True
    host = peer[0] if isinstance(peer, tuple) else str(peer)
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ----- H.264 / H.265 / AAC helpers -----------------------------------------------------------


def split_nals(data: bytes) -> list[bytes]:
    """Split an Annex B buffer into NAL units (without start codes)."""
    nals: list[bytes] = []
    starts = [m.end() for m in re.finditer(b"\x00\x00\x01", data)]
    for index, start in enumerate(starts):
        end = starts[index + 1] - 3 if index + 1 < len(starts) else len(data)
        nal = data[start:end].rstrip(b"\x00") if index + 1 < len(starts) else data[start:end]
        if nal:
            nals.append(nal)
    return nals


def packetize(data: bytes) -> list[bytes]:
    """RTP payloads (RFC 6184 single NAL units and FU-A fragments) for one access unit."""
    payloads: list[bytes] = []
    for nal in split_nals(data):
        if len(nal) <= RTP_MAX_PAYLOAD:
            payloads.append(nal)
            continue
        indicator = (nal[0] & 0xE0) | 28
        kind = nal[0] & 0x1F
        body = nal[1:]
        chunks = [
            body[i : i + RTP_MAX_PAYLOAD - 2] for i in range(0, len(body), RTP_MAX_PAYLOAD - 2)
        ]
        for index, chunk in enumerate(chunks):
            header = kind | (0x80 if index == 0 else 0) | (0x40 if index == len(chunks) - 1 else 0)
            payloads.append(bytes([indicator, header]) + chunk)
    return payloads


def sdp_fmtp(extradata: bytes | None) -> str:
    params = ["packetization-mode=1"]
    if extradata:
        nals = split_nals(extradata)
        sps = next((n for n in nals if n[0] & 0x1F == 7), None)
        if sps is not None and len(sps) >= 4:
            params.append(f"profile-level-id={sps[1:4].hex().upper()}")
        if nals:
            params.append(
                "sprop-parameter-sets=" + ",".join(base64.b64encode(n).decode() for n in nals)
            )
    return ";".join(params)


H265_VPS, H265_SPS, H265_PPS = 32, 33, 34
H265_FU = 49  # RFC 7798 §4.4.3: the payload header type of a Fragmentation Unit
H264_SPS = 7


def h265_type(nal: bytes) -> int:
    """The NAL unit type: bits 1-6 of the first header byte (RFC 7798 §1.1.4)."""
    return (nal[0] >> 1) & 0x3F


def hvcc_nals(extradata: bytes) -> list[bytes]:
    """The NAL units of an HEVCDecoderConfigurationRecord (ISO/IEC 14496-15, "hvcC").

    After 22 bytes of profile/format fields comes numOfArrays; each array is one byte (NAL type),
    a 16-bit unit count, then each unit after its 16-bit length.
    """
    nals: list[bytes] = []
    if len(extradata) < 23:
        return nals
    pos = 23
    for _ in range(extradata[22]):
        count = int.from_bytes(extradata[pos + 1 : pos + 3], "big")
        pos += 3
        for _ in range(count):
            size = int.from_bytes(extradata[pos : pos + 2], "big")
            nals.append(extradata[pos + 2 : pos + 2 + size])
            pos += 2 + size
    return [nal for nal in nals if len(nal) >= 2]


def extradata_nals(extradata: bytes | None, codec: str = "h265") -> list[bytes]:
    """Parameter sets from extradata: Annex B (what FFmpeg's RTSP demuxer gives), or for H.265
    also hvcC (MP4 style). H.264's avcC is not read: no source the double dials gives it."""
    if not extradata:
        return []
    if extradata.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
        return split_nals(extradata)
    if codec == "h265" and extradata[0] == 1:  # hvcC's configurationVersion (Annex B: zero)
        return hvcc_nals(extradata)
    return []


def sdp_fmtp_h265(extradata: bytes | None) -> str:
    """RFC 7798 §7.1 sprop-vps/sps/pps: base64 of each parameter set, comma-separated."""
    nals = extradata_nals(extradata)
    params = []
    for name, kind in (("sprop-vps", H265_VPS), ("sprop-sps", H265_SPS), ("sprop-pps", H265_PPS)):
        units = [base64.b64encode(n).decode() for n in nals if h265_type(n) == kind]
        if units:
            params.append(f"{name}={','.join(units)}")
    return ";".join(params)


def packetize_h265(data: bytes) -> list[bytes]:
    """RTP payloads (RFC 7798) for one H.265 access unit: single NAL units or FUs.

    A NAL unit that fits is sent as it is (§4.4.1: its own 2-byte header is the payload
    header). A larger one is split into Fragmentation Units (§4.4.3): each carries a payload
    header that is the NAL header with Type = 49 (F, LayerId and TID kept), then an FU header
    (S = first, E = last, FuType = the NAL's type), then a slice of the NAL's body; the NAL's
    own header is not sent, the receiver rebuilds it from the two. No DONL fields: we never
    signal sprop-max-don-diff, so §4.4 leaves them out. No aggregation packets (optional).
    """
    payloads: list[bytes] = []
    step = RTP_MAX_PAYLOAD - 3  # 2-byte payload header + 1-byte FU header
    for nal in split_nals(data):
        if len(nal) <= RTP_MAX_PAYLOAD:
            payloads.append(nal)
            continue
        header = bytes([(nal[0] & 0x81) | (H265_FU << 1), nal[1]])
        body = nal[2:]
        chunks = [body[i : i + step] for i in range(0, len(body), step)]
        for index, chunk in enumerate(chunks):
            start = 0x80 if index == 0 else 0
            end = 0x40 if index == len(chunks) - 1 else 0
            payloads.append(header + bytes([start | end | h265_type(nal)]) + chunk)
    return payloads


def aac_payload(frame: bytes) -> bytes:
    """RFC 3640 AAC-hbr: one raw AAC frame after its AU header section.

    AU-headers-length (16 bits, in bits: one header = 16), then the AU header: AU-size (13 bits,
    sizelength=13) and AU-Index (3 bits, indexlength=3, 0 for the only AU). An AAC frame is at
    most 768 bytes per channel, far below 2^13, and TCP interleaving has no MTU, so no frame
    is ever fragmented.
    """
    return struct.pack("!HH", 16, len(frame) << 3) + frame


def with_parameter_sets(data: bytes, track: Track) -> bytes:
    """Prepend the extradata's parameter sets to a keyframe that lacks them (WebRTC needs them
    in-band: it has no out-of-band sprop parameters)."""
    nals = split_nals(data)
    if track.codec == "h265":
        if any(h265_type(n) == H265_VPS for n in nals):
            return data
    elif any(n[0] & 0x1F == H264_SPS for n in nals):
        return data
    params = extradata_nals(track.extradata, track.codec)
    return b"".join(b"\x00\x00\x00\x01" + n for n in params) + data


# ----- streams, producers, consumers ---------------------------------------------------------

# PyAV/FFmpeg codec name -> go2rtc's codec_name; anything else is "codecs not matched".
VIDEO_CODECS = {"h264": "h264", "hevc": "h265"}
AUDIO_CODECS = {"aac": "aac", "pcm_alaw": "pcma", "pcm_mulaw": "pcmu"}
# go2rtc's codec_name -> the RTP encoding name (SDP rtpmap, go2rtc's "medias" strings).
RTP_NAMES = {
    "h264": "H264",
    "h265": "H265",
    "aac": "MPEG4-GENERIC",
    "pcma": "PCMA",
    "pcmu": "PCMU",
}
STATIC_PAYLOAD_TYPES = {"pcma": 8, "pcmu": 0}  # RFC 3551; the others use dynamic types
GOP_CACHE_MAX = 1500  # media kept after the newest keyframe (video + audio packets)


@dataclass(slots=True, eq=False)  # compared by identity
class Track:
    """One of a producer's media: what go2rtc calls a receiver (video or audio)."""

    kind: str  # "video" or "audio"
    codec: str  # go2rtc's codec_name: h264, h265, aac, pcma, pcmu
    clock_rate: int  # RTP clock: 90 kHz for video, the sample rate for audio
    channels: int = 0
    extradata: bytes | None = None
    id: int = field(default_factory=lambda: next(_ids))
    bytes_recv: int = 0
    packets: int = 0

    @property
    def rtp_name(self) -> str:
        return RTP_NAMES[self.codec]

    @property
    def payload_type(self) -> int:
        return STATIC_PAYLOAD_TYPES.get(self.codec, 96 if self.kind == "video" else 97)

    def media_string(self, direction: str) -> str:
        """go2rtc's media line for the API: "video, recvonly, H265", "audio, …, PCMA/8000"."""
        name = self.rtp_name
        if self.clock_rate != RTP_CLOCK:
            name += f"/{self.clock_rate}"
        if self.channels > 1:
            name += f"/{self.channels}"
        return f"{self.kind}, {direction}, {name}"

    def codec_json(self) -> dict[str, Any]:
        codec: dict[str, Any] = {"codec_name": self.codec, "codec_type": self.kind}
        if self.kind == "audio":
            codec["sample_rate"] = self.clock_rate
            if self.channels:
                codec["channels"] = self.channels
        return codec

    def sdp(self, track_id: int) -> list[str]:
        """This track's m-section of an RTSP DESCRIBE answer."""
        pt = self.payload_type
        lines = [f"m={self.kind} 0 RTP/AVP {pt}"]
        if self.codec == "h264":
            lines += [f"a=rtpmap:{pt} H264/90000", f"a=fmtp:{pt} {sdp_fmtp(self.extradata)}"]
        elif self.codec == "h265":
            lines.append(f"a=rtpmap:{pt} H265/90000")
            if fmtp := sdp_fmtp_h265(self.extradata):
                lines.append(f"a=fmtp:{pt} {fmtp}")
        elif self.codec == "aac":
            lines.append(f"a=rtpmap:{pt} MPEG4-GENERIC/{self.clock_rate}/{self.channels or 1}")
            config = (self.extradata or b"").hex()
            lines.append(
                f"a=fmtp:{pt} streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;"
                f"indexlength=3;indexdeltalength=3;config={config}"
            )
        else:
            lines.append(f"a=rtpmap:{pt} {self.rtp_name}/{self.clock_rate}")
        return [*lines, f"a=control:trackID={track_id}"]

    def payloads(self, data: bytes) -> list[bytes]:
        """The RTP payloads of one media packet."""
        if self.codec == "h264":
            return packetize(data)
        if self.codec == "h265":
            return packetize_h265(data)
        if self.codec == "aac":
            return [aac_payload(data)]
        return [data]  # G.711: the payload is the samples themselves (RFC 3551)


@dataclass(frozen=True, slots=True)
class Media:
    """One packet of a producer: a video access unit (Annex B) or an audio frame."""

    kind: str  # "video" or "audio"
    codec: str  # go2rtc's codec_name
    data: bytes
    pts: int | None
    time_base: Fraction
    keyframe: bool

    def rtp_time(self, clock: int = RTP_CLOCK) -> int:
        return int((self.pts or 0) * self.time_base * clock)


class Consumer:
    """Anything that reads a stream: an RTSP session, a WebRTC peer, a frame.jpeg request.

    `kinds` are the media it takes (video, audio); the producer's other packets never reach
    its queue.
    """

    def __init__(
        self,
        format_name: str,
        protocol: str,
        remote_addr: str,
        user_agent: str = "",
        kinds: tuple[str, ...] = ("video", "audio"),
    ):
        self.id = next(_ids)
        self.format_name = format_name
        self.protocol = protocol
        self.remote_addr = remote_addr
        self.user_agent = user_agent
        self.kinds = set(kinds)
        self.tracks: list[Track] = []
        self.sender_ids: dict[str, int] = {}
        self.sent: dict[str, list[int]] = {}  # kind -> [bytes, packets]
        self.queue: asyncio.Queue[Media | None] = asyncio.Queue()
        self.bytes_send = 0
        self.packets = 0

    def attach(self, tracks: list[Track]) -> None:
        """Take the producer's tracks of this consumer's kinds (called again to narrow them)."""
        self.tracks = [t for t in tracks if t.kind in self.kinds]
        self.kinds = {t.kind for t in self.tracks}
        for track in self.tracks:
            self.sender_ids.setdefault(track.kind, next(_ids))
            self.sent.setdefault(track.kind, [0, 0])

    def put(self, media: Media | None) -> None:
        if media is not None and media.kind not in self.kinds:
            return
        if media is not None and self.queue.qsize() >= CONSUMER_QUEUE:
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(media)

    def count(self, kind: str, size: int) -> None:
        """Record `size` bytes of one packet sent."""
        self.bytes_send += size
        self.packets += 1
        stats = self.sent.setdefault(kind, [0, 0])
        stats[0] += size
        stats[1] += 1

    def close(self) -> None:
        self.queue.put_nowait(None)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "format_name": self.format_name,
            "protocol": self.protocol,
            "remote_addr": self.remote_addr,
            "user_agent": self.user_agent,
            "medias": [t.media_string("sendonly") for t in self.tracks],
            "senders": [
                {
                    "id": self.sender_ids[t.kind],
                    "codec": t.codec_json(),
                    "parent": t.id,
                    "bytes": self.sent[t.kind][0],
                    "packets": self.sent[t.kind][1],
                }
                for t in self.tracks
            ],
            "bytes_send": self.bytes_send,
        }


class Producer:
    """One connection to a stream's source, read by a PyAV thread, shared by all consumers.

    Like go2rtc it restreams what the camera sends, without transcoding: H.264 or H.265 video
    plus, if the camera has one, an AAC or G.711 audio track.
    """

    def __init__(self, stream: Stream, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.stream = stream
        self.url = url
        self.loop = loop
        self.id = next(_ids)
        self.consumers: list[Consumer] = []
        self.gop: list[Media] = []
        self.tracks: list[Track] = []
        self.connected = False
        self.stopped = False
        self.bytes_recv = 0
        self.packets = 0
        self.remote_addr = ""
        self._stop = threading.Event()
        self._opened: asyncio.Future[bool] | None = None
        self._thread: threading.Thread | None = None

    @property
    def video(self) -> Track | None:
        return next((t for t in self.tracks if t.kind == "video"), None)

    @property
    def audio(self) -> Track | None:
        return next((t for t in self.tracks if t.kind == "audio"), None)

    async def start(self, timeout: float) -> bool:
        """Dial the source (once); return True when it delivers H.264 or H.265 video."""
        if self._opened is None:
            self._opened = self.loop.create_future()
            self._thread = threading.Thread(target=self._run, daemon=True, name="producer")
            self._thread.start()
        try:
            return await asyncio.wait_for(asyncio.shield(self._opened), timeout)
        except TimeoutError:
            return False

    def stop(self) -> None:
        self.stopped = True
        self.connected = False
        self._stop.set()
        for consumer in self.consumers:
            consumer.close()
        self.consumers.clear()

    @staticmethod
    def _tracks(container: Any) -> dict[int, Track]:
        """The source's tracks by stream index: its first video, and its first audio we know.

        Raises "codecs not matched" when the video is neither H.264 nor H.265; an audio codec
        we cannot restream is left out (video only), as a consumer asking for video still gets
        it.
        """
        if not container.streams.video:
            raise ValueError("codecs not matched: no video")
        video = container.streams.video[0]
        codec = VIDEO_CODECS.get(video.codec_context.name)
        if codec is None:
            raise ValueError(f"codecs not matched: video:{video.codec_context.name.upper()}")
        extradata = video.codec_context.extradata
        tracks = {video.index: Track("video", codec, RTP_CLOCK, 0, bytes(extradata or b""))}
        for audio in container.streams.audio:
            context = audio.codec_context
            codec = AUDIO_CODECS.get(context.name)
            if codec is None:
                continue
            # G.711 is 8 kHz whatever FFmpeg says; AAC's rate comes from its config.
            rate = 8000 if codec in STATIC_PAYLOAD_TYPES else int(context.sample_rate or 0)
            channels = int(context.layout.nb_channels or 1) if context.layout else 1
            config = bytes(context.extradata or b"")
            tracks[audio.index] = Track("audio", codec, rate, channels, config)
            break
        return tracks

    def _run(self) -> None:
        error = ""
        opened = False
        try:
            container = av.open(
                self.url,
                options={"rtsp_transport": "tcp", "analyzeduration": "500000"},
                timeout=(DIAL_TIMEOUT_S, DIAL_TIMEOUT_S),
            )
        except Exception as err:
            self._call(self._on_open, False, str(err))
            return
        try:
            tracks = self._tracks(container)
            self.tracks = list(tracks.values())
            parts = urlsplit(self.url)
            self.remote_addr = f"{parts.hostname}:{parts.port or 554}"
            opened = True
            self._call(self._on_open, True, "")
            streams = [s for s in container.streams if s.index in tracks]
            for packet in container.demux(*streams):
                if self._stop.is_set():
                    break
                if packet.size == 0 or self.stream.frozen:
                    continue  # a frozen stream keeps its connection but delivers nothing
                track = tracks[packet.stream.index]
                media = Media(
                    track.kind,
                    track.codec,
                    bytes(packet),
                    packet.pts,
                    packet.time_base or Fraction(1, track.clock_rate),
                    track.kind == "video" and packet.is_keyframe,
                )
                self.bytes_recv += packet.size
                self.packets += 1
                track.bytes_recv += packet.size
                track.packets += 1
                self._call(self._dispatch, media)
        except Exception as err:
            error = str(err) or type(err).__name__
        finally:
            container.close()
            if not opened:  # e.g. codecs not matched: the consumers' dial fails now
                self._call(self._on_open, False, error)
            self._call(self._on_end, error or "EOF")

    def _call(self, func: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(func, *args)

    def _on_open(self, ok: bool, error: str) -> None:
        self.connected = ok and not self.stopped
        if not ok:
            LOG(ERR, "streams", "dial", error=error, url=self.url)
            self.stream.retire(self)
        if self._opened is not None and not self._opened.done():
            self._opened.set_result(ok)

    def _dispatch(self, media: Media) -> None:
        if self.stopped:
            return
        # The cache starts at the newest video keyframe and keeps what follows it, audio
        # included, so a new consumer starts decodable and with its sound.
        if media.kind == "video" and media.keyframe:
            self.gop = [media]
        elif self.gop and len(self.gop) < GOP_CACHE_MAX:
            self.gop.append(media)
        for consumer in self.consumers:
            consumer.put(media)

    def _on_end(self, error: str) -> None:
        if not self.stopped:
            LOG(WRN, "streams", "producer stopped", error=error, url=self.url)
            self.stream.retire(self)

    def to_json(self) -> dict[str, Any]:
        if not self.connected:
            return {"url": self.url}
        return {
            "id": self.id,
            "format_name": "rtsp",
            "protocol": "rtsp+tcp",
            "remote_addr": self.remote_addr,
            "url": self.url,
            "medias": [t.media_string("recvonly") for t in self.tracks],
            "receivers": [
                {
                    "id": t.id,
                    "codec": t.codec_json(),
                    "childs": [
                        c.sender_ids[t.kind]
                        for c in self.consumers
                        if t in c.tracks and t.kind in c.sender_ids
                    ],
                    "bytes": t.bytes_recv,
                    "packets": t.packets,
                }
                for t in self.tracks
            ],
            "bytes_recv": self.bytes_recv,
        }


class Stream:
    """A named stream; replacing it (PUT) makes a new object, old sessions keep the old one."""

    def __init__(self, name: str, sources: list[str], loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self.sources = sources
        self.loop = loop
        self.frozen = False
        self.producer: Producer | None = None
        self.consumers: list[Consumer] = []

    async def add_consumer(self, consumer: Consumer) -> Producer | None:
        """Attach a consumer, dialling the source first if needed; None when it is offline."""
        if not self.sources:
            return None
        if self.producer is None:
            self.producer = Producer(self, self.sources[0], self.loop)
        producer = self.producer
        producer.consumers.append(consumer)
        self.consumers.append(consumer)
        if not await producer.start(DIAL_TIMEOUT_S) or producer.stopped:
            self.remove_consumer(consumer)
            return None
        consumer.attach(producer.tracks)
        if producer.gop:
            # A new consumer starts on the newest keyframe. What reached its queue while it
            # waited for the dial is in the cache too (or older): drop it, or it comes twice.
            while not consumer.queue.empty():
                consumer.queue.get_nowait()
            for media in producer.gop:
                consumer.put(media)
        return producer

    def remove_consumer(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)
        producer = self.producer
        if producer is not None and consumer in producer.consumers:
            producer.consumers.remove(consumer)
            if not producer.consumers:  # go2rtc stops a producer at once when nobody watches
                self.retire(producer)

    def retire(self, producer: Producer) -> None:
        if self.producer is producer:
            self.producer = None
        for consumer in producer.consumers:
            if consumer in self.consumers:
                self.consumers.remove(consumer)
        producer.stop()

    def stop(self) -> None:
        if self.producer is not None:
            self.retire(self.producer)

    def to_json(self) -> dict[str, Any]:
        producers: list[dict[str, Any]] | None
        if not self.sources:
            producers = None
        else:
            producers = [
                self.producer.to_json() if self.producer is not None and i == 0 else {"url": src}
                for i, src in enumerate(self.sources)
            ]
        consumers = [c.to_json() for c in self.consumers] or None
        return {"producers": producers, "consumers": consumers}


# ----- WebRTC (aiortc) -----------------------------------------------------------------------


def _webrtc_imports() -> Any:
    import aiortc
    from aiortc.mediastreams import MediaStreamError
    from aiortc.sdp import candidate_from_sdp

    return aiortc, MediaStreamError, candidate_from_sdp


@functools.cache
def h265_webrtc() -> bool:
    """Teach aiortc H.265 with the integration's `register_h265` (once); False if unavailable.

    Imported on the first H.265 viewer, not at start-up: the import pulls in Home Assistant
    (~1.7 s of CPU), and the tests start many doubles that never see an H.265 camera. The
    double runs as a script, so the repository root is not on sys.path by itself.
    """
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.append(root)
    try:
        from custom_components.lightnvr.engine.rtp_h265 import register_h265
    except ImportError as err:
        LOG(WRN, "webrtc", "no H.265 support", error=str(err))
        return False
    register_h265()
    return True


def make_track(consumer: Consumer, video: Track) -> Any:
    aiortc, media_stream_error, _ = _webrtc_imports()

    class ProducerTrack(aiortc.MediaStreamTrack):  # type: ignore[name-defined]
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self._started = False
            self._first: int | None = None

        async def recv(self) -> av.Packet:
            while True:
                media = await consumer.queue.get()
                if media is None:
                    self.stop()
                    raise media_stream_error
                if media.kind != "video" or (not self._started and not media.keyframe):
                    continue
                self._started = True
                stamp = media.rtp_time()
                self._first = stamp if self._first is None else self._first
                data = with_parameter_sets(media.data, video) if media.keyframe else media.data
                packet = av.Packet(data)
                packet.pts = max(0, stamp - self._first)
                packet.time_base = Fraction(1, RTP_CLOCK)
                consumer.count("video", len(data))
                return packet

    return ProducerTrack()


def offered_video_codecs(offer_sdp: str) -> list[Any]:
    """The codecs of the offer's first video m-line, in the viewer's order (aiortc's parser)."""
    from aiortc.sdp import SessionDescription

    for media in SessionDescription.parse(offer_sdp).media:
        if media.kind == "video":
            return list(media.rtp.codecs)
    return []


def split_candidates(sdp: str) -> tuple[str, list[str]]:
    lines, candidates = [], []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            candidates.append(line[2:])
        elif line != "a=end-of-candidates":
            lines.append(line)
    return "\r\n".join(lines) + "\r\n", candidates


class WebRtcSession:
    """One WebRTC viewer: an aiortc peer fed by the stream's producer."""

    def __init__(self, double: Double, stream: Stream, ice_servers: Any, remote: str) -> None:
        aiortc, _, _ = _webrtc_imports()
        servers = [
            aiortc.RTCIceServer(
                urls=s.get("urls", []), username=s.get("username"), credential=s.get("credential")
            )
            for s in (ice_servers or [])
            if isinstance(s, dict)
        ]
        self.double = double
        self.stream = stream
        self.pc = aiortc.RTCPeerConnection(aiortc.RTCConfiguration(iceServers=servers))
        self.consumer = Consumer("webrtc", "udp", remote, kinds=("video",))  # video only
        self._early: list[str] = []
        self._mid = "0"
        self._remote_set = False
        self.closed = False

    async def answer(self, offer_sdp: str) -> str:
        aiortc, _, _ = _webrtc_imports()
        producer = await self.stream.add_consumer(self.consumer)
        if producer is None:
            raise RuntimeError("streams: dial: source is offline")
        if "m=video " not in offer_sdp:
            raise RuntimeError("streams: codecs not matched")
        video = producer.video
        assert video is not None  # a producer opens only with video
        # Like go2rtc: the source's codec is sent as it is, never transcoded. A viewer that does
        # not offer it gets go2rtc's error, naming the codec it prefers.
        mime = f"video/{video.rtp_name}".lower()
        offered = offered_video_codecs(offer_sdp)
        playable = [
            c.mimeType.split("/", 1)[1].upper()
            for c in offered
            if c.mimeType.lower() not in ("video/rtx", "video/red", "video/ulpfec")
        ]
        mismatch = RuntimeError(
            f"streams: codecs not matched: video:{video.rtp_name} => "
            f"video:{playable[0] if playable else ''}"
        )
        if not any(c.mimeType.lower() == mime for c in offered):
            raise mismatch
        if video.codec == "h265" and not h265_webrtc():
            raise mismatch
        # Apply the offer, whatever order its m-lines have (HA's frontend offers audio first),
        # then send the source's video on the offer's video transceiver, narrowed to its codec
        # (+ RTX) so browsers listing VP8 first still get the source's codec.
        await self.pc.setRemoteDescription(aiortc.RTCSessionDescription(offer_sdp, "offer"))
        transceivers = [t for t in self.pc.getTransceivers() if t.kind == "video"]
        if not transceivers:
            raise ValueError("the offer has no video")
        transceiver = transceivers[0]
        transceiver.sender.replaceTrack(make_track(self.consumer, video))
        transceiver.direction = "sendonly"
        chosen = [c for c in transceiver._codecs if c.mimeType.lower() == mime][:1]
        if not chosen:
            raise mismatch
        if video.codec == "h265":
            # aiortc would answer its own registered fmtp; echo the viewer's for that payload
            # type (profile, tier, level), as an answer describing the offered format should.
            same = [c for c in offered if c.payloadType == chosen[0].payloadType]
            if same:
                chosen[0].parameters = dict(same[0].parameters)
        rtx = [
            c
            for c in transceiver._codecs
            if c.mimeType.lower() == "video/rtx"
            and c.parameters.get("apt") == chosen[0].payloadType
        ]
        transceiver._codecs = chosen + rtx[:1]
        for other in self.pc.getTransceivers():
            if other is not transceiver:
                other.direction = "inactive"
        self._mid = transceiver.mid or "0"
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._remote_set = True
        for candidate in self._early:
            await self.add_candidate(candidate)
        sdp: str = self.pc.localDescription.sdp
        for extra in self.double.extra_candidates():
            sdp = sdp.replace("a=end-of-candidates", f"a={extra}\r\na=end-of-candidates", 1)
        return sdp

    async def add_candidate(self, text: str) -> None:
        if not self._remote_set:
            self._early.append(text)
            return
        _, _, candidate_from_sdp = _webrtc_imports()
        text = text.strip().removeprefix("a=").removeprefix("candidate:")
        if not text:
            return
        with contextlib.suppress(ValueError, IndexError):
            candidate = candidate_from_sdp(text)
            candidate.sdpMid = self._mid
            candidate.sdpMLineIndex = 0
            await self.pc.addIceCandidate(candidate)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.stream.remove_consumer(self.consumer)
        await self.pc.close()


# ----- RTSP server ---------------------------------------------------------------------------


class RtspConnection:
    """One RTSP client connection: DESCRIBE/SETUP/PLAY over TCP-interleaved RTP."""

    def __init__(self, double: Double, reader: Any, writer: Any) -> None:
        self.double = double
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = peer
        self.remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix"
        self.session_id = secrets.token_hex(8)
        self.stream: Stream | None = None
        self.consumer: Consumer | None = None
        self.described: list[Track] = []  # DESCRIBE's m-lines; trackID=N is described[N]
        self.channels: dict[str, int] = {}  # kind -> interleaved RTP channel, set by SETUP
        self.sender: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            while True:
                first = await self.reader.readexactly(1)
                if first == b"$":  # interleaved RTCP from the client: skip it
                    header = await self.reader.readexactly(3)
                    await self.reader.readexactly(int.from_bytes(header[1:3], "big"))
                    continue
                request_line = (first + await self.reader.readuntil(b"\r\n")).decode().strip()
                headers: dict[str, str] = {}
                while (line := (await self.reader.readuntil(b"\r\n")).decode().strip()) != "":
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
                if length := int(headers.get("content-length", "0")):
                    await self.reader.readexactly(length)
                if not await self.handle(request_line, headers):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            await self.cleanup()

    async def cleanup(self) -> None:
        if self.sender is not None:
            self.sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.sender
        if self.stream is not None and self.consumer is not None:
            self.stream.remove_consumer(self.consumer)
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    def reply(
        self,
        code: int,
        reason: str,
        cseq: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        lines = [
            f"RTSP/1.0 {code} {reason}",
            f"CSeq: {cseq}",
            f"Server: go2rtc/{self.double.version}",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def authorized(self, headers: dict[str, str]) -> bool:
        cfg = self.double.rtsp_cfg
        user = cfg.get("username")
        if not user or is_loopback(self.peer):  # loopback clients are never challenged
            return True
        expected = base64.b64encode(f"{user}:{cfg.get('password', '')}".encode()).decode()
        return headers.get("authorization", "") == f"Basic {expected}"

    async def handle(self, request_line: str, headers: dict[str, str]) -> bool:
        try:
            method, url, _ = request_line.split(" ", 2)
        except ValueError:
            return False
        cseq = headers.get("cseq", "0")
        session = {"Session": f"{self.session_id};timeout=60"}
        if not self.authorized(headers):
            self.reply(401, "Unauthorized", cseq, {"WWW-Authenticate": 'Basic realm="go2rtc"'})
            LOG(WRN, "rtsp", "failed authentication", remote_addr=self.remote)
            return False
        if method == "OPTIONS":
            public = "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER"
            self.reply(200, "OK", cseq, {"Public": public})
        elif method == "DESCRIBE":
            return await self.describe(url, cseq)
        elif method == "SETUP":
            transport = headers.get("transport", "")
            if "TCP" not in transport.upper():
                self.reply(461, "Unsupported Transport", cseq)
                return True
            # One SETUP per track: the URL's trackID names the m-line, the client picks its
            # channels (default: two per track in order, as RFC 2326 §10.12 suggests).
            track_match = re.search(r"trackID=(\d+)", url)
            index = int(track_match.group(1)) if track_match else 0
            if index >= len(self.described):
                self.reply(404, "Not Found", cseq)
                await self.writer.drain()
                return True
            match = re.search(r"interleaved=(\d+)", transport)
            channel = int(match.group(1)) if match else 2 * index
            self.channels[self.described[index].kind] = channel
            reply = f"RTP/AVP/TCP;unicast;interleaved={channel}-{channel + 1}"
            self.reply(200, "OK", cseq, {"Transport": reply, **session})
        elif method == "PLAY":
            if self.consumer is None or not self.channels:
                self.reply(455, "Method Not Valid in This State", cseq)
                return True
            # Only the tracks that were set up are sent (a client may take the video only).
            self.consumer.attach([t for t in self.described if t.kind in self.channels])
            self.reply(200, "OK", cseq, {"Range": "npt=0.000-", **session})
            if self.sender is None:
                self.sender = asyncio.create_task(self.send_rtp())
        elif method in ("GET_PARAMETER", "SET_PARAMETER"):
            self.reply(200, "OK", cseq, session)
        elif method == "TEARDOWN":
            self.reply(200, "OK", cseq, session)
            return False
        else:
            self.reply(501, "Not Implemented", cseq)
        await self.writer.drain()
        return True

    async def describe(self, url: str, cseq: str) -> bool:
        parts = urlsplit(url)
        name = parts.path.strip("/")
        stream = self.double.streams.get(name)
        producer = None
        if stream is not None and self.consumer is None:
            consumer = Consumer("rtsp", "rtsp+tcp", self.remote)
            producer = await stream.add_consumer(consumer)
            if producer is not None:
                self.stream, self.consumer = stream, consumer
        elif stream is not None and self.stream is not None and self.stream.producer is not None:
            producer = self.stream.producer
        tracks = select_tracks(producer.tracks, parts.query) if producer is not None else []
        if not tracks:
            # Offline source, or nothing of what the query asks for ("codecs not matched").
            if producer is not None and self.stream is not None and self.consumer is not None:
                self.stream.remove_consumer(self.consumer)
                self.stream, self.consumer = None, None
            LOG(WRN, "rtsp", "not found", stream=name)
            self.reply(404, "Not Found", cseq)
            await self.writer.drain()
            return True
        assert self.consumer is not None
        self.described = tracks
        self.consumer.attach(tracks)
        host = self.writer.get_extra_info("sockname")
        base = f"rtsp://{host[0]}:{host[1]}/{name}/"
        lines = [
            "v=0",
            "o=- 0 0 IN IP4 127.0.0.1",
            f"s=go2rtc/{self.double.version}",
            "c=IN IP4 0.0.0.0",
            "t=0 0",
        ]
        for index, track in enumerate(tracks):
            lines += track.sdp(index)
        sdp = ("\r\n".join(lines) + "\r\n").encode()
        headers = {"Content-Type": "application/sdp", "Content-Base": base}
        self.reply(200, "OK", cseq, headers, sdp)
        await self.writer.drain()
        return True

    async def send_rtp(self) -> None:
        assert self.consumer is not None
        consumer = self.consumer
        senders = {
            t.kind: RtpSender(t, self.channels[t.kind])
            for t in self.described
            if t.kind in self.channels
        }
        # With video, everything starts at a keyframe (a decoder cannot start elsewhere); an
        # audio-only session starts at once.
        started = "video" not in senders
        while (media := await consumer.queue.get()) is not None:
            sender = senders.get(media.kind)
            if sender is None:
                continue
            if not started and not (media.kind == "video" and media.keyframe):
                continue
            started = True
            out = sender.frames(media)
            consumer.count(media.kind, len(out))
            self.writer.write(out)
            await self.writer.drain()
        # The producer went away: end the session so the client reconnects.
        self.writer.close()


def select_tracks(tracks: list[Track], query: str) -> list[Track]:
    """go2rtc's track choice from the RTSP URL's query (contract §5).

    No `video`/`audio` parameter: every track (go2rtc's default_query "video&audio"). Else one
    track per kind named; its value is a codec list (h264,h265,aac,pcma,…), where empty,
    `copy` or `all` mean any codec.
    """
    params = parse_qs(query, keep_blank_values=True)
    if "video" not in params and "audio" not in params:
        return list(tracks)
    chosen = []
    for track in tracks:
        if track.kind not in params:
            continue
        wanted = {c for value in params[track.kind] for c in value.lower().split(",") if c}
        if not wanted or wanted & {"copy", "all"} or track.codec in wanted:
            chosen.append(track)
    return chosen


@dataclass(slots=True)
class RtpSender:
    """One track's RTP in an RTSP session: its channel, sequence numbers and SSRC."""

    track: Track
    channel: int
    seq: int = field(default_factory=lambda: secrets.randbelow(0x10000))
    ssrc: int = field(default_factory=lambda: secrets.randbelow(0xFFFFFFFF))

    def frames(self, media: Media) -> bytes:
        """One media packet as interleaved RTP frames (`$`, channel, 16-bit length, packet)."""
        track = self.track
        # Timestamps in the track's own clock: 90 kHz video, the sample rate for audio.
        stamp = media.rtp_time(track.clock_rate) & 0xFFFFFFFF
        payloads = track.payloads(media.data)
        # The marker ends a video access unit (RFC 6184/7798) or an AAC AU (RFC 3640, one per
        # packet); G.711 sets it only after silence (RFC 3551), which a camera never has.
        marks = track.kind == "video" or track.codec == "aac"
        out = bytearray()
        for index, payload in enumerate(payloads):
            marker = 0x80 if marks and index == len(payloads) - 1 else 0
            header = struct.pack(
                "!BBHII", 0x80, marker | track.payload_type, self.seq, stamp, self.ssrc
            )
            packet = header + payload
            out += b"$" + bytes([self.channel]) + len(packet).to_bytes(2, "big") + packet
            self.seq = (self.seq + 1) & 0xFFFF
        return bytes(out)


# ----- the HTTP API --------------------------------------------------------------------------


class Double:
    """go2rtc's modules, as far as a supervisor can tell."""

    def __init__(self, cfg: dict[str, Any], config_path: str | None, version: str) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.version = version
        self.vt = version_tuple(version)
        self.api_cfg: dict[str, Any] = cfg.get("api") or {}
        self.rtsp_cfg: dict[str, Any] = cfg.get("rtsp") or {}
        self.webrtc_cfg: dict[str, Any] = cfg.get("webrtc") or {}
        self.loop = asyncio.get_running_loop()
        self.streams: dict[str, Stream] = {}
        self.webrtc_enabled = False
        self.sessions: set[WebRtcSession] = set()
        self.base_path = str(self.api_cfg.get("base_path", "")).rstrip("/")
        for name, sources in (cfg.get("streams") or {}).items():
            self.streams[str(name)] = Stream(str(name), self._sources(sources), self.loop)

    @staticmethod
    def _sources(value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, list):
            return [str(v) for v in value]
        return [str(value)]

    def extra_candidates(self) -> list[str]:
        out = []
        for index, item in enumerate(self.webrtc_cfg.get("candidates") or []):
            host, _, port = str(item).rpartition(":")
            if host and port.isdigit() and not host.startswith("stun"):
                out.append(f"candidate:extra{index} 1 udp 2130706431 {host} {port} typ host")
        return out

    # --- HTTP plumbing ---

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    def _unauthorized(self) -> web.Response:
        return web.Response(
            status=401, text="Unauthorized", headers={"WWW-Authenticate": 'Basic realm="go2rtc"'}
        )

    def _auth_ok(self, request: web.Request) -> bool:
        user = self.api_cfg.get("username")
        if not user:
            return True
        local = is_loopback(
            request.transport.get_extra_info("peername") if request.transport else None
        )
        if local and not (self.vt >= (1, 9, 12) and self.api_cfg.get("local_auth")):
            return True
        expected = base64.b64encode(f"{user}:{self.api_cfg.get('password', '')}".encode()).decode()
        return request.headers.get("Authorization", "") == f"Basic {expected}"

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if self.base_path:
            if not path.startswith(self.base_path):
                return web.Response(status=404, text="404 page not found")
            path = path[len(self.base_path) :] or "/"
        allow = self.api_cfg.get("allow_paths")
        if self.vt >= (1, 9, 12) and allow and request.path not in allow:
            return web.Response(status=404, text="404 page not found")  # route never registered
        if not self._auth_ok(request):
            return self._unauthorized()
        routes = {
            "/api": self.api_info,
            "/api/streams": self.api_streams,
            "/api/webrtc": self.api_webrtc,
            "/api/frame.jpeg": self.api_frame,
            "/api/ws": self.api_ws,
            "/api/exit": self.api_exit,
        }
        handler = routes.get(path)
        if handler is None or (path == "/api/webrtc" and not self.webrtc_enabled):
            return web.Response(status=404, text="404 page not found")
        return await handler(request)

    async def api_info(self, request: web.Request) -> web.Response:
        info: dict[str, Any] = {
            "host": request.host,
            "revision": REVISION,
            "rtsp": {
                "listen": self.rtsp_cfg.get("listen", ":8554"),
                "default_query": "video&audio",
            },
            "version": self.version,
        }
        if self.config_path:
            info["config_path"] = self.config_path
        return web.json_response(info)

    async def api_exit(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.Response(status=400)
        code = request.query.get("code", "0")
        if not code.isdigit() or int(code) > 125:
            return web.Response(status=400)
        os._exit(int(code))

    def patch_config(self, name: str, sources: list[str] | None) -> str | None:
        """Write streams.<name> into the first config file, like go2rtc's PatchConfig."""
        if not self.config_path:
            return "config file disabled"
        path = Path(self.config_path)
        try:
            data = yaml.safe_load(path.read_text()) if path.exists() else {}
        except (OSError, yaml.YAMLError) as err:
            return str(err)
        data = data if isinstance(data, dict) else {}
        streams: dict[str, Any] = data["streams"] if isinstance(data.get("streams"), dict) else {}
        if sources is None:
            streams.pop(name, None)
        else:
            streams[name] = sources[0] if len(sources) == 1 else sources
        data["streams"] = streams
        try:
            path.write_text(yaml.safe_dump(data, sort_keys=False))
        except OSError as err:
            return str(err)
        return None

    def source_error(self, src: str) -> str | None:
        if any(c.isspace() for c in src):
            return "streams: source with spaces"
        scheme = src.split(":", 1)[0].lower()
        if self.vt >= (1, 9, 12) and scheme not in KNOWN_SCHEMES:
            return f"streams: unsupported scheme: {scheme}"
        if self.vt >= (1, 9, 12) and scheme in INSECURE_SCHEMES:
            return "streams: source from insecure producer"
        return None

    async def api_streams(self, request: web.Request) -> web.Response:
        query = request.query
        method = request.method
        srcs = query.getall("src", [])
        if method == "PUT":
            if not srcs:
                return web.Response(status=400)
            for src in srcs:
                if (error := self.source_error(src)) is not None:
                    return web.Response(status=400, text=error if self.vt >= (1, 9, 12) else "")
            name = query.get("name") or srcs[0]
            old = self.streams.get(name)
            self.streams[name] = Stream(name, list(srcs), self.loop)
            if old is not None and not old.consumers:
                old.stop()
            LOG(DBG, "streams", "put", name=name)
            if (error := self.patch_config(name, list(srcs))) is not None:
                return web.Response(status=400, text=error)
            return web.Response(status=200)
        if method == "PATCH":
            name = query.get("name", "")
            if not name or not srcs or self.source_error(srcs[0]):
                return web.Response(status=400)
            self.streams[name] = Stream(name, list(srcs), self.loop)
            return web.Response(status=200)
        if method == "DELETE":
            name = srcs[0] if srcs else ""
            old = self.streams.pop(name, None)
            if old is not None and not old.consumers:
                old.stop()
            if (error := self.patch_config(name, None)) is not None:
                return web.Response(status=400, text=error)
            return web.Response(status=200)
        if method == "POST":
            if not query.get("dst"):
                return web.Response(status=400)
            return web.Response(status=404)
        if srcs:
            stream = self.streams.get(srcs[0])
            if stream is None:
                return web.Response(status=404)
            return web.Response(
                text=json.dumps(stream.to_json(), indent=2), content_type="application/json"
            )
        return web.json_response({name: s.to_json() for name, s in self.streams.items()})

    async def api_webrtc(self, request: web.Request) -> web.Response:
        if request.method == "OPTIONS":
            return web.Response(status=204)
        if request.method != "POST":
            return web.Response(status=405)
        name = request.query.get("src", "")
        if not name:
            return web.Response(status=400)
        stream = self.streams.get(name)
        if stream is None:
            return web.Response(status=404, text="stream not found")
        ctype = request.content_type
        body = await request.read()
        if ctype == "application/json":
            try:
                offer = json.loads(body)["sdp"]
            except (ValueError, KeyError, TypeError):
                return web.Response(status=400)
        else:
            offer = body.decode()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        session = WebRtcSession(self, stream, self.webrtc_cfg.get("ice_servers"), str(peer))
        self.sessions.add(session)
        try:
            answer = await session.answer(offer)
        except Exception as err:
            await session.close()
            self.sessions.discard(session)
            return web.Response(status=500, text=str(err))
        if ctype == "application/json":
            return web.json_response({"type": "answer", "sdp": answer})
        status = 201 if ctype == "application/sdp" else 200
        return web.Response(status=status, text=answer, content_type="application/sdp")

    async def api_frame(self, request: web.Request) -> web.Response:
        name = request.query.get("src", "")
        stream = self.streams.get(name)
        if stream is None:
            return web.Response(status=404, text="stream not found")
        consumer = Consumer("mjpeg", "http", request.remote or "", kinds=("video",))
        producer = await stream.add_consumer(consumer)
        empty = web.Response(status=200, body=b"", content_type="image/jpeg")
        if producer is None:
            LOG(ERR, "mjpeg", "", error="streams: source is offline")
            return empty  # the contract's quirk: offline source → 200 with no body
        try:
            keyframe = None
            async with asyncio.timeout(10):
                while keyframe is None:
                    media = await consumer.queue.get()
                    if media is None:
                        break
                    keyframe = media if media.keyframe else None
        except TimeoutError:
            keyframe = None
        finally:
            stream.remove_consumer(consumer)
        if keyframe is None:
            LOG(ERR, "mjpeg", "", error="no keyframe")
            return empty
        width = int(request.query.get("width") or request.query.get("w") or 0)
        height = int(request.query.get("height") or request.query.get("h") or 0)
        try:
            jpeg = await self.loop.run_in_executor(
                None, to_jpeg, keyframe, producer.video, width, height
            )
        except Exception as err:
            return web.Response(status=500, text=f"ffmpeg: {err}")
        return web.Response(body=jpeg, content_type="image/jpeg")

    async def api_ws(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin and self.api_cfg.get("origin") != "*" and urlsplit(origin).netloc != request.host:
            LOG(ERR, "api.ws", "origin not allowed", origin=origin)
            return web.Response(status=403)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        name = request.query.get("src", "")
        session: WebRtcSession | None = None
        early: list[str] = []
        peer = request.transport.get_extra_info("peername") if request.transport else None
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(message.data)
                    kind, value = data["type"], data.get("value")
                except (ValueError, KeyError, TypeError):
                    break  # go2rtc closes the socket on JSON it cannot parse
                if kind in ("webrtc", "webrtc/offer") and self.webrtc_enabled:
                    stream = self.streams.get(name)
                    if stream is None:
                        await ws.send_json({"type": "error", "value": "webrtc: stream not found"})
                        continue
                    legacy = kind == "webrtc/offer"
                    offer = value if legacy else (value or {}).get("sdp", "")
                    ice = self.webrtc_cfg.get("ice_servers")
                    if not legacy and isinstance(value, dict) and "ice_servers" in value:
                        ice = value["ice_servers"]
                    session = WebRtcSession(self, stream, ice, str(peer))
                    self.sessions.add(session)
                    for candidate in early:
                        await session.add_candidate(candidate)
                    try:
                        answer = await session.answer(offer)
                    except Exception as err:
                        await ws.send_json({"type": "error", "value": f"webrtc: {err}"})
                        continue
                    sdp, candidates = split_candidates(answer)
                    if legacy:
                        await ws.send_json({"type": "webrtc/answer", "value": answer})
                        continue
                    await ws.send_json({"type": "webrtc", "value": {"type": "answer", "sdp": sdp}})
                    for candidate in candidates + self.extra_candidates():
                        await ws.send_json({"type": "webrtc/candidate", "value": candidate})
                elif kind == "webrtc/candidate" and isinstance(value, str):
                    if session is None:
                        early.append(value)
                    else:
                        await session.add_candidate(value)
        finally:
            if session is not None:
                self.sessions.discard(session)
                await session.close()
        return ws


def to_jpeg(keyframe: Media, video: Track | None, width: int, height: int) -> bytes:
    """Decode one keyframe to JPEG (go2rtc runs ffmpeg for this)."""
    import io

    decoder: Any = av.CodecContext.create("hevc" if keyframe.codec == "h265" else "h264", "r")
    if video is not None and video.extradata:
        decoder.extradata = video.extradata
    frames = list(decoder.decode(av.Packet(keyframe.data)))
    frames += decoder.decode(None)
    if not frames:
        raise ValueError("no picture")
    frame = frames[0]
    if width and not height:
        height = int(frame.height * width / frame.width) // 2 * 2
    elif height and not width:
        width = int(frame.width * height / frame.height) // 2 * 2
    image = frame.to_image(width=width or None, height=height or None)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


# ----- listeners -----------------------------------------------------------------------------


def addr_error(kind: str, host: str, port: int, err: OSError) -> str:
    reason = "address already in use" if err.errno == 98 else (err.strerror or str(err))
    return f"listen {kind} {host}:{port}: bind: {reason}"


async def start_api(double: Double, refuse: set[str]) -> list[Any]:
    runners: list[Any] = []
    runner = web.AppRunner(double.app(), access_log=None, handle_signals=False)
    await runner.setup()
    runners.append(runner)
    listen = str(double.api_cfg.get("listen", ":1984"))
    if listen:
        host, port, _ = split_listen(listen)
        if "api" in refuse:
            err = OSError(98, "address already in use")
            LOG(ERR, "api", "listen", error=addr_error("tcp", host, port, err))
        else:
            try:
                site = web.TCPSite(runner, host, port, reuse_address=True)
                await site.start()
                LOG(INF, "api", "listen", addr=f"{host}:{port}")
            except OSError as err:
                LOG(ERR, "api", "listen", error=addr_error("tcp", host, port, err))
    unix = str(double.api_cfg.get("unix_listen", ""))
    if unix:
        if "api" in refuse:
            LOG(ERR, "api", "listen", error=f"listen unix {unix}: bind: address already in use")
        else:
            try:
                await web.UnixSite(runner, unix).start()
                LOG(INF, "api", "listen", addr=unix)
            except OSError as err:
                LOG(ERR, "api", "listen", error=f"listen unix {unix}: bind: {err.strerror}")
    return runners


async def start_rtsp(double: Double, refuse: set[str]) -> Any:
    listen = str(double.rtsp_cfg.get("listen", ":8554"))
    if not listen:
        return None
    host, port, _ = split_listen(listen)
    if "rtsp" in refuse:
        err = OSError(98, "address already in use")
        LOG(ERR, "rtsp", "listen", error=addr_error("tcp", host, port, err))
        return None

    async def _client(reader: Any, writer: Any) -> None:
        await RtspConnection(double, reader, writer).run()

    try:
        server = await asyncio.start_server(_client, host, port, reuse_address=True)
    except OSError as err:
        LOG(ERR, "rtsp", "listen", error=addr_error("tcp", host, port, err))
        return None
    LOG(INF, "rtsp", "listen", addr=f"{host}:{port}")
    return server


def start_webrtc(double: Double, refuse: set[str]) -> socket.socket | None:
    """Hold the WebRTC UDP port like go2rtc's mux (aiortc itself uses ephemeral ports)."""
    listen = str(double.webrtc_cfg.get("listen", ":8555"))
    if not listen:
        double.webrtc_enabled = True
        return None
    host, port, suffix = split_listen(listen)
    if host in ("127.0.0.1", "localhost"):
        import aioice.ice

        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    caller = "github.com/AlexxIT/go2rtc/internal/webrtc/webrtc.go:72"
    if "webrtc" in refuse:
        err = OSError(98, "address already in use")
        LOG(ERR, None, f"{caller} >", error=addr_error("udp", host, port, err))
        return None
    sock = None
    if suffix != "tcp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError as err:
            sock.close()
            LOG(ERR, None, f"{caller} >", error=addr_error("udp", host, port, err))
            return None
    double.webrtc_enabled = True
    LOG(INF, "webrtc", "listen", addr=f"{host}:{port}")
    return sock


# ----- main ----------------------------------------------------------------------------------


async def control_loop(double: Double, control: Control, started: float) -> None:
    pid = os.getpid()
    applied: set[str] = set()
    while True:
        knobs = control.read()
        if pid in knobs.get("crash", []):
            crash()
        if pid in knobs.get("hang", []):
            hang(hard=False)
        if pid in knobs.get("hang_hard", []):
            hang(hard=True)
        crash_after = knobs.get("crash_after")
        if isinstance(crash_after, int | float) and time.monotonic() - started >= crash_after:
            crash()
        for name in (knobs.get("freeze") or {}).get(str(pid), []):
            stream = double.streams.get(name)
            if name not in applied and stream is not None:
                stream.frozen = True
                applied.add(name)
        await asyncio.sleep(CONTROL_POLL_S)


async def serve(args: argparse.Namespace, control: Control, version: str) -> None:
    cfg, config_path, yaml_errors = load_config(args.config, version_tuple(version))
    LOG.configure(cfg.get("log") or {})
    for error in yaml_errors:
        LOG(WRN, None, "", error=error)
    LOG(INF, None, "go2rtc", platform="linux/amd64", revision=REVISION, version=version)
    if config_path:
        LOG(INF, None, "config", path=config_path)
    knobs = control.read()
    started = time.monotonic()
    if delay := knobs.get("startup_delay"):
        await asyncio.sleep(float(delay))
    refuse = set(knobs.get("refuse") or [])
    double = Double(cfg, config_path, version)
    runners = await start_api(double, refuse)
    rtsp = await start_rtsp(double, refuse)
    udp = start_webrtc(double, refuse)
    try:
        await control_loop(double, control, started)
    finally:
        for runner in runners:
            await runner.cleanup()
        if rtsp is not None:
            rtsp.close()
        if udp is not None:
            udp.close()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"flag provided but not defined: {message}\n")
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(prog="go2rtc", add_help=True)
    parser.add_argument("-c", "--config", action="append", default=[])
    parser.add_argument("-v", "--version", action="store_true")
    parser.add_argument("-d", "--daemon", action="store_true")
    args = parser.parse_args(argv)
    control = Control(os.environ.get(CONTROL_ENV))
    version = str(control.read().get("version") or DEFAULT_VERSION)
    if args.version:
        sys.stdout.write(f"go2rtc version {version} ({REVISION}) linux/amd64\n")
        return

    def _terminate(signum: int, frame: Any) -> None:
        sys.stderr.write("exit with signal: terminated\n")
        sys.stderr.flush()
        os._exit(0)  # go2rtc exits at once, without draining sessions

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args, control, version))


if __name__ == "__main__":
    main()
