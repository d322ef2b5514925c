"""Test helpers for detection: a static camera clip and a DeepStack-compatible HTTP server.

The static clip is what a camera sees of an empty scene: a textured picture (SMPTE bars), sensor
noise that differs on every frame, and a slow brightness swing (clouds, auto-exposure) whose
period equals the clip length, so the looping RTSP server shows no jump at the loop point.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
import io
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image

from .infra.media import _encode, _x264_camera_args

STATIC_SECONDS = 10


def make_static_clip(
    cache_dir: Path, *, width: int = 640, height: int = 360, fps: int = 25
) -> Path:
    """Encode a still scene with per-frame noise and a slow ±20 level brightness swing."""
    seconds = STATIC_SECONDS
    source = (
        f"smptehdbars=size={width}x{height}:rate={fps}:duration={seconds},"
        f"eq=brightness='0.08*sin(2*PI*t/{seconds})':eval=frame,"
        "noise=alls=12:allf=t+u"
    )
    path = Path(cache_dir) / f"static_noise_{width}x{height}_{fps}fps_{seconds}s.mp4"
    return _encode(path, ["-f", "lavfi", "-i", source, *_x264_camera_args(fps, fps, "1M")])


@dataclass
class DetectionRequest:
    """What the fake server received."""

    image_size: tuple[int, int]
    min_confidence: str | None
    api_key: str | None


@dataclass
class DeepStackServer:
    """A tiny DeepStack / CodeProject.AI stand-in on 127.0.0.1.

    It finds one "person" in the middle of any image (plus a low-confidence "dog" that a 0.6
    threshold filters out), in pixels of the image received, or normalised when `normalised`.
    `status`/`payload` force an error answer, `delay` a slow one.
    """

    normalised: bool = False
    status: int = 200
    payload: Any = None
    delay: float = 0.0
    port: int = 0
    requests: list[DetectionRequest] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/vision/detection", self._detect)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server  # the only way to learn the bound port
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _detect(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("image")
        assert isinstance(upload, web.FileField), "image must be a file upload"
        image = Image.open(io.BytesIO(upload.file.read()))
        assert image.format == "JPEG"
        width, height = image.size
        self.requests.append(
            DetectionRequest(
                (width, height),
                _text(form.get("min_confidence")),
                _text(form.get("api_key")),
            )
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.json_response({"success": False, "error": "boom"}, status=self.status)
        if self.payload is not None:
            return web.json_response(self.payload)
        return web.json_response({"success": True, "predictions": self.predictions(width, height)})

    def predictions(self, width: int, height: int) -> list[dict[str, Any]]:
        boxes = [("person", 0.91, (0.25, 0.2, 0.5, 0.9)), ("dog", 0.3, (0.6, 0.6, 0.8, 0.8))]
        out = []
        for label, confidence, (x0, y0, x1, y1) in boxes:
            if self.normalised:
                coords = {"x_min": x0, "y_min": y0, "x_max": x1, "y_max": y1}
            else:
                coords = {
                    "x_min": round(x0 * width),
                    "y_min": round(y0 * height),
                    "x_max": round(x1 * width),
                    "y_max": round(y1 * height),
                }
            out.append({"label": label, "confidence": confidence, **coords})
        return out


# The box every DeepStackServer reports for its person (relative coordinates).
PERSON_BOX = (0.25, 0.2, 0.5, 0.9)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
