"""A go2rtc protocol double: a small program that behaves like go2rtc 1.9.x for a supervisor.

No go2rtc binary can be installed on the test machines, so the go2rtc engine is tested against
this double, started as a real subprocess exactly like the real binary (``<binary> -c <config>``).
It follows ``../shared/go2rtc-api.md`` (the contract the engine is written against):

* **CLI**: ``-c``/``--config`` (repeatable; a file, inline ``{…}`` YAML or ``a.b=value``),
  ``-v``/``--version`` printing ``go2rtc version 1.9.13 (d0ub1e0) linux/amd64``; an unknown flag
  prints usage and exits 2.
* **Logs** on stdout in zerolog's console format (``HH:MM:SS.mmm LVL [module] msg key=value``),
  with go2rtc's startup lines, ``INF [api] listen addr=…`` once the API socket is bound, and
  ``ERR [api] listen error="… address already in use"`` (process keeps running without API) when a
  port is taken. SIGTERM prints ``exit with signal: terminated`` to stderr and exits 0.
* **HTTP API** (TCP ``api.listen`` and/or ``api.unix_listen``): ``GET /api``,
  ``GET/PUT/PATCH/DELETE /api/streams`` (PUT persists into the config file), ``POST /api/webrtc``
  (JSON or SDP offer), ``GET /api/frame.jpeg`` (200 with an **empty body** when the source is
  offline), ``WebSocket /api/ws`` (``webrtc`` offer/answer and ``webrtc/candidate`` trickle),
  ``POST /api/exit``; Basic auth with ``api.username``; ``local_auth`` and ``allow_paths``
  from 1.9.12.
* **Streams are on demand** like go2rtc's: the first consumer makes the stream's producer dial the
  source (PyAV, one connection per stream, shared by every consumer); the last one leaving stops
  it. ``/api/streams`` lists producers with ``bytes_recv`` growing while they receive.
* **RTSP restream** at ``rtsp://<rtsp.listen>/<name>``: a minimal RTSP server (OPTIONS, DESCRIBE,
  SETUP with TCP interleaving only, PLAY, GET_PARAMETER, TEARDOWN) that packetises the producer's
  H.264 or H.265 video (RFC 7798) and AAC (RFC 3640) or G.711 audio into RTP itself, one track per
  m-line, ``?video``/``?audio`` selecting tracks. So a restream client and the camera see genuine
  go2rtc semantics: any number of consumers, **one** camera connection.
* **WebRTC** answers come from aiortc, fed with the producer's video packets (no re-encoding):
  H.264, or H.265 to a viewer that offers it; "codecs not matched" otherwise. When
  ``webrtc.listen`` is on 127.0.0.1 only loopback candidates are offered.

Limits (on purpose): no audio over WebRTC; video other than H.264/H.265 is refused like "codecs
not matched"; only the first source of a stream is used; the double never binds beyond
127.0.0.1.

**Control knobs** for tests: the JSON file named by the ``GO2RTC_DOUBLE_CONTROL`` environment
variable, re-read every 50 ms. Persistent knobs apply to every process started while present;
one-shot knobs name the pid they apply to, so a restarted process is not affected::

    {
      "version": "1.8.4",           # -v and GET /api report this version
      "refuse": ["api", "rtsp"],    # act as if these listeners' ports were taken
      "startup_delay": 30,          # seconds before any listener is opened
      "crash_after": 0.5,           # every process exits (code 2) this long after startup
      "crash": [pid],               # that process exits now (code 2, panic on stderr)
      "hang": [pid],                # that process stops answering anything (still alive)
      "hang_hard": [pid],           # same, and it also ignores SIGTERM
      "freeze": {"<pid>": ["name"]} # that stream (the current registration) stops delivering
    }

A frozen stream keeps its camera connection but its bytes stop growing; only registering the
stream again (a new stream object) or restarting the process cures it, like a wedged go2rtc
stream. ``fixtures.py`` writes launchers (an executable that ``exec``s this venv's Python on
``double.py``) and control files for the tests.
"""

from __future__ import annotations

from pathlib import Path

DOUBLE_SCRIPT = Path(__file__).with_name("double.py")
CONTROL_ENV = "GO2RTC_DOUBLE_CONTROL"
DEFAULT_VERSION = "1.9.13"

__all__ = ["CONTROL_ENV", "DEFAULT_VERSION", "DOUBLE_SCRIPT"]
