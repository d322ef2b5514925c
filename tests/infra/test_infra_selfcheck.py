"""Self-check of the real-camera test infrastructure (no Home Assistant involved).

Proves that the GStreamer RTSP server behaves like a camera for PyAV: it streams the clip's
H.264 unchanged, loops with rising timestamps, answers 401 without valid credentials on the
auth port, reports client connections, and comes back on the same port after a restart. The
camera matrix (``cameras.py``: H.264 Constrained Baseline/Main/High, H.265 Main, a 4K camera
with a sub-stream; no audio, AAC, G.711 A-law/µ-law) is checked with ffprobe and PyAV: codecs,
profiles, sizes, audio sample rates, in-band parameter sets, and video and audio timestamps
that rise evenly across the loop boundary.

PyAV's sockets are FFmpeg's (C), which pytest-socket cannot block; only the raw DESCRIBE test
opens a Python socket and therefore requests ``socket_enabled``.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
import itertools
import json
from pathlib import Path
import shutil
import socket
import subprocess
import time

import av
import av.error
import pytest

from .cameras import MATRIX, CameraMatrix, CameraShape, make_camera_clips
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


# ------------------------------------------------------------------------------------------
# The camera matrix

# AAC sampling frequency indexes (ISO 14496-3) for the AudioSpecificConfig check.
_AAC_RATE_INDEX = {48000: 3, 44100: 4, 32000: 5, 24000: 6, 22050: 7, 16000: 8, 8000: 11}
# NAL unit types of the parameter sets a keyframe must carry in-band.
_H264_PARAMETER_SETS = {7, 8}  # SPS, PPS
_H265_PARAMETER_SETS = {32, 33, 34}  # VPS, SPS, PPS
# In a session with both streams FFmpeg re-maps timestamps onto the RTCP sender reports; seen
# on a busy machine as steps a few ms to ~30 ms long now and then. Exact steps are checked in
# single-stream sessions (allowed_media_types), where FFmpeg keeps the RTP timestamps as sent.
_AV_END_GAP = Fraction(1, 2)
# ffprobe over RTSP needs ~2 s per stream (~4.5 s for the 5 fps 4K one).
_FFPROBE_TIMEOUT_S = 60


def _ffprobe_binary() -> str:
    return shutil.which("ffprobe") or "/usr/bin/ffprobe"


def _aac_config(rate: int, channels: int) -> bytes:
    """The 2-byte AudioSpecificConfig of AAC-LC: what the SDP's config= and extradata hold."""
    index = _AAC_RATE_INDEX[rate]
    return bytes([(2 << 3) | (index >> 1), ((index & 1) << 7) | (channels << 3)])


def _nal_types(data: bytes, codec: str) -> set[int]:
    """NAL unit types in an Annex B access unit (what FFmpeg's RTSP demuxer hands out)."""
    types: set[int] = set()
    for unit in data.split(b"\x00\x00\x01")[1:]:
        if unit:
            types.add((unit[0] >> 1) & 0x3F if codec == "hevc" else unit[0] & 0x1F)
    return types


def _served(matrix: CameraMatrix) -> list[tuple[str, str, CameraShape, bool]]:
    """(mount, video codec, shape, is sub-stream) for every stream of the matrix."""
    return [
        (mount, shape.substream.video if sub and shape.substream else shape.video, shape, sub)
        for shape, mount, sub in matrix.mounts()
    ]


def _expected_video(shape: CameraShape, sub: bool) -> tuple[str, str, int, int, int]:
    """(codec, profile name, width, height, fps) of a main or sub-stream."""
    if sub and shape.substream is not None:
        spec = shape.substream
        return spec.video, spec.profile_name, spec.width, spec.height, spec.fps
    return shape.video, shape.profile_name, shape.width, shape.height, shape.fps


@pytest.fixture(scope="module")
def matrix(media_cache: Path) -> Iterator[CameraMatrix]:
    """Every camera shape at its own mount (clips cached for the whole test session)."""
    with CameraMatrix(media_cache) as served:
        yield served


