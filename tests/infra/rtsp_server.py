#!/usr/bin/python3
"""A looping RTSP "camera" for tests, built on GStreamer's gst-rtsp-server.

Run it with Debian's ``/usr/bin/python3`` (it has ``gi``; the project's venv does not)::

    /usr/bin/python3 tests/infra/rtsp_server.py --port 8554 --mount /cam=/tmp/clip.mp4 \
        [--mount /other=/tmp/other.mp4] [--auth-port 8555 --user U --password P]

Each mount serves a file's streams **without re-encoding** and loops it forever, with RTP
timestamps that keep rising across loops (audio and video together) and an open-ended SDP range
(``a=range:npt=0-``), so clients see it as a live camera. A file (MP4/MOV, or MKV) holds H.264
or H.265 video and optionally one audio track: AAC (sent as RFC 3640 ``mpeg4-generic``), G.711
A-law (PCMA) or µ-law (PCMU); the codecs are detected when the server starts, and a file it
cannot serve makes it exit with status 3. ``--port 0`` / ``--auth-port 0`` bind free ports; the
bound ports are reported on stdout. Only 127.0.0.1 is bound (the HA test harness allows nothing
else).

Machine-readable lines on stdout (one event per line, flushed immediately)::

    MOUNT path=/cam video=h264|h265 audio=aac|pcma|pcmu|none   what a mount serves
    READY port=N                 listening (plain server)
    READY auth_port=N            listening (server requiring basic auth; only with --auth-port)
    CLIENT-CONNECTED id=I server=plain|auth ip=A
    CLIENT-CLOSED id=I server=plain|auth
    MEDIA-CONSTRUCTED path=/cam server=plain|auth   a new pipeline (shared by later clients)
    PLAY id=I path=/cam server=plain|auth            a client's PLAY request succeeded
    LOOP path=/cam server=plain|auth n=K            the file restarted for the K-th time
    STOPPED                                          clean exit after SIGTERM/SIGINT

SIGTERM or SIGINT stops the main loop and exits with status 0.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
import signal
import sys
import threading
import time
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

# Before any subclass is defined: registering LoopingMedia inspects GstRTSPMedia's signals,
# whose GstMessage parameter type only exists once GStreamer is initialised.
Gst.init(None)

# Name of the role the authenticated user gets; must be a valid GstStructure name, which is
# why the (arbitrary) user name is not used for it.
_ROLE = "tester"

# Used only if the stream's caps carry no frame rate (our generated clips always do).
_FALLBACK_FRAME_NS = Gst.SECOND // 25

# Queries that would reveal the file's length or seekability. Dropping them on the payloader's
# src pad makes rtsp-media see an unseekable stream of unknown duration, like a camera (clients
# then never try to seek, and nothing tells them where the "end" is). Together with the open
# ended SEGMENT events (see _StreamLoop) the SDP says "a=range:npt=0-"; with the
# real duration there (npt=0-2), clients may stop reading at the end of the file.
_HIDDEN_QUERIES = (Gst.QueryType.DURATION, Gst.QueryType.SEEKING, Gst.QueryType.SEGMENT)


def emit(line: str) -> None:
    """Print one machine-readable event line; flush so the controller sees it at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class LoopingMedia(GstRtspServer.RTSPMedia):
    """An RTSPMedia that loops its file seamlessly with segment seeks.

    A flushing SEGMENT seek starts the first loop; each SEGMENT_DONE then triggers a
    non-flushing SEGMENT seek back to 0, so the running time (and thus the RTP timestamps)
    continue without a flush. qtdemux, though, starts each repeat at the running time of the
    last timestamp it pushed, not at the end of the file: for a video-only file that is the
    last frame's start, so the loop's first keyframe would repeat the previous timestamp (and
    consumers that require rising timestamps drop it); with audio it is whichever stream's last
    packet started latest, so the streams would jump by different amounts. Each stream's
    SEGMENT for loop k therefore gets the base k × file duration: every stream continues
    exactly one file length after its own start of the previous loop, and audio and video stay
    in sync.

    The base is rewritten in each stream's SEGMENT event as it reaches the payloader (see
    ``_StreamLoop``), not when SEGMENT_DONE is posted: with an audio track, queues sit between
    the demuxer and the payloaders, and buffers of the ending loop may still be queued then.

    The factory creates instances from C (``set_media_gtype``), so state is created lazily in
    ``_setup`` rather than relying on ``__init__`` being called with arguments.
    """

    def _setup(self) -> None:
        if getattr(self, "_ready", False):
            return
        self._ready = True
        self._loops = 0
        self._segment_started = False
        self._label = "?"
        self._period_ns: int | None = None
        bin_ = self.get_element()
        self._pays: list[Gst.Element] = []
        while bin_ is not None:
            pay = bin_.get_by_name(f"pay{len(self._pays)}")
            if pay is None:
                break
            self._pays.append(pay)
        # pay0 is the video stream: it sets the loop offset and receives the seeks.
        self._pay: Gst.Element | None = self._pays[0] if self._pays else None
        for pay in self._pays:
            pay.get_static_pad("src").add_probe(
                Gst.PadProbeType.QUERY_UPSTREAM, _hide_duration_probe
            )
            upstream = pay.get_static_pad("sink").get_peer()
            if upstream is not None:
                _StreamLoop(self).attach(upstream)

    def set_label(self, label: str) -> None:
        """Remember "path=… server=…" for the LOOP lines."""
        self._setup()
        self._label = label

    def loop_base(self, segment: Gst.Segment, loop: int) -> int:
        """The running time at which loop ``loop`` (0 = first) of the file starts.

        Loop k starts at k times the file's duration, taken from the demuxer's SEGMENT (the
        same for all streams of the file). Called from the streaming threads.
        """
        if loop == 0:
            return segment.base
        period = self._period(segment)
        if period is not None:
            return loop * period
        # Unknown duration: keep the demuxer's base, shifted one frame more per loop.
        return segment.base + loop * self._frame_duration()

    def _period(self, segment: Gst.Segment) -> int | None:
        if self._period_ns is None:
            if segment.duration != Gst.CLOCK_TIME_NONE and segment.duration > 0:
                self._period_ns = segment.duration
            elif segment.stop != Gst.CLOCK_TIME_NONE and segment.stop > segment.start:
                self._period_ns = segment.stop - segment.start
        return self._period_ns

    def _frame_duration(self) -> int:
        """One video frame's duration in ns, from the negotiated caps at pay0's input."""
        if self._pay is not None:
            caps = self._pay.get_static_pad("sink").get_current_caps()
            if caps is not None and caps.get_size() > 0:
                ok, num, den = caps.get_structure(0).get_fraction("framerate")
                if ok and num > 0:
                    return Gst.util_uint64_scale(Gst.SECOND, den, num)
        return _FALLBACK_FRAME_NS

    def _segment_seek(self, flush: bool) -> bool:
        """Seek the demuxer to 0 as a SEGMENT seek, so it posts SEGMENT_DONE instead of EOS.

        The seek is pushed upstream from the video payloader's sink pad: it reaches the
        demuxer directly, which seeks all its streams. Seeking the pipeline would also hit the
        RTCP sinks of rtpbin, which have nothing to do with the file.
        """
        if self._pay is None:
            return False
        flags = Gst.SeekFlags.SEGMENT
        if flush:
            flags |= Gst.SeekFlags.FLUSH
        event = Gst.Event.new_seek(
            1.0, Gst.Format.TIME, flags, Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1
        )
        return self._pay.get_static_pad("sink").push_event(event)

    def do_handle_message(self, message: Gst.Message) -> bool:
        self._setup()
        if message.type == Gst.MessageType.SEGMENT_DONE:
            self._loops += 1
            self._segment_seek(flush=False)
            emit(f"LOOP {self._label} n={self._loops}")
            return True
        if not self._segment_started and _is_stream_blocking(message):
            # rtsp-stream blocks each stream on its first RTP packet and reports it with this
            # message; once all streams block, the media counts as prepared and the SDP is
            # answered. This is the moment to start the first loop: the demuxer has produced
            # data (so it can seek), and nothing has been sent yet. The seek must flush (a
            # non-flushing seek would wait for the blocked streaming thread); the flush releases
            # the block, and the streams block again on the first packets from the new segment
            # and post this message again, which rtsp-media then handles normally. Seeking
            # later (e.g. on ASYNC_DONE, which comes only after PLAY) re-sends the first
            # keyframe with a timestamp that goes backwards.
            self._segment_started = self._segment_seek(flush=True)
            if self._segment_started:
                return True
        return GstRtspServer.RTSPMedia.do_handle_message(self, message)


