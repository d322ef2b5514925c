"""The camera matrix: the stream shapes people's cameras send, served over real RTSP.

Each ``CameraShape`` is one camera: its video codec and profile, its audio codec (or none), its
size and frame rate, and for some cameras a second, smaller sub-stream (another mount of the same
camera, as cameras offer a main and a sub profile). ``make_camera_clips`` encodes a shape's
clips once into a cache folder; ``CameraMatrix`` serves every shape at its own mount of one
``RtspServer``, looping the clips without re-encoding, so serving the whole matrix costs almost
no CPU.

Typical use::

    with CameraMatrix(cache_dir) as matrix:
        for shape in matrix.shapes:
            url = matrix.url(shape)                     # rtsp://127.0.0.1:PORT/h265_aac
            if shape.has_substream:
                sub = matrix.substream_url(shape)       # rtsp://127.0.0.1:PORT/h265_4k_aac_sub

Names follow FFmpeg/PyAV: ``video`` is ``h264`` or ``hevc`` (what ``codec_context.name``
reports), ``profile_name`` is what ffprobe/PyAV print for the profile, ``audio_codec_name``
what they print for the audio codec.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Self

from .media import add_audio, audio_tiles, make_video
from .rtsp import RtspServer

__all__ = [
    "MATRIX",
    "MATRIX_NAMES",
    "SHAPES",
    "CameraClips",
    "CameraMatrix",
    "CameraShape",
    "SubStream",
    "make_camera_clips",
]

# Bump when the encoding changes, so a persistent cache folder never serves stale clips.
_CLIP_VERSION = 1

# What ffprobe and PyAV report as the profile.
_PROFILE_NAMES = {
    ("h264", "baseline"): "Constrained Baseline",  # x264's baseline is always constrained
    ("h264", "main"): "Main",
    ("h264", "high"): "High",
    ("hevc", "main"): "Main",
}
# Audio as the server sends it -> (FFmpeg codec name, default sample rate, RTP payload type).
_AUDIO = {
    "aac": ("aac", 16000, 97),  # mpeg4-generic (RFC 3640, AAC-hbr), dynamic payload type
    "pcma": ("pcm_alaw", 8000, 8),  # G.711 A-law, static payload type 8
    "pcmu": ("pcm_mulaw", 8000, 0),  # G.711 µ-law, static payload type 0
}


@dataclass(frozen=True)
class SubStream:
    """A camera's second, smaller stream (same audio as the main stream)."""

    video: str = "h264"
    profile: str = "main"
    width: int = 640
    height: int = 360
    fps: int = 15
    bitrate: str = "500k"

    @property
    def profile_name(self) -> str:
        return _PROFILE_NAMES[self.video, self.profile]


