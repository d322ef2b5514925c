"""Detection pipeline with real parts: ffmpeg media, the GStreamer RTSP camera, a StreamHub,
PyAV decoding, numpy motion, and a local DeepStack-compatible HTTP server.

The motion clip is still for 5 s, then a white box sweeps across until the clip loops at 10 s
(the box vanishes: the scene is still again). Assertions are about what was seen, on the
source's own timeline (frame pts), never about wall-clock durations.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
import io
import itertools
from pathlib import Path
import socket
import threading
import time

from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from PIL import Image
import pytest

from custom_components.lightnvr.const import DOMAIN
from custom_components.lightnvr.detection.frames import DetectionFrame, FrameSource
from custom_components.lightnvr.detection.pipeline import (
    DetectionOptions,
    DetectionPipeline,
    LabelUpdate,
    MotionUpdate,
    ObjectEvent,
)
from custom_components.lightnvr.detection.remote import issue_id_for
from custom_components.lightnvr.hub import StreamHub
from custom_components.lightnvr.source import CameraSource

from .detection_helpers import PERSON_BOX, DeepStackServer, make_static_clip
from .infra.media import make_motion_clip
from .infra.rtsp import RtspServer

ONSET = 5.0  # seconds into the motion clip
CLIP = 10.0
BOX_BRIGHTNESS = 200  # the sweeping box is white; the still background is ~80 grey


@pytest.fixture(scope="session")
def motion_clip(media_cache: Path) -> Path:
    return make_motion_clip(media_cache / "motion_640x360_25fps_10s.mp4")


@pytest.fixture(scope="session")
def static_clip(media_cache: Path) -> Path:
    return make_static_clip(media_cache)


@pytest.fixture
def cameras(motion_clip: Path, static_clip: Path, socket_enabled: None) -> Iterator[RtspServer]:
    """Two real RTSP cameras: one with motion after 5 s, one watching a still scene."""
    server = RtspServer({"motion": motion_clip, "static": static_clip})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def running_hub(url: str) -> AsyncIterator[StreamHub]:
    hub = StreamHub(
        "detect-test", CameraSource(url), asyncio.get_running_loop(), backoff_initial=0.2
    )
    hub.start()
    try:
        yield hub
    finally:
        await hub.async_stop()


@dataclass
class Recorder:
    """Everything a pipeline reported, in order."""

    motion: list[MotionUpdate] = field(default_factory=list)
    labels: list[LabelUpdate] = field(default_factory=list)
    objects: list[ObjectEvent] = field(default_factory=list)
    states: int = 0
    requests_at_motion_on: list[int] = field(default_factory=list)

    def attach(self, pipeline: DetectionPipeline, server: DeepStackServer | None = None) -> None:
        def on_motion(update: MotionUpdate) -> None:
            self.motion.append(update)
            if update.motion and server is not None:
                self.requests_at_motion_on.append(len(server.requests))

        def on_state() -> None:
            self.states += 1

        pipeline.async_add_motion_listener(on_motion)
        pipeline.async_add_label_listener(self.labels.append)
        pipeline.async_add_object_listener(self.objects.append)
        pipeline.async_add_state_listener(on_state)


@asynccontextmanager
async def running_pipeline(
    hass: HomeAssistant, hub: StreamHub, options: DetectionOptions
) -> AsyncIterator[DetectionPipeline]:
    pipeline = DetectionPipeline(hass, "cam1", hub, options, name="test")
    await pipeline.async_start()
    try:
        yield pipeline
    finally:
        await pipeline.async_stop()
    assert not detection_threads()


def detection_threads() -> list[str]:
    return [
        t.name
        for t in threading.enumerate()
        if t.name.startswith(("lightnvr-frames-", "lightnvr-detect-"))
    ]


async def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


def shows_box(frame: DetectionFrame | None) -> bool:
    return frame is not None and int(frame.gray.max()) > BOX_BRIGHTNESS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_motion_turns_on_after_onset_and_off_after_it_ends(
    hass: HomeAssistant, cameras: RtspServer
) -> None:
    off_delay = 1.0
    options = DetectionOptions(off_delay=off_delay, cooldown=1.0)
    async with (
        running_hub(cameras.url("motion")) as hub,
        running_pipeline(hass, hub, options) as pipeline,
    ):
        rec = Recorder()
        rec.attach(pipeline)
        await wait_for(lambda: pipeline.latest_frame is not None)
        first = pipeline.latest_frame
        assert first is not None
        assert not shows_box(first)
        assert first.gray.shape == (180, 320)

        await wait_for(lambda: len(rec.motion) >= 1)
        on = rec.motion[0]
        assert on.motion
        assert pipeline.motion
        # Not before the onset: the still part was analysed without any motion, and the frame
        # that turned motion on already shows the box.
        assert shows_box(on.frame)
        assert on.frame_time is not None
        assert on.frame_time - first.time >= 2.0
        assert on.box is not None
        assert on.box.y_min < 0.5 < on.box.y_max  # the box sweeps across the middle
        assert 0.0 < on.fraction < 0.2

        # Off: after the box vanished (the loop at 10 s), the cool-down and the off-delay,
        # and before the next onset.
        await wait_for(lambda: len(rec.motion) >= 2)
        off = rec.motion[1]
        assert not off.motion
        assert not pipeline.motion
        assert off.frame_time is not None
        moving_left = (ONSET + (CLIP - ONSET)) - ONSET  # box visible from on until the loop
        # Only after the box vanished (source time); the cool-down and off-delay are counted on
        # the event loop's clock, which a loaded machine's decoder may lag behind, so they are
        # checked in wall time.
        assert off.frame_time - on.frame_time >= moving_left - 0.4
        held = (off.time - on.time).total_seconds()
        assert held >= moving_left - 0.4 + options.cooldown + off_delay - 0.5
        assert off.frame_time - on.frame_time < CLIP
        assert not shows_box(pipeline.latest_frame)
        stats = pipeline.stats()
        assert stats.frames_analysed >= 40
        assert stats.decode_errors == 0


async def test_static_scene_never_triggers(hass: HomeAssistant, cameras: RtspServer) -> None:
    """Texture, per-frame sensor noise and a slow brightness swing over > 10 s: no motion."""
    async with (
        running_hub(cameras.url("static")) as hub,
        running_pipeline(hass, hub, DetectionOptions()) as pipeline,
    ):
        rec = Recorder()
        rec.attach(pipeline)
        await wait_for(lambda: pipeline.latest_frame is not None)
        first = pipeline.latest_frame
        assert first is not None

        def span() -> float:
            latest = pipeline.latest_frame
            return latest.time - first.time if latest is not None else 0.0

        await wait_for(lambda: span() >= 12.0, timeout=60)  # across the clip's loop point
        assert rec.motion == []
        assert not pipeline.motion
        assert pipeline.stats().frames_analysed >= 50


async def test_frames_keep_the_rate_and_drop_instead_of_queueing(cameras: RtspServer) -> None:
    """5 fps on the source timeline; a slow consumer gets the newest frame, older ones drop."""
    async with running_hub(cameras.url("static")) as hub:
        source = FrameSource(hub, name="rate", fps=5.0, width=320)
        source.start()
        try:

            def consume() -> tuple[list[DetectionFrame], list[DetectionFrame]]:
                quick: list[DetectionFrame] = []
                seq = 0
                while len(quick) < 12:
                    frame = source.wait_frame(seq, timeout=10)
                    assert frame is not None
                    quick.append(frame)
                    seq = frame.seq
                slow: list[DetectionFrame] = []
                while len(slow) < 3:
                    time.sleep(0.7)  # "detection" slower than the frame rate
                    frame = source.wait_frame(seq, timeout=10)
                    assert frame is not None
                    assert source.latest is frame  # always the newest
                    slow.append(frame)
                    seq = frame.seq
                return quick, slow

            quick, slow = await asyncio.get_running_loop().run_in_executor(None, consume)
            steps = [round(b.time - a.time, 3) for a, b in itertools.pairwise(quick)]
            assert set(steps) == {0.2}  # every 5th frame of 25 fps, by pts
            assert all(b.seq == a.seq + 1 for a, b in itertools.pairwise(quick))
            assert all(b.seq > a.seq + 1 for a, b in itertools.pairwise(slow))
            stats = source.stats()
            assert stats.dropped >= 2
            assert stats.decoded > stats.kept  # every frame decoded, one in five kept
            assert not stats.keyframes_only
            frame = slow[-1]
            assert frame.gray.dtype.name == "uint8"
            assert frame.gray.shape == (180, 320)
            jpeg = await asyncio.get_running_loop().run_in_executor(None, frame.to_jpeg, 640)
            image = Image.open(io.BytesIO(jpeg.data))
            assert (image.format, image.size) == ("JPEG", (640, 360))
            assert (jpeg.width, jpeg.height) == (640, 360)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, source.stop)
    assert not detection_threads()


async def test_low_rate_decodes_keyframes_only(cameras: RtspServer) -> None:
    """At 1 fps with a 1 s GOP, the P-frames are never decoded."""
    async with running_hub(cameras.url("static")) as hub:
        source = FrameSource(hub, name="slow", fps=1.0)
        source.start()
        try:
            # The keyframe interval is known from the second keyframe on.
            await wait_for(lambda: source.stats().keyframes_only)
            # Start counting right after a kept keyframe: the window then holds whole GOPs.
            kept = source.stats().kept
            await wait_for(lambda: source.stats().kept > kept)
            before = source.stats()
            await wait_for(lambda: source.stats().kept >= before.kept + 4)
            after = source.stats()
            assert after.keyframes_only
            decoded, kept = after.decoded - before.decoded, after.kept - before.kept
            assert decoded <= kept + 1  # one decoded picture per kept frame
            assert after.skipped - before.skipped >= 20 * kept  # the P-frames were skipped
        finally:
            await asyncio.get_running_loop().run_in_executor(None, source.stop)


async def test_person_detected_only_while_motion(
    hass: HomeAssistant, cameras: RtspServer, socket_enabled: None
) -> None:
    """Motion first, then the server is asked; the event carries a normalised box + snapshot."""
    server = DeepStackServer()
    await server.start()
    try:
        options = DetectionOptions(
            object_url=server.url,
            api_key="key-123",
            labels=("person",),
            only_while_motion=True,
            object_interval=0.5,
            event_interval=3600.0,
        )
        async with (
            running_hub(cameras.url("motion")) as hub,
            running_pipeline(hass, hub, options) as pipeline,
        ):
            rec = Recorder()
            rec.attach(pipeline, server)
            await wait_for(lambda: len(rec.objects) >= 1)
            assert rec.requests_at_motion_on == [0]  # nothing was sent before motion
            event = rec.objects[0]
            assert event.camera_id == "cam1"
            assert event.label == "person"
            assert event.confidence == pytest.approx(0.91)
            for got, want in zip(event.box.as_list(), PERSON_BOX, strict=True):
                assert got == pytest.approx(want, abs=0.01)
            assert [d.label for d in event.detections] == ["person"]
            snapshot = Image.open(io.BytesIO(event.snapshot.data))
            assert (snapshot.format, snapshot.size) == ("JPEG", (640, 360))
            assert rec.labels[0].label == "person"
            assert rec.labels[0].detected
            assert "person" in pipeline.detected_labels
            # More requests while motion lasts, but one event per label and interval.
            await wait_for(lambda: len(server.requests) >= 3)
            assert len(rec.objects) == 1
            assert all(r.api_key == "key-123" for r in server.requests)
            assert all(r.image_size == (640, 360) for r in server.requests)
    finally:
        await server.stop()


async def test_normalised_server_and_detection_switch(
    hass: HomeAssistant, cameras: RtspServer, socket_enabled: None
) -> None:
    """Normalised boxes; switching detection off ends states and stops the threads."""
    server = DeepStackServer(normalised=True)
    await server.start()
    try:
        options = DetectionOptions(
            object_url=server.url,
            only_while_motion=False,
            object_interval=0.2,
            event_interval=0.0,
        )
        async with (
            running_hub(cameras.url("static")) as hub,
            running_pipeline(hass, hub, options) as pipeline,
        ):
            rec = Recorder()
            rec.attach(pipeline, server)
            await wait_for(lambda: len(rec.objects) >= 2)
            for event in rec.objects:
                for got, want in zip(event.box.as_list(), PERSON_BOX, strict=True):
                    assert got == pytest.approx(want, abs=0.01)
            assert rec.motion == []

            await pipeline.async_set_enabled(False)
            assert not pipeline.enabled
            assert not detection_threads()
            assert rec.labels[-1].label == "person"
            assert not rec.labels[-1].detected
            assert pipeline.detected_labels == {}
            assert rec.states == 1
            requests = len(server.requests)
            events = len(rec.objects)
            await asyncio.sleep(0.5)
            assert len(server.requests) == requests
            assert len(rec.objects) == events

            await pipeline.async_set_enabled(True)
            assert pipeline.enabled
            await wait_for(lambda: len(rec.objects) > events)
            assert rec.states == 2
    finally:
        await server.stop()


async def test_server_down_raises_repair_issue_and_recovers(
    hass: HomeAssistant, cameras: RtspServer, socket_enabled: None
) -> None:
    """No server: motion keeps working, back-off, a repair issue; server up: cleared."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    options = DetectionOptions(
        object_url=url,
        api_key="do-not-log-me",
        only_while_motion=False,
        object_interval=0.1,
        backoff_initial=0.2,
        backoff_max=0.4,
        server_down_after=0.5,
    )
    registry = ir.async_get(hass)
    async with (
        running_hub(cameras.url("static")) as hub,
        running_pipeline(hass, hub, options) as pipeline,
    ):
        rec = Recorder()
        rec.attach(pipeline)
        await wait_for(lambda: registry.async_get_issue(DOMAIN, issue_id_for(url)) is not None)
        assert pipeline.server_down
        stats = pipeline.stats()
        assert stats.object_failures >= 2
        # Back-off: far fewer requests than frames offered to the object task.
        assert stats.object_requests < stats.frames_analysed
        issue = registry.async_get_issue(DOMAIN, issue_id_for(url))
        assert issue is not None
        assert issue.translation_placeholders is not None
        assert "do-not-log-me" not in str(issue.translation_placeholders)
        analysed = stats.frames_analysed
        await wait_for(lambda: pipeline.stats().frames_analysed > analysed + 5)  # still running

        server = DeepStackServer(port=port)
        await server.start()
        try:
            await wait_for(lambda: len(rec.objects) >= 1)
            assert registry.async_get_issue(DOMAIN, issue_id_for(url)) is None
            assert not pipeline.server_down
            assert rec.states >= 2  # down, then up again
        finally:
            await server.stop()


async def test_camera_lost_ends_motion_and_detection_resumes(
    hass: HomeAssistant, cameras: RtspServer
) -> None:
    """The camera drops during motion: motion ends; it returns: new frames, new background."""
    async with (
        running_hub(cameras.url("motion")) as hub,
        running_pipeline(hass, hub, DetectionOptions()) as pipeline,
    ):
        rec = Recorder()
        rec.attach(pipeline)
        await wait_for(lambda: pipeline.motion)
        cameras.stop()
        await wait_for(lambda: not pipeline.motion)
        assert [u.motion for u in rec.motion] == [True, False]
        cameras.start()  # same port; the clip starts again with its still part
        await wait_for(
            lambda: pipeline.latest_frame is not None and pipeline.latest_frame.generation >= 2
        )
        frame = pipeline.latest_frame
        assert frame is not None
        assert not shows_box(frame)
        assert not pipeline.motion
        await wait_for(lambda: pipeline.motion)  # the next onset is found as before
        assert shows_box(rec.motion[-1].frame)