class _StreamLoop:
    """Rewrites one stream's SEGMENT events just before its payloader.

    - Every SEGMENT loses its stop and duration. Before a client has SETUP a transport,
      rtsp-stream takes the stream's end from the sticky SEGMENT event
      (``gst_rtsp_stream_query_stop``), not from a query, so the SDP would otherwise still say
      ``a=range:npt=0-<file length>``.
    - Loop k (k = 0 from the flushing seek that starts the first loop) starts with the k-th
      seek's SEGMENT after the last flush (segments of one seek share its seqnum): its base
      becomes k times the file's duration (see LoopingMedia), so every stream's timestamps
      continue exactly where the file restarts. Any further SEGMENT of the same loop is
      shifted by the same amount.

    PyGObject cannot swap the event inside the probe info, so the probe pushes a rewritten copy
    itself (re-entering the probe, which lets it pass) and drops the original.
    """

    def __init__(self, media: LoopingMedia) -> None:
        self._media = media
        self._loop = -1
        self._seqnum: int | None = None
        self._shift = 0
        self._pushing = False

    def attach(self, pad: Gst.Pad) -> None:
        # Flush events reach a probe only with EVENT_FLUSH in its mask.
        pad.add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM | Gst.PadProbeType.EVENT_FLUSH, self._probe)

    def _probe(self, pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        event = info.get_event()
        if event is None or self._pushing:
            return Gst.PadProbeReturn.OK
        if event.type == Gst.EventType.FLUSH_STOP:
            self._loop = -1
            self._seqnum = None
            return Gst.PadProbeReturn.OK
        if event.type != Gst.EventType.SEGMENT:
            return Gst.PadProbeReturn.OK
        segment = event.parse_segment().copy()
        if event.get_seqnum() != self._seqnum:
            self._seqnum = event.get_seqnum()
            self._loop += 1
            self._shift = self._media.loop_base(segment, self._loop) - segment.base
        segment.base += self._shift
        segment.stop = Gst.CLOCK_TIME_NONE
        segment.duration = Gst.CLOCK_TIME_NONE
        replacement = Gst.Event.new_segment(segment)
        replacement.set_seqnum(event.get_seqnum())
        # The streaming thread pushes serialized events, so the re-entrant probe call for the
        # replacement happens inside push_event, on this thread.
        self._pushing = True
        try:
            pad.push_event(replacement)
        finally:
            self._pushing = False
        return Gst.PadProbeReturn.DROP


def _is_stream_blocking(message: Gst.Message) -> bool:
    if message.type != Gst.MessageType.ELEMENT:
        return False
    structure = message.get_structure()
    return structure is not None and structure.get_name() == "GstRTSPStreamBlocking"


def _hide_duration_probe(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
    query = info.get_query()
    if query is not None and query.type in _HIDDEN_QUERIES:
        # DROP makes the query fail, i.e. "unknown duration, not seekable".
        return Gst.PadProbeReturn.DROP
    return Gst.PadProbeReturn.OK


@dataclass(frozen=True)
class FileStreams:
    """What a media file holds: its container's demuxer and the codecs it serves."""

    demuxer: str  # qtdemux or matroskademux
    video: str  # h264 or h265
    audio: str | None  # aac, pcma, pcmu or None


# demuxer caps name -> (codec, parser (None: none needed), payloader with properties, payload type)
_VIDEO_CODECS = {
    "video/x-h264": ("h264", "h264parse config-interval=-1", "rtph264pay config-interval=-1", 96),
    "video/x-h265": ("h265", "h265parse config-interval=-1", "rtph265pay config-interval=-1", 96),
}
# AAC goes out as RFC 3640 "mpeg4-generic" (AAC-hbr) like most cameras; its SDP carries the
# AudioSpecificConfig (config=...), which FFmpeg turns into the stream's extradata. G.711 uses
# the static payload types 8 (PCMA) and 0 (PCMU) with 20 ms packets, as cameras and phones do.
_G711_PTIME = "min-ptime=20000000 max-ptime=20000000"
_AUDIO_CODECS = {
    "audio/mpeg": ("aac", "aacparse", "rtpmp4gpay", 97),
    "audio/x-alaw": ("pcma", None, f"rtppcmapay {_G711_PTIME}", 8),
    "audio/x-mulaw": ("pcmu", None, f"rtppcmupay {_G711_PTIME}", 0),
}


def discover(path: str) -> FileStreams:
    """Find the file's first video and audio stream and check they can be served as-is.

    Only the demuxer runs (until it has added its pads): GstPbutils' Discoverer would plug
    decoders too, which costs ~50 MB of memory for the rest of the server's life.
    """
    demuxer = "matroskademux" if path.lower().endswith((".mkv", ".webm")) else "qtdemux"
    pipeline = Gst.Pipeline.new("probe")
    source = Gst.ElementFactory.make("filesrc")
    demux = Gst.ElementFactory.make(demuxer)
    source.set_property("location", path)
    pipeline.add(source)
    pipeline.add(demux)
    source.link(demux)
    found: list[Gst.Caps] = []
    done = threading.Event()

    def on_pad_added(_demux: Gst.Element, pad: Gst.Pad) -> None:
        caps = pad.get_current_caps() or pad.query_caps(None)
        found.append(caps)

    demux.connect("pad-added", on_pad_added)
    demux.connect("no-more-pads", lambda _demux: done.set())
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PAUSED)
    try:
        deadline = time.monotonic() + 10
        # The pads come from the demuxer's streaming thread; an unreadable file posts ERROR.
        while not done.wait(0.02) and time.monotonic() < deadline:
            message = bus.pop_filtered(Gst.MessageType.ERROR)
            if message is not None:
                err, _debug = message.parse_error()
                raise ValueError(f"{path}: {err.message}")
    finally:
        pipeline.set_state(Gst.State.NULL)
    if not done.is_set():
        raise ValueError(f"{path}: the demuxer found no streams")
    video: str | None = None
    audio: str | None = None
    for caps in found:
        if caps is None or caps.get_size() == 0:
            continue
        structure = caps.get_structure(0)
        name = structure.get_name()
        if name.startswith("video/") and video is None:
            if name not in _VIDEO_CODECS:
                raise ValueError(f"{path}: unsupported video {caps.to_string()}")
            video = _VIDEO_CODECS[name][0]
        elif name.startswith("audio/") and audio is None:
            ok, version = structure.get_int("mpegversion")
            if name not in _AUDIO_CODECS or (name == "audio/mpeg" and (not ok or version != 4)):
                raise ValueError(f"{path}: unsupported audio {caps.to_string()}")
            audio = _AUDIO_CODECS[name][0]
    if video is None:
        raise ValueError(f"{path}: no video stream")
    return FileStreams(demuxer, video, audio)


def _launch_line(path: str, streams: FileStreams | None = None) -> str:
    """Pipeline that sends the file's video (and audio, if any) untouched.

    ``config-interval=-1`` on the video parser and payloader puts the parameter sets (SPS/PPS,
    and VPS for H.265) in-band before every keyframe, as cameras do, so a client joining
    mid-stream can decode from the next keyframe. With audio, each stream gets a queue: the
    demuxer pushes both from one thread, and rtsp-media needs a first packet on every stream
    before it answers DESCRIBE.
    """
    streams = streams or FileStreams("qtdemux", "h264", None)
    location = path.replace("\\", "\\\\").replace('"', '\\"')
    video = next(v for v in _VIDEO_CODECS.values() if v[0] == streams.video)
    _, parser, payloader, pt = video
    if streams.audio is None:
        return (
            f'( filesrc location="{location}" ! {streams.demuxer} ! {parser} '
            f"! {payloader} pt={pt} name=pay0 )"
        )
    audio = next(a for a in _AUDIO_CODECS.values() if a[0] == streams.audio)
    _, audio_parser, audio_payloader, audio_pt = audio
    audio_chain = f"{audio_parser} ! " if audio_parser else ""
    return (
        f'( filesrc location="{location}" ! {streams.demuxer} name=demux '
        f"demux.video_0 ! queue ! {parser} ! {payloader} pt={pt} name=pay0 "
        f"demux.audio_0 ! queue ! {audio_chain}{audio_payloader} pt={audio_pt} name=pay1 )"
    )


def _make_factory(
    mount: str, path: str, streams: FileStreams, server_label: str, auth: bool
) -> Any:
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(_launch_line(path, streams))
    factory.set_media_gtype(LoopingMedia)
    # One pipeline per mount, shared by all its clients (like a camera's single encoder).
    factory.set_shared(True)
    # TCP and UDP both work; PyAV tests use TCP (rtsp_transport=tcp).
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)
    if auth:
        # Only the authenticated role may see and construct the media; with no default token
        # on that server, anonymous requests get 401 (not 404) and clients then retry with
        # credentials.
        factory.add_role_from_structure(
            Gst.Structure.new_from_string(
                f"{_ROLE}, media.factory.access=(boolean)true, "
                "media.factory.construct=(boolean)true"
            )
        )
    label = f"path={mount} server={server_label}"

    def on_media_configure(_factory: Any, media: Any) -> None:
        if isinstance(media, LoopingMedia):
            media.set_label(label)
        emit(f"MEDIA-CONSTRUCTED {label}")

    factory.connect("media-configure", on_media_configure)
    return factory


