"""Generate camera-like test media with Debian's ffmpeg, cached per file name.

The clips look like what an IP camera sends: H.264 (High by default; Constrained Baseline or
Main on request) or H.265 Main, yuv420p, no B-frames, a fixed GOP (keyframe interval), and
optionally an audio track (AAC, G.711 A-law or µ-law) with a sine tone. They are served as-is
(no re-encoding) by ``tests/infra/rtsp_server.py``, so their properties are exactly what the
tests receive.

Every function writes to a temporary name first and renames it into place, so an interrupted
encode never leaves a truncated file that a later run would mistake for a cached clip.
"""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import subprocess

__all__ = [
    "DEFAULT_BITRATE",
    "DEFAULT_FPS",
    "DEFAULT_HEIGHT",
    "DEFAULT_SECONDS",
    "DEFAULT_WIDTH",
    "add_audio",
    "audio_tiles",
    "ffmpeg_binary",
    "make_default_clip",
    "make_h264",
    "make_motion_clip",
    "make_video",
]

# The small clip most tests use: cheap to encode (well under a second) and to serve.
DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_FPS, DEFAULT_SECONDS = 640, 360, 25, 10.0
DEFAULT_BITRATE = "1M"

# Generous: the 1080p/20 s clip takes ~15 s on a 2-core machine.
_ENCODE_TIMEOUT_S = 300


