"""Generate H.264 test media with Debian's ffmpeg, cached per file name.

The clips look like what an IP camera sends: H.264 High profile, yuv420p, no B-frames, a fixed
GOP (keyframe interval) and no audio. They are served as-is (no re-encoding) by
``tests/infra/rtsp_server.py``, so their properties are exactly what the tests receive.

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
    "ffmpeg_binary",
    "make_default_clip",
    "make_h264",
    "make_motion_clip",
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


def _x264_camera_args(fps: int, gop: int, bitrate: int | str) -> list[str]:
    """Encoder options that mimic a camera stream.

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
        "-profile:v", "high",
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