class ClientTracker:
    """Assigns ids to connections and reports connect/play/close events."""

    def __init__(self) -> None:
        self._next_id = 0

    def attach(self, server: Any, server_label: str) -> None:
        server.connect("client-connected", self._on_connected, server_label)

    def _on_connected(self, _server: Any, client: Any, server_label: str) -> None:
        self._next_id += 1
        cid = self._next_id
        conn = client.get_connection()
        ip = conn.get_ip() if conn is not None else "?"
        emit(f"CLIENT-CONNECTED id={cid} server={server_label} ip={ip}")
        client.connect("play-request", self._on_play, cid, server_label)
        client.connect("closed", self._on_closed, cid, server_label)

    @staticmethod
    def _on_play(_client: Any, ctx: Any, cid: int, server_label: str) -> None:
        path = "?"
        # RTSPContext is a plain C struct; guard in case a GI version hides its fields.
        with contextlib.suppress(AttributeError, TypeError):
            path = ctx.uri.abspath
        emit(f"PLAY id={cid} path={path} server={server_label}")

    @staticmethod
    def _on_closed(_client: Any, cid: int, server_label: str) -> None:
        emit(f"CLIENT-CLOSED id={cid} server={server_label}")


def _parse_mount(value: str) -> tuple[str, str]:
    mount, sep, path = value.partition("=")
    if not sep or not mount or not path:
        raise argparse.ArgumentTypeError(f"expected PATH=FILE, got {value!r}")
    return "/" + mount.strip("/"), path