def test_matrix_shapes_are_consistent() -> None:
    """Names are unique, the 4K camera has its sub-stream, bad lengths are refused."""
    names = [shape.name for shape in MATRIX]
    assert len(set(names)) == len(names)
    assert {(s.video, s.audio) for s in MATRIX} >= {
        ("h264", None), ("h264", "aac"), ("h264", "pcma"), ("h264", "pcmu"),
        ("hevc", "aac"), ("hevc", "pcma"), ("hevc", None),
    }  # fmt: skip
    assert {s.profile_name for s in MATRIX if s.video == "h264"} == {
        "Constrained Baseline", "Main", "High",
    }  # fmt: skip
    big = [s for s in MATRIX if s.width == 3840]
    assert len(big) == 1
    assert big[0].has_substream
    assert big[0].substream_mount == f"{big[0].name}_sub"
    assert big[0].height == 2160
    assert big[0].video == "hevc"
    # 1.6 s tiles every shape (whole frames and whole audio packets): the quick-loop length.
    for shape in MATRIX:
        assert shape.with_seconds(1.6).seconds == 1.6
    aac = next(s for s in MATRIX if s.audio == "aac" and s.sample_rate == 16000)
    with pytest.raises(ValueError, match="audio packets"):
        aac.with_seconds(2.0)  # 31.25 AAC frames: a gap at every loop
    with pytest.raises(ValueError, match="frames"):
        aac.with_seconds(1.65)


