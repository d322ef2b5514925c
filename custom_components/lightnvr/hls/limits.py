"""How much work one recorded (VOD) playlist may cause, and how many are built at once.

A VOD playlist lists every recording file of its range, each with its own signed URL: Home
Assistant signs exact paths (`async_sign_path` puts the path and query into the token and the
auth middleware compares them), so there is no token for a whole folder, and each file costs
one signature (~25 µs of event-loop time on a desktop core, several times that on a small ARM
host) plus one walk of its boxes in the executor. The time limit of a range (two days) does
not bound that: a camera whose connection drops every few seconds leaves tens of thousands of
tiny files a day. So:

- one playlist lists at most `VOD_MAX_FILES` recording files, or is refused (400, saying the
  limit): see `VOD_MAX_FILES` for why it is refused rather than cut;
- the signatures are made on the event loop (`async_sign_path` is a callback: it must run
  there) `VOD_SIGN_BATCH` at a time, yielding in between, so no single step blocks the loop;
- at most `VOD_BUILDS_TOTAL` playlists are built at once, and each user has at most
  `VOD_BUILDS_PER_USER` builds running or waiting (past that: 429), so a loop of requests
  cannot queue unbounded work. A client that goes away does not free its slot before the
  executor job it started has finished: threads cannot be stopped, and otherwise a loop of
  requests dropped at once could keep every executor thread busy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from homeassistant.core import HomeAssistant

# Recording files in one playlist. A day of the default 60 s files is 1,440; the rest leaves
# room for files cut short by reconnects. A range over more (shorter files, or a longer range)
# is refused with a clear message rather than truncated: a truncated VOD playlist still ends
# with EXT-X-ENDLIST, so the player shows a shorter recording as if it were all there was, and
# on an NVR silently missing footage is worse than "ask for a shorter range" (the media
# browser's hour items fit: an hour of the shortest configurable files, 10 s, is 360). Kept
# below the fragment cache's 2,048 files (vod.DEFAULT_CACHE_FILES) so that the indexes of one
# playlist stay cached between its requests.
VOD_MAX_FILES = 2000
# Signatures made on the event loop between two yields: ~1 ms measured on a desktop core,
# a few ms expected on a Raspberry Pi class host.
VOD_SIGN_BATCH = 50
# Playlists built at once, in all: their indexing and rendering is CPU-bound executor work, and
# small Home Assistant hosts have two to four cores.
VOD_BUILDS_TOTAL = 2
# Builds one user may have running or waiting at once. A player fetches a VOD playlist once;
# two leaves room for a second player (or a retry) of the same user.
VOD_BUILDS_PER_USER = 2


class TooManyBuildsError(Exception):
    """The user already has the most VOD playlist builds running or waiting."""


class TooManyRecordingsError(Exception):
    """The range holds more recording files than one playlist may list."""

    def __init__(self, count: int, limit: int) -> None:
        """Remember how many files the range holds and the limit."""
        super().__init__(f"{count} recordings, at most {limit} in one playlist")
        self.count = count
        self.limit = limit


class VodBuildLimiter:
    """Admits VOD playlist builds: a few at once in all, fewer per user."""

    def __init__(self, total: int = VOD_BUILDS_TOTAL, per_user: int = VOD_BUILDS_PER_USER) -> None:
        """Allow `total` builds at once, and `per_user` running or waiting per user."""
        self._slots = asyncio.Semaphore(total)
        self._per_user = per_user
        self._pending: dict[str, int] = {}
        self.running = 0

    def pending(self, user: str) -> int:
        """Return the builds of `user` running or waiting."""
        return self._pending.get(user, 0)

    @asynccontextmanager
    async def slot(self, user: str) -> AsyncIterator[None]:
        """Hold a build slot for `user`; wait for one if all are taken.

        Raises TooManyBuildsError at once when `user` already has `per_user` builds running or
        waiting: their waiting is bounded by the number of users, not by the requests sent.
        """
        pending = self._pending.get(user, 0)
        if pending >= self._per_user:
            raise TooManyBuildsError(user)
        self._pending[user] = pending + 1
        try:
            async with self._slots:
                self.running += 1
                try:
                    yield
                finally:
                    self.running -= 1
        finally:
            left = self._pending[user] - 1
            if left:
                self._pending[user] = left
            else:
                del self._pending[user]


async def run_to_end[*Ts, T](hass: HomeAssistant, target: Callable[[*Ts], T], *args: *Ts) -> T:
    """Run `target` in the executor; when cancelled, return only after it has finished.

    HA cancels a view's handler when its client goes away, but not the thread it started:
    awaiting the job to its end keeps the caller's build slot taken for as long as the work
    really runs.
    """
    future = hass.async_add_executor_job(target, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: the caller is gone, nobody else will look
        raise
