"""Continuous recording: crash-safe fragmented MP4 segments, their index and retention.

- `segmenter`: one thread per camera turns the hub's packets into segment files (stream copy).
- `storage`: layout, index, path safety, retention and crash recovery.
- `manager`: `RecorderManager`, what the integration wires to entities, media source and HLS.
"""

from __future__ import annotations

from .manager import ISSUE_STORAGE_FULL, RecorderManager, StorageStatus
from .segment_writer import FragmentInfo
from .segmenter import (
    DEFAULT_FRAGMENT_SECONDS,
    DEFAULT_SEGMENT_SECONDS,
    PAUSE_STORAGE_FULL,
    PAUSE_UNSUPPORTED,
    PAUSE_WRITE_ERROR,
    Segmenter,
    SegmenterState,
)
from .storage import Segment, SegmentIndex, StorageLayout, UnsafePathError, resolve_inside

__all__ = [
    "DEFAULT_FRAGMENT_SECONDS",
    "DEFAULT_SEGMENT_SECONDS",
    "ISSUE_STORAGE_FULL",
    "PAUSE_STORAGE_FULL",
    "PAUSE_UNSUPPORTED",
    "PAUSE_WRITE_ERROR",
    "FragmentInfo",
    "RecorderManager",
    "Segment",
    "SegmentIndex",
    "Segmenter",
    "SegmenterState",
    "StorageLayout",
    "StorageStatus",
    "UnsafePathError",
    "resolve_inside",
]