def test_matrix_clips(media_cache: Path) -> None:
    """Each clip has the shape's codec, profile, size, rate, GOP and an audio track as long
    as the video (whole packets), so the looping server continues audio without a gap."""
    for shape in MATRIX:
        clips = make_camera_clips(shape, media_cache)
        files = [(clips.main, False)] + ([(clips.sub, True)] if clips.sub else [])
        for path, sub in files:
            assert path is not None
            codec, profile, width, height, fps = _expected_video(shape, sub)
            with av.open(str(path)) as container:
                video = container.streams.video[0]
                assert video.codec_context.name == codec, path
                assert video.codec_context.profile == profile, path
                assert (video.codec_context.width, video.codec_context.height) == (width, height)
                assert video.average_rate == fps
                audio = container.streams.audio[0] if container.streams.audio else None
                if shape.audio is None:
                    assert audio is None, path
                else:
                    assert audio is not None, path
                    assert audio.codec_context.name == shape.audio_codec_name
                    assert audio.codec_context.sample_rate == shape.sample_rate
                    assert audio.codec_context.channels == 1
                audio_base = audio.time_base if audio is not None else None
                frames = keyframes = 0
                audio_ticks = 0
                for packet in container.demux():
                    if not packet.size:
                        continue
                    if packet.stream.type == "video":
                        frames += 1
                        keyframes += packet.is_keyframe
                    else:
                        assert packet.duration
                        audio_ticks += packet.duration
            assert frames == round(shape.seconds * fps), path
            assert keyframes == -(-frames // fps), path  # a keyframe every second
            if audio_base is not None:
                assert audio_ticks * audio_base == Fraction(shape.seconds).limit_denominator()


def test_matrix_ffprobe(matrix: CameraMatrix) -> None:
    """Debian's ffprobe reads every mount over RTSP/TCP with the expected codecs."""
    probes = {
        mount: subprocess.Popen(
            [
                _ffprobe_binary(), "-v", "error", "-rtsp_transport", "tcp",
                "-show_entries",
                "stream=codec_type,codec_name,profile,width,height,sample_rate,channels",
                "-of", "json", matrix.server.url(mount),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mount, *_ in _served(matrix)
    }  # fmt: skip
    results = {}
    for mount, proc in probes.items():
        try:
            out, err = proc.communicate(timeout=_FFPROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for other in probes.values():
                other.kill()
                other.communicate()
            raise
        assert proc.returncode == 0, f"{mount}: {err}"
        results[mount] = json.loads(out)["streams"]
    for mount, _codec, shape, sub in _served(matrix):
        codec, profile, width, height, _fps = _expected_video(shape, sub)
        streams = results[mount]
        video = [s for s in streams if s["codec_type"] == "video"]
        audio = [s for s in streams if s["codec_type"] == "audio"]
        assert len(video) == 1, (mount, streams)
        assert (video[0]["codec_name"], video[0]["profile"]) == (codec, profile), mount
        assert (video[0]["width"], video[0]["height"]) == (width, height), mount
        if shape.audio is None:
            assert audio == [], mount
        else:
            assert len(audio) == 1, (mount, streams)
            assert audio[0]["codec_name"] == shape.audio_codec_name, mount
            assert int(audio[0]["sample_rate"]) == shape.sample_rate, mount
            assert audio[0]["channels"] == 1, mount
        info = matrix.server.mount_info(mount)
        assert info == {
            "video": "h265" if codec == "hevc" else "h264",
            "audio": shape.audio or "none",
        }


def test_matrix_sdp_looks_like_a_camera(matrix: CameraMatrix, socket_enabled: None) -> None:
    """Open range, parameter sets in the SDP, the usual audio payload formats."""
    for mount, codec, shape, _sub in _served(matrix):
        url = matrix.server.url(mount)
        with socket.create_connection(("127.0.0.1", matrix.server.port), timeout=10) as sock:
            sock.sendall(
                f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n".encode()
            )
            response = b""
            expected_end = b"a=control:stream=1" if shape.audio else b"a=control:stream=0"
            while expected_end not in response or not response.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                response += chunk
        sdp = response.decode()
        assert sdp.startswith("RTSP/1.0 200 OK"), sdp
        assert "a=range:npt=0-\r\n" in sdp, sdp
        if codec == "hevc":
            assert "a=rtpmap:96 H265/90000" in sdp, sdp
            assert all(f"sprop-{name}=" in sdp for name in ("vps", "sps", "pps")), sdp
        else:
            assert "a=rtpmap:96 H264/90000" in sdp, sdp
            assert "sprop-parameter-sets=" in sdp, sdp
        if shape.audio == "aac":
            config = _aac_config(shape.sample_rate or 0, 1).hex()
            assert f"a=rtpmap:97 MPEG4-GENERIC/{shape.sample_rate}/1" in sdp, sdp
            assert "mode=AAC-hbr" in sdp, sdp
            assert f"config={config}" in sdp, sdp
        elif shape.audio == "pcma":
            assert "m=audio 0 RTP/AVP 8\r\n" in sdp, sdp
            assert "a=rtpmap:8 PCMA/8000" in sdp, sdp
        elif shape.audio == "pcmu":
            assert "m=audio 0 RTP/AVP 0\r\n" in sdp, sdp
            assert "a=rtpmap:0 PCMU/8000" in sdp, sdp
        else:
            assert "m=audio" not in sdp, sdp


@dataclass
class _Track:
    """What a reader saw of one stream."""

    codec: str
    time_base: Fraction
    extradata: bytes
    sample_rate: int = 0
    channels: int = 0
    width: int = 0
    height: int = 0
    dts: list[int] = field(default_factory=list)
    keyframe_nals: list[set[int]] = field(default_factory=list)

    def span(self) -> float:
        return float((self.dts[-1] - self.dts[0]) * self.time_base) if len(self.dts) > 1 else 0.0


def _read_mount(url: str, seconds: float, media: str | None = None) -> dict[str, _Track]:
    """Demux until every stream's timestamps span ``seconds``; return video/audio tracks.

    ``media`` ("video" or "audio") sets up only that stream (FFmpeg's allowed_media_types).
    """
    tracks: dict[str, _Track] = {}
    deadline = time.monotonic() + seconds + 30
    options = {"rtsp_transport": "tcp"}
    if media is not None:
        options["allowed_media_types"] = media
    with av.open(url, options=options, timeout=(20, 10)) as container:
        for stream in container.streams:
            ctx = stream.codec_context
            assert stream.time_base is not None
            track = _Track(ctx.name, Fraction(stream.time_base), bytes(ctx.extradata or b""))
            if stream.type == "audio":
                track.sample_rate, track.channels = ctx.sample_rate, ctx.channels
            else:
                track.width, track.height = ctx.width, ctx.height
            tracks[stream.type] = track
        for packet in container.demux():
            if packet.size == 0 or packet.dts is None:  # the first packet has no DTS yet
                continue
            track = tracks[packet.stream.type]
            track.dts.append(packet.dts)
            if packet.stream.type == "video" and packet.is_keyframe:
                track.keyframe_nals.append(_nal_types(bytes(packet), track.codec))
            if all(t.span() >= seconds for t in tracks.values()):
                break
            assert time.monotonic() < deadline, f"{url}: too slow: {tracks}"
    return tracks


# FFmpeg's RTSP reader re-bases a multi-stream session's timestamps on the wall clock when the
# first RTCP sender report of a stream arrives (rtpdec, to sync audio with video), which can
# step one stream back by a few tens of milliseconds once. Real cameras do the same; the
# product's timestamp guard absorbs it. Per-stream sessions have no re-base: their steps are
# checked exactly by _assert_even_steps.
_RTCP_REBASE = Fraction(1, 5)


def _assert_rising(mount: str, track: _Track) -> None:
    """Rising, but for at most one small RTCP re-base step back."""
    falls = [(i, a, b) for i, (a, b) in enumerate(itertools.pairwise(track.dts)) if b <= a]
    rebase = [f for f in falls if (f[1] - f[2]) * track.time_base < _RTCP_REBASE]
    allowed = rebase[:1] if len(falls) == 1 else []
    assert falls == allowed, f"{mount} {track.codec}: {len(track.dts)} packets, falls {falls[:10]}"


# Packets FFmpeg's RTSP reader may drop at once on a loaded machine (seen: 5 AAC packets).
_MAX_DROPPED = 30


def _assert_even_steps(mount: str, track: _Track, step: Fraction) -> None:
    """Strictly rising, exactly one packet duration apart (±1 tick of RTP clock rounding).

    A repeated or missing packet where the file restarts would be 20-200 ms off.
    """
    steps = [Fraction(b - a) * track.time_base for a, b in itertools.pairwise(track.dts)]
    odd = [(i, s) for i, s in enumerate(steps) if abs(s - step) > track.time_base]
    # On a loaded machine FFmpeg's RTSP reader may once drop late packets: a step of a whole
    # number of packets. A loop fault repeats or skips by a fraction of a
    # packet, or does it again at every restart: anything beyond one whole-packet gap fails.
    dropped = [
        (i, s)
        for i, s in odd
        if any(abs(s - n * step) <= track.time_base for n in range(2, _MAX_DROPPED + 2))
    ]
    allowed = dropped[:1] if len(odd) == 1 else []
    assert odd == allowed, f"{mount} {track.codec}: steps other than {step}: {odd[:10]}"


def test_matrix_streams_loop_evenly_in_pyav(matrix: CameraMatrix) -> None:
    """PyAV reads each mount across a loop boundary: video and audio timestamps rise evenly
    (no repeat, no gap) and together, keyframes carry the parameter sets in-band, AAC has its
    AudioSpecificConfig as extradata.

    Per mount, one session reads both streams and one session per stream checks the exact
    steps; all share the mount's pipeline, which starts at the file's start when the first
    of them connects.
    """
    served = _served(matrix)
    # Past the first loop boundary, and at least 3 s.
    read_s = {mount: max(3.0, shape.seconds + 1.0) for mount, _, shape, _ in served}
    jobs = [(mount, None) for mount, *_ in served]
    jobs += [(mount, "video") for mount, *_ in served]
    jobs += [(mount, "audio") for mount, _, shape, _ in served if shape.audio]
    longest = max(read_s.values())
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {
            job: pool.submit(_read_mount, matrix.server.url(job[0]), read_s[job[0]], job[1])
            for job in jobs
        }
        results = {job: future.result(timeout=longest + 60) for job, future in futures.items()}
    for mount, codec, shape, sub in served:
        _codec, _profile, width, height, fps = _expected_video(shape, sub)
        assert matrix.server.loop_count(mount) >= 1, mount
        tracks = results[mount, None]
        assert set(tracks) == ({"video", "audio"} if shape.audio else {"video"}), mount
        video = tracks["video"]
        assert (video.codec, video.width, video.height) == (codec, width, height), mount
        _assert_rising(mount, video)
        _assert_even_steps(mount, results[mount, "video"]["video"], Fraction(1, fps))
        # Annex B extradata (from the SDP's sprop parameters) and in-band parameter sets.
        assert video.extradata.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01")), mount
        wanted = _H265_PARAMETER_SETS if codec == "hevc" else _H264_PARAMETER_SETS
        assert len(video.keyframe_nals) >= 3, mount
        assert all(wanted <= nals for nals in video.keyframe_nals), (mount, video.keyframe_nals)
        if shape.audio is None:
            continue
        audio = tracks["audio"]
        rate = shape.sample_rate or 0
        assert audio.codec == shape.audio_codec_name, mount
        assert (audio.sample_rate, audio.channels) == (rate, 1), mount
        assert audio.time_base == Fraction(1, rate), mount
        _assert_rising(mount, audio)
        if shape.audio == "aac":
            assert audio.extradata == _aac_config(rate, 1), (mount, audio.extradata)
            step = Fraction(1024, rate)
        else:
            step = Fraction(20, 1000)  # 20 ms G.711 packets
        _assert_even_steps(mount, results[mount, "audio"]["audio"], step)
        # Rising together: both streams were read up to the same moment.
        end_gap = abs(video.dts[-1] * video.time_base - audio.dts[-1] * audio.time_base)
        assert end_gap < _AV_END_GAP, (mount, float(end_gap))


def test_unservable_file_fails_the_start(tmp_path: Path) -> None:
    """A file the server cannot serve stops start() with the reason, instead of a dead mount."""
    bogus = tmp_path / "not_a_video.mp4"
    bogus.write_bytes(b"this is no media file" * 100)
    with pytest.raises(RuntimeError, match="cannot serve"):
        RtspServer({"cam": bogus}).start()