def ffmpeg_binary() -> str:
    """Return Debian's ffmpeg (not PyAV's bundled libraries, which have no CLI)."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    if Path("/usr/bin/ffmpeg").exists():
        return "/usr/bin/ffmpeg"
    raise FileNotFoundError("ffmpeg not found: install Debian's ffmpeg package")


def _x264_camera_args(fps: int, gop: int, bitrate: int | str, profile: str = "high") -> list[str]:
    """Encoder options that mimic a camera stream.

    ``profile`` is x264's: ``baseline`` (which x264 writes as Constrained Baseline), ``main`` or
    ``high``.

    - ``-bf 0``: cameras send no B-frames, so PTS == DTS and packets arrive in display order.
    - ``-g/-keyint_min`` equal and ``-sc_threshold 0``: keyframes strictly every ``gop`` frames,
      so tests can reason about "the next keyframe is at most one GOP away".
    - ``maxrate/bufsize``: a roughly constant bitrate like a camera's CBR/VBR cap.
    - ``+faststart``: moov atom first, so qtdemux needs no seek to the end before playing.
    """
    rate = str(bitrate)
    bufsize = f"{int(bitrate) * 2}" if isinstance(bitrate, int) else _double_rate(rate)
    return [
        "-c:v", "libx264",
        "-preset", "veryfast",
        "-profile:v", profile,
        "-pix_fmt", "yuv420p",
        "-b:v", rate,
        "-maxrate", rate,
        "-bufsize", bufsize,
        "-g", str(gop),
        "-keyint_min", str(gop),
        "-sc_threshold", "0",
        "-bf", "0",
        "-r", str(fps),
        "-an",
        "-movflags", "+faststart",
    ]  # fmt: skip


def _double_rate(rate: str) -> str:
    """Double an ffmpeg rate string such as ``"4M"`` or ``"800k"`` (used for ``-bufsize``)."""
    suffix = rate[-1] if rate[-1:].isalpha() else ""
    number = rate[: len(rate) - len(suffix)]
    return f"{float(number) * 2:g}{suffix}"


def _encode(path: Path, args: list[str]) -> Path:
    """Run ffmpeg into a temporary file next to ``path`` and rename it into place."""
    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the .mp4 suffix so ffmpeg picks the muxer; the pid keeps parallel workers
    # (pytest-xdist) from clobbering each other's partial output.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    cmd = [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args, str(tmp)]
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_ENCODE_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"ffmpeg failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr}"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def make_h264(
    path: Path | str,
    *,
    width: int = 1920,
    height: int = 1080,
    fps: int = 25,
    seconds: float = 20.0,
    gop: int | None = None,
    bitrate: int | str = "4M",
) -> Path:
    """Encode a camera-like H.264 MP4 of ffmpeg's ``testsrc2`` pattern to ``path``.

    ``gop`` defaults to ``fps`` (one keyframe per second, like most cameras). ``bitrate`` is
    bits per second as an int or an ffmpeg rate string (``"4M"``). If ``path`` already exists it
    is returned unchanged, so pass a cache path whose name encodes the parameters.
    """
    gop = gop or fps
    source = f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds:g}"
    return _encode(Path(path), ["-f", "lavfi", "-i", source, *_x264_camera_args(fps, gop, bitrate)])


def make_default_clip(cache_dir: Path | str, *, seconds: float | None = None) -> Path:
    """Return the small default clip (640x360, 25 fps, 10 s, keyframe every 1 s) in ``cache_dir``.

    ``seconds`` overrides the length, e.g. a 2 s clip makes the server loop quickly, which is
    how tests cross the loop boundary (timestamps must keep rising there).
    """
    length = DEFAULT_SECONDS if seconds is None else seconds
    fps = DEFAULT_FPS
    name = f"h264_{DEFAULT_WIDTH}x{DEFAULT_HEIGHT}_{fps}fps_{length:g}s_gop{fps}.mp4"
    return make_h264(
        Path(cache_dir) / name,
        width=DEFAULT_WIDTH,
        height=DEFAULT_HEIGHT,
        fps=fps,
        seconds=length,
        gop=fps,
        bitrate=DEFAULT_BITRATE,
    )


def make_motion_clip(
    path: Path | str,
    *,
    width: int = 640,
    height: int = 360,
    fps: int = 25,
    seconds: float = 10.0,
    static_seconds: float = 5.0,
    gop: int | None = None,
    bitrate: int | str = "1M",
) -> Path:
    """Encode a clip that is perfectly still for ``static_seconds``, then shows a moving box.

    The background is a flat colour (not ``testsrc2``, whose counter and gradient animate), so
    decoded frames before ``static_seconds`` differ by exactly 0.0; afterwards a white box
    (1/8 of the width) sweeps left to right across the middle, giving clearly non-zero frame
    differences. The box is composited with ``overlay``'s ``enable='gte(t,...)'``.
    """
    gop = gop or fps
    box = max(8, width // 8)
    # Sweep speed: cross the free width in about two seconds, then wrap around.
    speed = max(1, (width - box) // 2)
    background = f"color=c=0x405060:size={width}x{height}:rate={fps}:duration={seconds:g}"
    foreground = f"color=c=white:size={box}x{box}:rate={fps}:duration={seconds:g}"
    start = f"{static_seconds:g}"
    graph = (
        f"[0:v][1:v]overlay=x='mod((t-{start})*{speed},W-w)':y='(H-h)/2'"
        f":enable='gte(t,{start})':shortest=1[v]"
    )
    args = [
        "-f", "lavfi", "-i", background,
        "-f", "lavfi", "-i", foreground,
        "-filter_complex", graph,
        "-map", "[v]",
        *_x264_camera_args(fps, gop, bitrate),
    ]  # fmt: skip
    return _encode(Path(path), args)


# ------------------------------------------------------------------------------------------
# Any camera shape: H.264 of a given profile or H.265, plus an optional audio track.

# Audio codecs as the RTSP server sends them -> (ffmpeg encoder, container suffix).
# MP4 cannot hold G.711, MOV can (qtdemux reads both).
_AUDIO_ENCODERS = {
    "aac": ("aac", ".mp4"),
    "pcma": ("pcm_alaw", ".mov"),
    "pcmu": ("pcm_mulaw", ".mov"),
}
AAC_FRAME_SAMPLES = 1024


def _x265_camera_args(fps: int, gop: int, bitrate: int | str) -> list[str]:
    """H.265 Main, camera-like like ``_x264_camera_args`` (fixed GOP, no B-frames).

    ``ultrafast`` keeps encoding cheap (a 4K frame costs ~0.17 s on 2 cores); the profile
    stays Main. Parameter sets live in the MP4's hvcC box; the RTSP server's h265parse puts
    them in-band before every keyframe anyway.
    """
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:log-level=error"
    return [
        "-c:v", "libx265",
        "-preset", "ultrafast",
        "-profile:v", "main",
        "-pix_fmt", "yuv420p",
        "-b:v", str(bitrate),
        "-x265-params", params,
        "-r", str(fps),
        "-an",
        "-movflags", "+faststart",
    ]  # fmt: skip


def make_video(
    path: Path | str,
    *,
    codec: str = "h264",
    profile: str = "high",
    width: int = 1280,
    height: int = 720,
    fps: int = 15,
    seconds: float = 8.0,
    gop: int | None = None,
    bitrate: int | str = "1500k",
) -> Path:
    """Encode a camera-like video-only MP4 of ``testsrc2`` (``codec`` ``h264`` or ``hevc``).

    ``profile`` applies to H.264 (``baseline``, ``main``, ``high``); H.265 is always Main.
    ``gop`` defaults to ``fps`` (a keyframe every second). Cached like ``make_h264``.
    """
    gop = gop or fps
    source = f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds:g}"
    if codec == "h264":
        encoder = _x264_camera_args(fps, gop, bitrate, profile)
    elif codec == "hevc":
        if profile != "main":
            raise ValueError(f"H.265 clips are Main profile, not {profile!r}")
        encoder = _x265_camera_args(fps, gop, bitrate)
    else:
        raise ValueError(f"unknown video codec {codec!r} (h264 or hevc)")
    return _encode(Path(path), ["-f", "lavfi", "-i", source, *encoder])


def audio_tiles(codec: str, rate: int, seconds: float) -> bool:
    """Whether ``seconds`` of ``codec`` audio at ``rate`` is a whole number of packets.

    Only then does the audio track end exactly where the video ends, so a looping server
    continues the audio without a gap: AAC needs whole frames of 1024 samples (16 kHz: a
    multiple of 64 ms; 32 kHz: of 32 ms), G.711 whole 20 ms packets.
    """
    if codec not in _AUDIO_ENCODERS:
        raise ValueError(f"unknown audio codec {codec!r}; one of {', '.join(_AUDIO_ENCODERS)}")
    samples = seconds * rate
    unit = AAC_FRAME_SAMPLES if codec == "aac" else rate / 50
    return abs(samples / unit - round(samples / unit)) < 1e-6


def add_audio(
    video: Path | str,
    path: Path | str,
    *,
    codec: str,
    rate: int,
    seconds: float,
    channels: int = 1,
    frequency: int = 440,
) -> Path:
    """Copy ``video`` (no re-encoding) into ``path`` together with a sine-tone audio track.

    ``codec`` is ``aac`` (MP4), ``pcma`` or ``pcmu`` (G.711 A-law/µ-law, MOV). ``path`` gets
    the right suffix if it has another one; the final path is returned. ``seconds`` should be
    the video's length and tile with the codec's packets (``audio_tiles``).

    AAC is encoded on its own into ADTS first and then muxed as-is. Encoded straight into the
    MP4 it would get an edit list hiding the encoder's 1024 priming samples, and qtdemux then
    drops the track's last frame, leaving a 64 ms hole at every loop of the server. Without
    the edit list the track starts with the priming frame (audio lags video by one frame, far
    below what anyone notices in a test tone) and is exactly ``seconds`` long; its content is
    one frame shorter so that the encoder's final frame ends there.
    """
    if codec not in _AUDIO_ENCODERS:
        raise ValueError(f"unknown audio codec {codec!r}; one of {', '.join(_AUDIO_ENCODERS)}")
    encoder, suffix = _AUDIO_ENCODERS[codec]
    path = Path(path).with_suffix(suffix)
    if path.exists():
        return path
    tone = seconds
    if codec == "aac":
        tone = seconds - AAC_FRAME_SAMPLES / rate
    source = f"sine=frequency={frequency}:sample_rate={rate}:duration={tone:g}"
    if codec == "aac":
        # Private to this process (like _encode's partial files), as it is deleted after use.
        adts = _encode(
            path.with_name(f".{path.stem}.{os.getpid()}.audio.aac"),
            ["-f", "lavfi", "-i", source, "-c:a", "aac", "-b:a", "32k", "-ac", str(channels),
             "-f", "adts"],
        )  # fmt: skip
        try:
            return _encode(
                path,
                ["-i", str(video), "-i", str(adts), "-map", "0:v", "-map", "1:a", "-c", "copy",
                 "-movflags", "+faststart"],
            )  # fmt: skip
        finally:
            adts.unlink(missing_ok=True)
    return _encode(
        path,
        ["-i", str(video), "-f", "lavfi", "-i", source, "-map", "0:v", "-map", "1:a",
         "-c:v", "copy", "-c:a", encoder, "-ac", str(channels), "-ar", str(rate),
         "-movflags", "+faststart"],
    )  # fmt: skip