@dataclass(frozen=True)
class CameraShape:
    """One camera's stream shape.

    ``audio`` is ``None``, ``"aac"``, ``"pcma"`` or ``"pcmu"``; ``audio_rate`` defaults to
    16 kHz for AAC and 8 kHz for G.711 (always mono). ``seconds`` is the clip length (the
    server loops it); keyframes come every second. The length must be a whole number of video
    frames and of audio packets (``media.audio_tiles``), so that the audio continues without a
    gap where the clip restarts: with 15 fps and 16 kHz AAC that means multiples of 1.6 s.
    """

    name: str
    video: str  # "h264" or "hevc"
    profile: str  # "baseline", "main" or "high" (H.265: "main")
    audio: str | None = None
    width: int = 1280
    height: int = 720
    fps: int = 15
    seconds: float = 8.0
    bitrate: str = "1500k"
    audio_rate: int | None = None
    substream: SubStream | None = None

    def __post_init__(self) -> None:
        if (self.video, self.profile) not in _PROFILE_NAMES:
            raise ValueError(f"{self.name}: unsupported video {self.video} {self.profile}")
        if self.audio is not None and self.audio not in _AUDIO:
            raise ValueError(f"{self.name}: unsupported audio {self.audio!r}")
        fps_values = [self.fps] + ([self.substream.fps] if self.substream else [])
        for fps in fps_values:
            if abs(self.seconds * fps - round(self.seconds * fps)) > 1e-6:
                raise ValueError(f"{self.name}: {self.seconds} s is no whole number of frames")
        if self.audio is not None and not audio_tiles(self.audio, self.sample_rate, self.seconds):
            raise ValueError(
                f"{self.name}: {self.seconds} s of {self.audio} at {self.sample_rate} Hz is no "
                "whole number of audio packets (the audio would have a gap at every loop)"
            )

    # ----------------------------------------------------------------- derived facts

    @property
    def mount(self) -> str:
        return self.name

    @property
    def substream_mount(self) -> str:
        if self.substream is None:
            raise ValueError(f"camera {self.name} has no sub-stream")
        return f"{self.name}_sub"

    @property
    def has_substream(self) -> bool:
        return self.substream is not None

    @property
    def profile_name(self) -> str:
        """The video profile as ffprobe/PyAV print it (e.g. ``Constrained Baseline``)."""
        return _PROFILE_NAMES[self.video, self.profile]

    @property
    def audio_codec_name(self) -> str | None:
        """The audio codec as FFmpeg/PyAV name it (``aac``, ``pcm_alaw``, ``pcm_mulaw``)."""
        return None if self.audio is None else _AUDIO[self.audio][0]

    @property
    def sample_rate(self) -> int | None:
        if self.audio is None:
            return None
        return self.audio_rate or _AUDIO[self.audio][1]

    @property
    def audio_channels(self) -> int | None:
        return None if self.audio is None else 1

    @property
    def audio_payload_type(self) -> int | None:
        return None if self.audio is None else _AUDIO[self.audio][2]

    def with_seconds(self, seconds: float) -> CameraShape:
        """The same camera with clips of another length (e.g. short ones that loop often)."""
        return replace(self, seconds=seconds)


_SUB_360P = SubStream(video="h264", profile="main", width=640, height=360, fps=15)

# The rows the tests need (not the full cross product).
MATRIX: tuple[CameraShape, ...] = (
    CameraShape("h264_baseline_noaudio", "h264", "baseline", None, 640, 360, bitrate="500k"),
    CameraShape("h264_main_aac", "h264", "main", "aac"),
    CameraShape("h264_high_pcma", "h264", "high", "pcma"),
    CameraShape("h264_high_pcmu", "h264", "high", "pcmu"),
    CameraShape("h265_aac", "hevc", "main", "aac", bitrate="1M"),
    CameraShape("h265_pcma", "hevc", "main", "pcma", bitrate="1M"),
    CameraShape("h265_noaudio", "hevc", "main", None, bitrate="1M"),
    # A 4K camera: H.265 main stream plus an H.264 sub-stream. 5 fps and 4 s keep the one-off
    # encode short (~3.5 s); 4 s are 125 AAC frames at 32 kHz (at 16 kHz: 62.5, a gap).
    CameraShape(
        "h265_4k_aac",
        "hevc",
        "main",
        "aac",
        3840,
        2160,
        fps=5,
        seconds=4.0,
        bitrate="4M",
        audio_rate=32000,
        substream=_SUB_360P,
    ),
)
SHAPES: dict[str, CameraShape] = {shape.name: shape for shape in MATRIX}
# For @pytest.mark.parametrize("shape_name", MATRIX_NAMES).
MATRIX_NAMES: tuple[str, ...] = tuple(SHAPES)


@dataclass(frozen=True)
class CameraClips:
    """A shape's files: the main stream's and, for cameras with one, the sub-stream's."""

    main: Path
    sub: Path | None = None


def _video_clip(
    cache_dir: Path,
    *,
    codec: str,
    profile: str,
    width: int,
    height: int,
    fps: int,
    seconds: float,
    bitrate: str,
) -> Path:
    name = (
        f"cam{_CLIP_VERSION}_{codec}_{profile}_{width}x{height}_{fps}fps_{seconds:g}s_"
        f"gop{fps}_{bitrate}.mp4"
    )
    return make_video(
        cache_dir / name,
        codec=codec,
        profile=profile,
        width=width,
        height=height,
        fps=fps,
        seconds=seconds,
        gop=fps,
        bitrate=bitrate,
    )


def _with_audio(video: Path, shape: CameraShape) -> Path:
    if shape.audio is None or shape.sample_rate is None:
        return video
    return add_audio(
        video,
        video.with_name(f"{video.stem}_{shape.audio}{shape.sample_rate}.mp4"),
        codec=shape.audio,
        rate=shape.sample_rate,
        seconds=shape.seconds,
    )


