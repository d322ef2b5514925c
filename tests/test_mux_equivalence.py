"""Muxing refactors change no file: the same packets give the same streams, lengths and frames.

The recorder and live HLS both mux a camera's packets into fragmented MP4 (today through one
writer, `media.fmp4`; the plan is one muxer per camera whose fragments both consume). This test
feeds both the same packets of real clips and compares what ffprobe reports — streams, duration,
decoded frame counts — with each other and with `golden/mux_equivalence.json`, recorded from
the code before the muxing was changed. Rewrite the golden file only for an intended change
(`LIGHTNVR_WRITE_GOLDEN=1`), and say why in the commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
import json
import os
from pathlib import Path
import subprocess
import threading
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from custom_components.lightnvr.recorder.segmenter import Segmenter
from custom_components.lightnvr.recorder.storage import Segment, StorageLayout

from .fragment_helpers import live_chunks, start_collecting
from .test_recorder_segmenter import FFPROBE, ClipFeed, clip_packets, make_av_clip, make_hevc_clip

GOLDEN = Path(__file__).parent / "golden" / "mux_equivalence.json"
# name: (clip maker, Annex B packets like an RTSP camera's, parameter sets in-band only)
CLIPS: dict[str, tuple[Callable[[Path], Path], bool, bool]] = {
    # 640x360 25 fps H.264 + 48 kHz AAC, 12 s
    "h264_aac": (make_av_clip, True, False),
    # 640x360 25 fps H.265 with B-frames, 6 s: as an MP4/FLV source gives it (hvcC)...
    "hevc_hvcc": (make_hevc_clip, False, False),
    # ...and as a camera that sends VPS/SPS/PPS in-band only (nothing in the SDP)
    "hevc_annexb_inband": (make_hevc_clip, True, True),
}


def _summary(path: Path) -> dict[str, Any]:
    """What must not change: per stream its codec, size and decoded frames; the length.

    The length is end minus start: live HLS fragments sit on the wall clock, recordings at 0.
    """
    result = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_type,codec_name,codec_tag_string,width,height,nb_read_frames,"
            "sample_rate,channels:format=duration,start_time",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stderr == "", result.stderr[-1000:]
    probe = json.loads(result.stdout)
    streams = sorted(
        (
            {key: value for key, value in stream.items() if key in _STREAM_KEYS}
            for stream in probe["streams"]
        ),
        key=lambda s: str(s["codec_type"]),
    )
    length = float(probe["format"]["duration"]) - float(probe["format"].get("start_time", 0))
    return {"streams": streams, "duration": round(length, 2)}


_STREAM_KEYS = frozenset(
    {
        "codec_type",
        "codec_name",
        "codec_tag_string",
        "width",
        "height",
        "sample_rate",
        "channels",
        "nb_read_frames",
    }
)


async def _record(feed: ClipFeed, packets: list[Any], folder: Path) -> Path:
    """The recorder's path: one segment holding every packet."""
    done: list[Segment] = []
    segmenter = Segmenter(
        "cam1",
        feed,
        StorageLayout(folder, ZoneInfo("UTC")),
        segment_seconds=600.0,
        on_segment=done.append,
    )
    segmenter.start()
    try:
        async with asyncio.timeout(30):
            while not feed.queues:
                await asyncio.sleep(0.02)
        feed.put(packets)
        feed.close()  # the camera's end: the segment is finished
        async with asyncio.timeout(60):
            while not done:
                await asyncio.sleep(0.05)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, segmenter.stop)
    assert len(done) == 1, done
    return done[0].path


def _live(feed: ClipFeed, packets: list[Any], target: Path) -> Path:
    """Live HLS's path: the camera muxer's init section and every fragment, as one file."""
    fragments, sink = start_collecting("cam1", feed)
    for _ in range(600):
        if feed.queues:
            break
        threading.Event().wait(0.02)
    feed.put(packets)
    feed.close()  # the camera's end: the muxer finishes its last fragment
    chunks = live_chunks(fragments, sink, timeout=60)
    assert chunks
    with target.open("wb") as file:
        file.write(chunks[0].init_data)
        for chunk in chunks:
            file.write(chunk.data)
    return target


@pytest.mark.parametrize("clip_name", sorted(CLIPS))
async def test_recorder_and_live_mux_the_same(
    clip_name: str, media_cache: Path, tmp_path: Path
) -> None:
    """Recording and live HLS of the same packets: identical streams, lengths and frames."""
    make, annexb, inband = CLIPS[clip_name]
    info, packets = clip_packets(make(media_cache), annexb=annexb)
    if inband:
        info = replace(info, extradata=None)
    recorded = _summary(await _record(ClipFeed(info), packets, tmp_path / "rec"))
    live_path = await asyncio.get_running_loop().run_in_executor(
        None, _live, ClipFeed(info), packets, tmp_path / "live.mp4"
    )
    live = _summary(live_path)
    assert recorded["streams"] == live["streams"]
    assert recorded["duration"] == pytest.approx(live["duration"], abs=0.05)
    video = next(s for s in recorded["streams"] if s["codec_type"] == "video")
    source_frames = sum(1 for p in packets if p.kind == "video")
    assert int(video["nb_read_frames"]) == source_frames  # nothing lost, nothing doubled

    found = {"recording": recorded, "live": live}
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if os.environ.get("LIGHTNVR_WRITE_GOLDEN"):
        golden[clip_name] = found
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")
    assert golden.get(clip_name) == found