def _make_server(port: int) -> Any:
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="0 = any free port")
    parser.add_argument("--mount", type=_parse_mount, action="append", required=True)
    parser.add_argument("--auth-port", type=int, help="also serve the mounts with basic auth")
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args(argv)
    if args.auth_port is not None and (args.user is None or args.password is None):
        parser.error("--auth-port needs --user and --password")

    # Inspect each file once, before listening: a file that cannot be served fails the start.
    streams: dict[str, FileStreams] = {}
    for mount, path in args.mount:
        if path not in streams:
            try:
                streams[path] = discover(path)
            except (ValueError, GLib.Error) as err:
                sys.stderr.write(f"cannot serve {path}: {err}\n")
                return 3
        info = streams[path]
        emit(f"MOUNT path={mount} video={info.video} audio={info.audio or 'none'}")

    loop = GLib.MainLoop()
    tracker = ClientTracker()

    plain = _make_server(args.port)
    mounts = plain.get_mount_points()
    for mount, path in args.mount:
        mounts.add_factory(mount, _make_factory(mount, path, streams[path], "plain", auth=False))
    tracker.attach(plain, "plain")

    servers = [("port", plain)]
    if args.auth_port is not None:
        secured = _make_server(args.auth_port)
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", _ROLE)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        # Deliberately no auth.set_default_token(): see the role comment in _make_factory.
        secured.set_auth(auth)
        secured_mounts = secured.get_mount_points()
        for mount, path in args.mount:
            secured_mounts.add_factory(
                mount, _make_factory(mount, path, streams[path], "auth", auth=True)
            )
        tracker.attach(secured, "auth")
        servers.append(("auth_port", secured))

    for key, server in servers:
        # attach() binds the socket and adds the accept source to the default main context
        # that `loop` runs; it returns 0 (after logging a GStreamer warning) if binding fails,
        # e.g. because the port is taken.
        if server.attach(None) == 0:
            sys.stderr.write(f"cannot listen on {key} {server.get_service()}\n")
            return 2
    for key, server in servers:
        emit(f"READY {key}={server.get_bound_port()}")

    def on_signal() -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE

    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, on_signal)

    loop.run()
    emit("STOPPED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