def make_camera_clips(shape: CameraShape, cache_dir: Path | str) -> CameraClips:
    """Encode (or find in ``cache_dir``) the clip(s) a camera of ``shape`` serves.

    Video is encoded once per (codec, profile, size, rate, length); shapes that differ only in
    audio share it and just mux their audio track next to a copy of it.
    """
    cache = Path(cache_dir)
    main = _video_clip(
        cache,
        codec=shape.video,
        profile=shape.profile,
        width=shape.width,
        height=shape.height,
        fps=shape.fps,
        seconds=shape.seconds,
        bitrate=shape.bitrate,
    )
    sub: Path | None = None
    if shape.substream is not None:
        spec = shape.substream
        sub = _with_audio(
            _video_clip(
                cache,
                codec=spec.video,
                profile=spec.profile,
                width=spec.width,
                height=spec.height,
                fps=spec.fps,
                seconds=shape.seconds,
                bitrate=spec.bitrate,
            ),
            shape,
        )
    return CameraClips(_with_audio(main, shape), sub)


class CameraMatrix:
    """One ``RtspServer`` serving every shape at ``/<name>`` (and ``/<name>_sub``).

    The clips are made (or found in ``cache_dir``) when the matrix is created; ``start()`` /
    ``stop()`` or ``with`` run the server. ``seconds`` overrides every shape's clip length,
    e.g. 1.6 s to cross loop boundaries quickly. ``user``/``password`` add the auth server
    (``auth_url``). The server itself is ``.server`` (event counts, restarts, ...).
    """

    def __init__(
        self,
        cache_dir: Path | str,
        shapes: Iterable[CameraShape] = MATRIX,
        *,
        seconds: float | None = None,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        auth_port: int | None = None,
    ) -> None:
        chosen = tuple(shapes)
        if seconds is not None:
            chosen = tuple(shape.with_seconds(seconds) for shape in chosen)
        if not chosen:
            raise ValueError("no camera shapes given")
        self.shapes: tuple[CameraShape, ...] = chosen
        self._by_name = {shape.name: shape for shape in chosen}
        self.clips: dict[str, CameraClips] = {
            shape.name: make_camera_clips(shape, cache_dir) for shape in chosen
        }
        media: dict[str, Path] = {}
        for shape in chosen:
            clips = self.clips[shape.name]
            media[shape.mount] = clips.main
            if clips.sub is not None:
                media[shape.substream_mount] = clips.sub
        self.server = RtspServer(
            media, port=port, user=user, password=password, auth_port=auth_port
        )

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- addresses

    def shape(self, shape: CameraShape | str) -> CameraShape:
        """The served shape of that name (with this matrix's clip length)."""
        name = shape.name if isinstance(shape, CameraShape) else shape
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(self._by_name)
            raise KeyError(f"unknown camera {name!r}; cameras: {known}") from None

    def url(self, shape: CameraShape | str) -> str:
        """The main stream's URL on the server without authentication."""
        return self.server.url(self.shape(shape).mount)

    def substream_url(self, shape: CameraShape | str) -> str:
        """The sub-stream's URL (ValueError for cameras without one)."""
        return self.server.url(self.shape(shape).substream_mount)

    def auth_url(
        self,
        shape: CameraShape | str,
        user: str | None = None,
        password: str | None = None,
        *,
        credentials: bool = True,
        substream: bool = False,
    ) -> str:
        """The main (or sub-) stream's URL on the auth server; see ``RtspServer.auth_url``."""
        chosen = self.shape(shape)
        mount = chosen.substream_mount if substream else chosen.mount
        return self.server.auth_url(mount, user, password, credentials=credentials)

    def mounts(self) -> list[tuple[CameraShape, str, bool]]:
        """Every served stream as (shape, mount, is_substream)."""
        served: list[tuple[CameraShape, str, bool]] = []
        for shape in self.shapes:
            served.append((shape, shape.mount, False))
            if shape.has_substream:
                served.append((shape, shape.substream_mount, True))
        return served

    def __repr__(self) -> str:
        return f"<CameraMatrix {len(self.shapes)} cameras {self.server!r}>"
