"""Review: what the dashboard card asks about recordings and events.

- `timeline`: recorded spans, gaps and event clips of a time range, and where a recorded
  playback starts, from the in-memory day indexes (pure; no Home Assistant, no disk);
- `journal`: when each camera's recording was switched off or the camera was away (state
  changes since Home Assistant started), the reasons of the timeline's gaps;
- `views`: the HTTP view serving event snapshots (the timeline's thumbnails).

The websocket commands themselves are in `websocket_api` at the top of the integration.
"""

from __future__ import annotations
