"""The live HLS views: playlist (LL-HLS parts, blocking reloads), init sections, segments, parts.

Registered by `views.async_register_hls_views`, on top of its base view and helpers.

URLs (under /api/lightnvr/hls/<camera>/)::

    live.m3u8[?_HLS_msn=N[&_HLS_part=M]]   live playlist; with the query: a blocking reload
    live/init/<id>.mp4                     its init sections (EXT-X-MAP)
    live/<sequence>.m4s                    its media segments
    live/<sequence>.<part>.m4s             its LL-HLS parts (EXT-X-PART, EXT-X-PRELOAD-HINT)

Every URI inside a playlist is signed like the segments' (`async_sign_path`, for the user who
asked for the playlist). A blocking reload is the playlist URL plus `_HLS_msn`/`_HLS_part`,
which a player appends itself: HA's signature covers the query, so a *signed* playlist URL
with those added is refused (401) before any view runs. A playlist fetched through a signed
URL therefore lists the parts but does not offer CAN-BLOCK-RELOAD (LL-HLS players then poll
it); one fetched with an auth header offers it.
"""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import hdrs, web
from homeassistant.components.http.auth import SIGN_QUERY_PARAM

from .live import LiveCamera
from .live_hls import LiveHls
from .live_io import async_init_bytes, async_part_bytes, async_segment_bytes
from .live_types import LiveSegment, LiveWindow
from .playlist import InitRef, LowLatency, PlaylistPart, PlaylistSegment, render_live_playlist
from .views import (
    _CAMERA,
    CONTENT_TYPE_INIT,
    CONTENT_TYPE_PLAYLIST,
    CONTENT_TYPE_SEGMENT,
    HLS_URL,
    LIVE_SIGN_EXPIRY,
    _bytes_response,
    _HlsView,
    _signer,
)

# Parts are listed for this many complete segments before the one being filled (as HA does:
# Apple's example keeps them for two segments; older ones are played as whole segments).
LL_PART_SEGMENTS = 2
# A blocking reload (or a hinted part) waits at most this many target durations, then is
# answered with what there is (RFC 8216bis 6.2.5.2 asks servers to answer within three).
LL_BLOCK_TARGETS = 3
# `_HLS_msn` more than this far past the segment being filled is refused with 400 (6.2.5.2).
LL_MAX_MSN_AHEAD = 2

_NO_CACHE = {hdrs.CACHE_CONTROL: "no-cache"}


def _blocking_request(request: web.Request) -> tuple[int | None, int | None]:
    """Return (`_HLS_msn`, `_HLS_part`) of a playlist request; HTTPBadRequest when malformed."""
    msn, part = request.query.get("_HLS_msn"), request.query.get("_HLS_part")
    if msn is None:
        if part is not None:  # a part without its segment: the spec says 400
            raise web.HTTPBadRequest(text="_HLS_part needs _HLS_msn")
        return None, None
    if not msn.isdigit() or (part is not None and not part.isdigit()):
        raise web.HTTPBadRequest(text="_HLS_msn and _HLS_part are numbers")
    return int(msn), int(part) if part is not None else None


class LivePlaylistView(_HlsView):
    """The live media playlist of a camera (LL-HLS included)."""

    url = f"{HLS_URL}/{_CAMERA}/live.m3u8"
    name = "api:lightnvr:hls:live"

    async def get(self, request: web.Request, camera_id: str) -> web.Response:
        """Start the camera's live HLS if needed; list its newest segments and parts."""
        service = self._service(camera_id)
        if not service.live.known(camera_id):
            raise web.HTTPNotFound
        msn, part = _blocking_request(request)
        window = await service.live.async_window(camera_id)
        if msn is not None and window.segments:
            window = await _async_block(service.live, camera_id, window, msn, part)
        if not window.segments:
            return web.Response(
                status=HTTPStatus.SERVICE_UNAVAILABLE,
                text="No video from this camera yet",
                headers={hdrs.RETRY_AFTER: "2", **_NO_CACHE},
            )
        body = _render(request, self, camera_id, window)
        return web.Response(
            text=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_PLAYLIST, **_NO_CACHE}
        )


async def _async_block(
    live: LiveHls, camera_id: str, window: LiveWindow, msn: int, part: int | None
) -> LiveWindow:
    """Wait until part `part` of segment `msn` (or the whole segment) is listed, bounded."""
    filling = window.segments[-1].sequence + 1
    if msn > filling + LL_MAX_MSN_AHEAD:
        raise web.HTTPBadRequest(text="_HLS_msn is too far in the future")
    camera = live.camera(camera_id)
    await camera.async_wait_until(
        lambda: camera.reached(msn, part), LL_BLOCK_TARGETS * window.target
    )
    return camera.window()


