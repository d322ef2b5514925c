"""Self-check of the real-camera test infrastructure (no Home Assistant involved).

Proves that the GStreamer RTSP server behaves like a camera for PyAV 13: it streams the clip's
H.264 unchanged, loops with rising timestamps, answers 401 without valid credentials on the
auth port, reports client connections, and comes back on the same port after a restart.

PyAV's sockets are FFmpeg's (C), which pytest-socket cannot block; only the raw DESCRIBE test
opens a Python socket and therefore requests ``socket_enabled``.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
import itertools
from pathlib import Path
import socket

import av
import av.error
import pytest

from .media import make_default_clip, make_motion_clip
from .rtsp import RtspServer, unavailable_reason

_REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

WIDTH, HEIGHT, FPS = 640, 360, 25
USER, PASSWORD = "admin", "p@ss:w/rd"  # characters that need percent-encoding in URLs
# The short clip makes the server loop every 2 s, so a few seconds of reading cross a boundary.
LOOP_SECONDS = 2
# Opening costs ~1.1 s of probing; reads wait at most a GOP (1 s) for data.
OPEN_TIMEOUTS = (5, 5)


def _open(url: str) -> av.container.InputContainer:
    return av.open(url, options={"rtsp_transport": "tcp"}, timeout=OPEN_TIMEOUTS)


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def short_clip(media_dir: Path) -> Path:
    return make_default_clip(media_dir, seconds=LOOP_SECONDS)


@pytest.fixture
def server(short_clip: Path) -> Iterator[RtspServer]:
    with RtspServer({"cam": short_clip}, user=USER, password=PASSWORD) as srv:
        yield srv


def test_media_files(media_dir: Path, short_clip: Path) -> None:
    """The generated clips are camera-like H.264, and re-generation is skipped."""
    default = make_default_clip(media_dir)
    motion = make_motion_clip(media_dir / "motion.mp4")
    for path, seconds in ((short_clip, LOOP_SECONDS), (default, 10), (motion, 10)):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert (stream.codec_context.width, stream.codec_context.height) == (WIDTH, HEIGHT)
            assert stream.average_rate == FPS
            assert stream.frames == seconds * FPS
            keyframes = sum(packet.is_keyframe for packet in container.demux(stream) if packet.size)
            assert keyframes == seconds  # one keyframe per second
    mtime = short_clip.stat().st_mtime_ns
    assert make_default_clip(media_dir, seconds=LOOP_SECONDS) == short_clip
    assert short_clip.stat().st_mtime_ns == mtime


def test_motion_clip_is_still_then_moves(media_dir: Path) -> None:
    """Frame differences are exactly 0 for the first 5 s and clearly non-zero afterwards."""
    motion = make_motion_clip(media_dir / "motion.mp4")
    previous = None
    still: list[float] = []
    moving: list[float] = []
    with av.open(str(motion)) as container:
        for frame in container.decode(video=0):
            gray = frame.to_ndarray(format="gray").astype("int16")
            if previous is not None:
                diff = float(abs(gray - previous).mean())
                (still if frame.time < 5 else moving).append(diff)
            previous = gray
    assert still
    assert max(still) == 0.0
    assert moving
    assert min(moving) > 0.5


def test_stream_loops_with_rising_dts(server: RtspServer) -> None:
    """≥ 50 packets at the clip's resolution, DTS strictly rising across loop boundaries."""
    packets: list[tuple[int, bool]] = []
    with _open(server.url("cam")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == (WIDTH, HEIGHT)
        time_base = stream.time_base
        for packet in container.demux(stream):
            if packet.size == 0 or packet.dts is None:  # the first packet has no DTS yet
                continue
            packets.append((packet.dts, packet.is_keyframe))
            # 2.5 loops' worth of frames: crosses two loop boundaries.
            if len(packets) >= int(2.5 * LOOP_SECONDS * FPS):
                break
    assert server.loop_count("cam") >= 2
    assert time_base is not None
    dts = [value for value, _ in packets]
    steps = [Fraction(b - a) * time_base for a, b in itertools.pairwise(dts)]
    frame = Fraction(1, FPS)
    # Strictly rising and exactly one frame apart, also where the file restarts (a 0 step
    # there would mean qtdemux's repeated first frame wasn't offset).
    assert all(step > 0 for step in steps), steps
    assert set(steps) == {frame}, sorted(set(steps))
    keyframe_dts = [value for value, key in packets if key]
    assert len(keyframe_dts) >= 3
    keyframe_steps = {Fraction(b - a) for a, b in itertools.pairwise(keyframe_dts)}
    assert {step * time_base for step in keyframe_steps} == {1}  # one keyframe per second


def test_sdp_is_open_ended(server: RtspServer, socket_enabled: None) -> None:
    """DESCRIBE answers a=range:npt=0- (like a live camera), not the file's length."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        request = (
            f"DESCRIBE {server.url('cam')} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
        )
        sock.sendall(request.encode())
        response = b""
        while b"a=control:stream=0" not in response:
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
    text = response.decode()
    assert text.startswith("RTSP/1.0 200 OK"), text
    assert "a=range:npt=0-\r\n" in text, text


def test_auth_port(server: RtspServer) -> None:
    """No or wrong credentials give 401 (HTTPUnauthorizedError); the right ones stream."""
    for url in (
        server.auth_url("cam", credentials=False),
        server.auth_url("cam", password="wrong"),
        server.auth_url("cam", user="nobody"),
    ):
        with pytest.raises(av.error.HTTPUnauthorizedError):
            _open(url)
    with _open(server.auth_url("cam")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (WIDTH, HEIGHT)
        packet = next(p for p in container.demux(stream) if p.size)
        assert packet.is_keyframe
    assert server.play_count("cam") == 1
    # The plain port needs no credentials.
    with _open(server.url("cam")) as container:
        assert next(p for p in container.demux(video=0) if p.size)


def test_client_counts(server: RtspServer) -> None:
    """connected_clients follows an open connection; clients of one mount share one pipeline."""
    assert server.connected_clients == 0
    with _open(server.url("cam")) as first:
        server.wait_for(lambda: server.connected_clients == 1, timeout=5)
        assert server.total_connections == 1
        next(p for p in first.demux(video=0) if p.size)
        with _open(server.url("cam")) as second:
            server.wait_for_clients(2, timeout=5)
            next(p for p in second.demux(video=0) if p.size)
            next(p for p in first.demux(video=0) if p.size)  # the first still streams
        server.wait_for_clients(1, timeout=5)
        assert server.media_count("cam") == 1  # shared pipeline
    server.wait_for_clients(0, timeout=5)
    assert server.total_connections == 2
    assert server.play_count("cam") == 2


def test_stop_and_restart_on_same_port(server: RtspServer) -> None:
    """A stopped camera refuses connections; start() brings it back at the same URL."""
    url, port, auth_port = server.url("cam"), server.port, server.auth_port
    with _open(url) as container:
        next(p for p in container.demux(video=0) if p.size)
    server.stop()
    assert not server.running
    assert server.events[-1].kind == "STOPPED"  # clean SIGTERM exit
    assert server.connected_clients == 0
    with pytest.raises(av.error.ConnectionRefusedError):
        _open(url)
    server.start()
    assert (server.port, server.auth_port) == (port, auth_port)
    assert server.url("cam") == url
    with _open(url) as container:
        packet = next(p for p in container.demux(video=0) if p.size)
        assert packet.is_keyframe
        server.wait_for_clients(1, timeout=5)
    server.wait_for_clients(0, timeout=5)
    assert server.total_connections == 2  # counted across restarts


def test_start_failure_reports_stderr(short_clip: Path) -> None:
    """A server that cannot start raises with its stderr instead of hanging."""
    with RtspServer({"cam": short_clip}) as first:
        taken = RtspServer({"cam": short_clip}, port=first.port, ready_timeout=1.0)
        with pytest.raises(RuntimeError, match="could not bind"):
            taken.start()
        assert not taken.running
