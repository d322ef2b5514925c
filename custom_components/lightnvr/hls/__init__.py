"""HLS served by Home Assistant itself: live playlists per camera and recorded (VOD) playlists.

- `playlist`: pure rendering of live (with LL-HLS parts) and VOD media playlists.
- `live`, `live_hls`, `live_types`, `live_io`, `live_sink`: live segments and parts from the
  camera muxer's fragments (the very ones the recorder writes), kept in memory.
- `vod`: the fragment index of finished recordings, and the shared wall-clock timeline.
- `views`, `live_views`: the HTTP views under /api/lightnvr/hls/…, behind HA auth with
  signed URLs (blocking playlist reload for authenticated players).
- `limits`: how many files one VOD playlist may list, and how many are built at once.
"""

from __future__ import annotations

from .views import (
    HLS_URL,
    HlsRegistry,
    HlsService,
    async_register_hls_views,
    live_playlist_path,
    vod_playlist_path,
)

__all__ = [
    "HLS_URL",
    "HlsRegistry",
    "HlsService",
    "async_register_hls_views",
    "live_playlist_path",
    "vod_playlist_path",
]