def _render(request: web.Request, view: _HlsView, camera_id: str, window: LiveWindow) -> str:
    sign = _signer(view.hass, request, LIVE_SIGN_EXPIRY)
    base = f"{HLS_URL}/{camera_id}/live"

    def init_ref(init_id: int) -> InitRef:
        return InitRef(uri=sign(f"{base}/init/{init_id}.mp4"), key=str(init_id))

    def parts(segment: LiveSegment | None, sequence: int) -> tuple[PlaylistPart, ...]:
        chunks = segment.parts if segment is not None else ()
        if segment is None and window.partial is not None:
            chunks = window.partial.parts
        return tuple(
            PlaylistPart(sign(f"{base}/{sequence}.{number}.m4s"), chunk.duration, chunk.keyframe)
            for number, chunk in enumerate(chunks)
        )

    with_parts = {segment.sequence for segment in window.segments[-LL_PART_SEGMENTS:]}
    segments = [
        PlaylistSegment(
            uri=sign(f"{base}/{segment.sequence}.m4s"),
            duration=segment.duration,
            start=segment.start,
            init=init_ref(segment.init.init_id),
            discontinuity=segment.discontinuity,
            independent=segment.independent,
            parts=parts(segment, segment.sequence) if segment.sequence in with_parts else (),
        )
        for segment in window.segments
    ]
    filling = window.segments[-1].sequence + 1
    partial = window.partial
    listed: PlaylistSegment | None = None
    hint = 0
    if partial is not None and partial.parts and partial.init is not None:
        listed = PlaylistSegment(
            uri="",
            duration=sum(chunk.duration for chunk in partial.parts),
            start=partial.parts[0].start,
            init=init_ref(partial.init.init_id),
            discontinuity=partial.discontinuity,
            independent=partial.parts[0].keyframe,
            parts=parts(None, filling),
        )
        hint = len(partial.parts)
    low_latency = LowLatency(
        part_target=window.part_target,
        preload_hint=sign(f"{base}/{filling}.{hint}.m4s"),
        partial=listed,
        # See the module docstring: a player cannot add _HLS_msn to a signed URL.
        can_block_reload=SIGN_QUERY_PARAM not in request.query,
    )
    return render_live_playlist(
        segments,
        media_sequence=window.media_sequence,
        discontinuity_sequence=window.discontinuity_sequence,
        target=window.target,
        low_latency=low_latency,
    )


class LiveInitView(_HlsView):
    """An init section of a live playlist."""

    url = f"{HLS_URL}/{_CAMERA}/live/init/{{init_id:[0-9]+}}.mp4"
    name = "api:lightnvr:hls:live:init"

    async def get(self, request: web.Request, camera_id: str, init_id: str) -> web.Response:
        """Return the init section."""
        _, camera = self._live_camera(camera_id)
        init = camera.init(int(init_id))
        data = await async_init_bytes(self.hass, init) if init is not None else None
        if data is None:
            raise web.HTTPNotFound
        return _bytes_response(request, data, CONTENT_TYPE_INIT, "private, max-age=3600")


class LiveSegmentView(_HlsView):
    """A media segment of a live playlist."""

    url = f"{HLS_URL}/{_CAMERA}/live/{{sequence:[0-9]+}}.m4s"
    name = "api:lightnvr:hls:live:segment"

    async def get(self, request: web.Request, camera_id: str, sequence: str) -> web.Response:
        """Return the segment (from memory, or from the recording being written)."""
        _, camera = self._live_camera(camera_id)
        segment = camera.segment(int(sequence))
        data = await async_segment_bytes(self.hass, segment) if segment is not None else None
        if data is None:
            raise web.HTTPNotFound
        return _bytes_response(request, data, CONTENT_TYPE_SEGMENT, "private, max-age=300")


class LivePartView(_HlsView):
    """An LL-HLS part of a live playlist: one chunk (`moof`+`mdat`) of a segment."""

    url = f"{HLS_URL}/{_CAMERA}/live/{{sequence:[0-9]+}}.{{part:[0-9]+}}.m4s"
    name = "api:lightnvr:hls:live:part"

    async def get(
        self, request: web.Request, camera_id: str, sequence: str, part: str
    ) -> web.Response:
        """Return the part; the hinted next part is waited for (EXT-X-PRELOAD-HINT)."""
        _, camera = self._live_camera(camera_id)
        msn, index = int(sequence), int(part)
        data = await _async_part(self, camera, msn, index)
        if data is None:
            raise web.HTTPNotFound
        return _bytes_response(request, data, CONTENT_TYPE_SEGMENT, "private, max-age=300")


async def _async_part(view: _HlsView, camera: LiveCamera, msn: int, index: int) -> bytes | None:
    found = camera.part(msn, index)
    window = camera.window()
    filling = window.partial.sequence if window.partial is not None else None
    # A player asks for the hinted part before it exists: hold the request until it does.
    # Only the segment being filled (or the next one) is waited for, anything else is late.
    if found is None and filling is not None and filling <= msn <= filling + 1:
        await camera.async_wait_until(
            lambda: camera.part(msn, index) is not None or msn < camera.filling,
            LL_BLOCK_TARGETS * window.target,
        )
        found = camera.part(msn, index)
    if found is None:
        return None
    chunk, init = found
    return await async_part_bytes(view.hass, chunk, init)
