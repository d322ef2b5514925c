"""Event clips: a short MP4 per detection, starting before it, from memory (never the camera).

- `store`: clips on disk (the shared day tree of `files.py` with labelled names, sidecars,
  scanning, recovery), the index and retention;
- `handle`: a clip being made, as callers wait on it;
- `recorder`: the clips of one camera, a sink of its muxer (pre-roll from the muxer's ring);
- `manager`: every camera's clips for Home Assistant (triggers, saves, listeners, retention).

The names importers use are re-exported here.
"""

from __future__ import annotations

from ..files import safe_label as label_slug
from .handle import ClipFinishedCallback, ClipHandle
from .manager import DEFAULT_CLIP_RETENTION_INTERVAL, MAX_SAVES, MAX_SAVES_PER_CAMERA, ClipManager
from .recorder import (
    DEFAULT_MAX_LENGTH,
    DEFAULT_POST_ROLL,
    DEFAULT_PRE_ROLL,
    MAX_SAVE_SECONDS,
    ClipRecorder,
)
from .store import (
    CLIP_SHARE,
    CLIP_SUFFIX,
    DEFAULT_CLIP_RETENTION_DAYS,
    EVENTS_DIR,
    MANUAL_LABEL,
    SIDECAR_SUFFIX,
    SIDECAR_VERSION,
    SNAPSHOT_SUFFIX,
    ClipBusyError,
    ClipError,
    ClipIndex,
    ClipLayout,
    ClipRetentionPeer,
    ClipScan,
    EventClip,
    apply_clip_retention,
    delete_clip,
    read_sidecar,
    recover_clip_part,
    scan_clips,
    sidecar_path,
    snapshot_path,
    write_sidecar,
)

__all__ = [
    "CLIP_SHARE",
    "CLIP_SUFFIX",
    "DEFAULT_CLIP_RETENTION_DAYS",
    "DEFAULT_CLIP_RETENTION_INTERVAL",
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_POST_ROLL",
    "DEFAULT_PRE_ROLL",
    "EVENTS_DIR",
    "MANUAL_LABEL",
    "MAX_SAVES",
    "MAX_SAVES_PER_CAMERA",
    "MAX_SAVE_SECONDS",
    "SIDECAR_SUFFIX",
    "SIDECAR_VERSION",
    "SNAPSHOT_SUFFIX",
    "ClipBusyError",
    "ClipError",
    "ClipFinishedCallback",
    "ClipHandle",
    "ClipIndex",
    "ClipLayout",
    "ClipManager",
    "ClipRecorder",
    "ClipRetentionPeer",
    "ClipScan",
    "EventClip",
    "apply_clip_retention",
    "delete_clip",
    "label_slug",
    "read_sidecar",
    "recover_clip_part",
    "scan_clips",
    "sidecar_path",
    "snapshot_path",
    "write_sidecar",
]
