#!/usr/bin/python3
"""A looping RTSP "camera" for tests, built on GStreamer's gst-rtsp-server.

Run it with Debian's ``/usr/bin/python3`` (it has ``gi``; the project's venv does not)::

    /usr/bin/python3 tests/infra/rtsp_server.py --port 8554 --mount /cam=/tmp/clip.mp4 \
        [--mount /other=/tmp/other.mp4] [--auth-port 8555 --user U --password P]

Each mount serves an MP4 file's H.264 stream **without re-encoding** and loops it forever, with
RTP timestamps that keep rising across loops and an open-ended SDP range (``a=range:npt=0-``),
so clients see it as a live camera. ``--port 0`` / ``--auth-port 0`` bind free ports; the bound
ports are reported on stdout. Only 127.0.0.1 is bound (the HA test harness allows nothing else).

Machine-readable lines on stdout (one event per line, flushed immediately)::

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
import signal
import sys
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
# ended SEGMENT events (see _open_ended_segment_probe) the SDP says "a=range:npt=0-"; with the
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
    continue without a flush. qtdemux starts each repeat one frame early, so the loop's first
    keyframe would repeat the previous timestamp and consumers that require rising timestamps
    would drop it: each loop therefore adds one more frame duration of pad offset.

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
        bin_ = self.get_element()
        self._pay: Gst.Element | None = bin_.get_by_name("pay0") if bin_ else None
        parse = bin_.get_by_name("parse") if bin_ else None
        if self._pay is not None:
            self._pay.get_static_pad("src").add_probe(
                Gst.PadProbeType.QUERY_UPSTREAM, _hide_duration_probe
            )
        if parse is not None:
            parse.get_static_pad("src").add_probe(
                Gst.PadProbeType.EVENT_DOWNSTREAM, _open_ended_segment_probe
            )

    def set_label(self, label: str) -> None:
        """Remember "path=… server=…" for the LOOP lines."""
        self._setup()
        self._label = label

    def _frame_duration(self) -> int:
        """One frame's duration in ns, from the negotiated caps at the payloader's input."""
        if self._pay is not None:
            caps = self._pay.get_static_pad("sink").get_current_caps()
            if caps is not None and caps.get_size() > 0:
                ok, num, den = caps.get_structure(0).get_fraction("framerate")
                if ok and num > 0:
                    return Gst.util_uint64_scale(Gst.SECOND, den, num)
        return _FALLBACK_FRAME_NS

    def _segment_seek(self, flush: bool) -> bool:
        """Seek the demuxer to 0 as a SEGMENT seek, so it posts SEGMENT_DONE instead of EOS.

        The seek is pushed upstream from the payloader's sink pad: it reaches qtdemux directly.
        Seeking the pipeline would also hit the RTCP sinks of rtpbin, which have nothing to do
        with the file.
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
            # The offset shifts the running time of everything the payloader receives from
            # now on; it must be set before the next segment's first buffer arrives.
            if self._pay is not None:
                offset = self._loops * self._frame_duration()
                self._pay.get_static_pad("sink").set_offset(offset)
            self._segment_seek(flush=False)
            emit(f"LOOP {self._label} n={self._loops}")
            return True
        if not self._segment_started and _is_stream_blocking(message):
            # rtsp-stream blocks each stream on its first RTP packet and reports it with this
            # message; once all streams block, the media counts as prepared and the SDP is
            # answered. This is the moment to start the first loop: the demuxer has produced
            # data (so it can seek), and nothing has been sent yet. The seek must flush (a
            # non-flushing seek would wait for the blocked streaming thread); the flush releases
            # the block, and the stream blocks again on the first packet from the new segment
            # and posts this message again, which rtsp-media then handles normally. Seeking
            # later (e.g. on ASYNC_DONE, which comes only after PLAY) re-sends the first
            # keyframe with a timestamp that goes backwards.
            self._segment_started = self._segment_seek(flush=True)
            if self._segment_started:
                return True
        return GstRtspServer.RTSPMedia.do_handle_message(self, message)


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


def _open_ended_segment_probe(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
    """Replace each SEGMENT event by a copy without stop and duration.

    Before a client has SETUP a transport, rtsp-stream takes the stream's end from the sticky
    SEGMENT event (``gst_rtsp_stream_query_stop``), not from a query, so the SDP would still say
    ``a=range:npt=0-<file length>``. PyGObject cannot swap the event inside the probe info, so
    the probe pushes a rewritten copy itself (re-entering this probe, which then lets it pass)
    and drops the original.
    """
    event = info.get_event()
    if event is None or event.type != Gst.EventType.SEGMENT:
        return Gst.PadProbeReturn.OK
    segment = event.parse_segment()
    if segment.stop == Gst.CLOCK_TIME_NONE and segment.duration == Gst.CLOCK_TIME_NONE:
        return Gst.PadProbeReturn.OK
    segment = segment.copy()
    segment.stop = Gst.CLOCK_TIME_NONE
    segment.duration = Gst.CLOCK_TIME_NONE
    replacement = Gst.Event.new_segment(segment)
    replacement.set_seqnum(event.get_seqnum())
    pad.push_event(replacement)
    return Gst.PadProbeReturn.DROP


def _launch_line(path: str) -> str:
    """Pipeline that sends the file's H.264 untouched.

    ``config-interval=-1`` on both h264parse and rtph264pay puts SPS/PPS in-band before every
    keyframe, as cameras do, so a client joining mid-stream can decode from the next keyframe.
    """
    location = path.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'( filesrc location="{location}" ! qtdemux ! h264parse name=parse config-interval=-1 '
        "! rtph264pay config-interval=-1 pt=96 name=pay0 )"
    )


def _make_factory(mount: str, path: str, server_label: str, auth: bool) -> Any:
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(_launch_line(path))
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

    loop = GLib.MainLoop()
    tracker = ClientTracker()

    plain = _make_server(args.port)
    mounts = plain.get_mount_points()
    for mount, path in args.mount:
        mounts.add_factory(mount, _make_factory(mount, path, "plain", auth=False))
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
            secured_mounts.add_factory(mount, _make_factory(mount, path, "auth", auth=True))
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
