"""No secret reaches a log line, a repr, an error detail or diagnostics.

Secrets come in many shapes: URL user info (with "@", ":", "/" or percent-encoding in the
password), query parameters (`password=`, `token=`, `api_key=` … in any case), logins written
into a path, a URL encoded inside another URL, and passwords we know that show up elsewhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
import dataclasses
import importlib
import json
import logging
from pathlib import Path
import pkgutil
import re
import socket
from urllib.parse import quote, quote_plus

from homeassistant.const import CONF_NAME, CONF_PASSWORD, CONF_USERNAME
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components import lightnvr
from custom_components.lightnvr.const import (
    CONF_DETECT_MOTION,
    CONF_GO2RTC_URL,
    CONF_OBJECT_API_KEY,
    CONF_OBJECT_URL,
    CONF_RECORD,
    CONF_STORAGE_PATH,
    CONF_STREAM_URL,
    CONF_SUBSTREAM_URL,
    DOMAIN,
)
from custom_components.lightnvr.detection.pipeline import DetectionOptions
from custom_components.lightnvr.detection.remote import RemoteOptions
from custom_components.lightnvr.engine.go2rtc.config import (
    Go2RtcConfig,
    Go2RtcSettings,
    IceServer,
    PersistedState,
)
from custom_components.lightnvr.models import CameraConfig, HubOptions
from custom_components.lightnvr.source import (
    CameraSource,
    Redactor,
    SourceError,
    redact_url,
    url_secrets,
    validate_url,
)

from .conftest import (
    CAMERA_PASSWORD,
    CAMERA_USER,
    camera_subentry,
    hub_entry_data,
    open_stream_url_form,
)
from .infra.rtsp import RtspServer

# ----- the one URL redaction ----------------------------------------------------------------------

# (text, secrets that must be gone, parts that must stay)
SHAPES = {
    "userinfo": (
        "rtsp://admin:hunter2pw@10.0.0.5:554/Streaming/Channels/101",
        ["hunter2pw", "admin:"],
        ["rtsp://***@10.0.0.5:554/Streaming/Channels/101"],
    ),
    "at in password": (
        "rtsp://admin:p@ssw0rd@cam.local/live",
        ["ssw0rd"],
        ["rtsp://***@cam.local/live"],
    ),
    "percent-encoded password": (
        "rtsp://admin:p%40ss%3Aw%2Frd@cam.local/live?channel=1",
        ["p%40ss", "%3Aw%2Frd"],
        ["rtsp://***@cam.local/live?channel=1"],
    ),
    "colon in password": (
        "rtsps://admin:pa:ss:wd@cam:322/s",
        ["pa:ss", "ss:wd"],
        ["rtsps://***@cam:322/s"],
    ),
    # A raw "/" makes the URL ambiguous; the user info runs to the last "@" (see source.py).
    "slash and at in password": (
        "rtsp://admin:p@ss/w:rd@host:554/path",
        ["ss/w", "w:rd"],
        ["rtsp://***@host:554/path"],
    ),
    "query password": (
        "http://cam.local/flv?user=admin&password=Secr3tQ&channel=1",
        ["Secr3tQ"],
        ["http://cam.local/flv?user=admin&password=***&channel=1"],
    ),
    "query pwd": (
        "http://cam/cgi-bin/snapshot.cgi?loginuse=admin&pwd=Pwd5ecret&chn=1",
        ["Pwd5ecret"],
        ["/cgi-bin/snapshot.cgi?loginuse=admin&pwd=***&chn=1"],
    ),
    "query token": (
        "https://cloud.example/live.flv?token=eyJhbGciOi.tok&subtype=0",
        ["eyJhbGciOi"],
        ["https://cloud.example/live.flv?token=***&subtype=0"],
    ),
    "query api_key": (
        "http://127.0.0.1:32168/v1/vision/detection?api_key=Ak-123456",
        ["Ak-123456"],
        ["http://127.0.0.1:32168/v1/vision/detection?api_key=***"],
    ),
    "mixed case name": (
        "rtmp://media.example/live/cam?PassWord=MiXeD99&channel=1&subtype=0",
        ["MiXeD99"],
        ["rtmp://media.example/live/cam?PassWord=***&channel=1&subtype=0"],
    ),
    "camel case key and signatures": (
        "https://s3.example/v.mp4?accessKey=AKIAXX1&X-Amz-Signature=abcdef12&X-Amz-Expires=60",
        ["AKIAXX1", "abcdef12"],
        ["accessKey=***&X-Amz-Signature=***&X-Amz-Expires=60"],
    ),
    "rtmp stream key": (
        "rtmp://a.example/live?key=StreamK3y",
        ["StreamK3y"],
        ["rtmp://a.example/live?key=***"],
    ),
    "login in the path": (
        "rtsp://10.0.0.9:554/user=admin&password=PathPw77&channel=1&stream=0.sdp",
        ["PathPw77"],
        ["rtsp://10.0.0.9:554/user=admin&password=***&channel=1&stream=0.sdp"],
    ),
    # How go2rtc's API takes a source: percent-encoded in another URL's query.
    "encoded URL inside a URL": (
        "PUT http://127.0.0.1:1984/api/streams?name=c&src=rtsp%3A%2F%2Fadmin%3AN3sted%2Fpw%40"
        "cam%2Fx%3Ftoken%3DNtok99%26ch%3D1",
        ["N3sted", "Ntok99"],
        ["?name=c&src=rtsp%3A%2F%2F***%40cam%2Fx%3Ftoken%3D***%26ch%3D1"],
    ),
    "several URLs in one error": (
        "Connection to rtsp://a:Pw1xx@h1/s failed; fallback http://h2/flv?password=Pw2yy&x=1 "
        "also failed ('rtmp://u:Pw3zz@h3/l')",
        ["Pw1xx", "Pw2yy", "Pw3zz"],
        ["Connection to rtsp://***@h1/s failed; fallback http://h2/flv?password=***&x=1 ", "h3/l"],
    ),
    "FFmpeg error": (
        "[Errno 111] Connection refused: 'rtsp://viewer:pa%40ss@127.0.0.1:9/x?user=admin&pass=zz9'",
        ["pa%40ss", "zz9"],
        ["[Errno 111] Connection refused: 'rtsp://***@127.0.0.1:9/x?user=admin&pass=***"],
    ),
}


@pytest.mark.parametrize(("text", "secrets", "kept"), SHAPES.values(), ids=SHAPES.keys())
def test_redact_url_hides_every_secret_shape(
    text: str, secrets: list[str], kept: list[str]
) -> None:
    redacted = redact_url(text)
    for secret in secrets:
        assert secret not in redacted
    for part in kept:
        assert part in redacted
    assert redact_url(redacted) == redacted  # redacting twice changes nothing


@pytest.mark.parametrize(
    "text",
    [
        "rtsp://cam.local:554/cam/realmonitor?channel=1&subtype=0",
        "http://cam/video.mjpg?keyframe=1&resolution=640x480&user=admin",
        "rtsp://192.168.1.10/Streaming/Channels/101",
        "ffmpeg:rtsp://cam/x#video=h264",
        "rtsp://cam/x?password=&channel=1",  # nothing to hide
        "no URL here: admin@example.com, password is set",
    ],
)
def test_redact_url_keeps_what_is_no_secret(text: str) -> None:
    assert redact_url(text) == text


def test_url_secrets_are_found_written_and_decoded() -> None:
    found = url_secrets("rtsp://u:p%40ss@h/x?token=a%2Fb&x=1&user=admin")
    assert {"p%40ss", "p@ss", "a%2Fb", "a/b"} <= set(found)
    assert "admin" not in found
    assert "1" not in found


def test_redactor_finds_known_secrets_in_any_encoding() -> None:
    secret = "p@ss w/rd:1"
    forms = [
        secret,
        quote(secret, safe=""),
        quote(secret),  # "/" left as is
        quote_plus(secret),
        quote(secret, safe="").lower(),  # lower-case hex
        quote(quote(secret, safe=""), safe=""),  # encoded twice: a URL inside a URL's query
    ]
    assert Redactor([secret])(" | ".join(forms)) == " | ".join(["***"] * len(forms))
    assert Redactor(["abc"])("abc") == "abc"  # too short to hide in free text
    # A raw "&" ends a parameter value for `redact_url`; a known secret is hidden whole.
    assert Redactor(["amp&tail"])("http://cam/flv?password=amp&tail") == (
        "http://cam/flv?password=***"
    )


def test_camera_source_redacts_its_password_outside_urls() -> None:
    source = CameraSource("rtsp://cam/x", "viewer", "Hunter22x")
    message = "401 for viewer with password Hunter22x (Hunter22x%21 was tried too)"
    redacted = source.redact(message)
    assert "Hunter22x" not in redacted
    assert "401 for viewer" in redacted


def test_invalid_port_detail_does_not_quote_the_password() -> None:
    # urlsplit takes "Seed77" (the password before its raw "/") for the port.
    with pytest.raises(SourceError) as err:
        validate_url("rtsp://admin:Seed77/rest@host/x")
    assert err.value.reason == "invalid_url"
    assert "Seed77" not in err.value.detail
    assert "Seed77" not in str(err.value)


# ----- settings objects ---------------------------------------------------------------------------

SEED = "R3pr-Seed-pw"


def _settings_objects() -> dict[str, object]:
    return {
        "CameraSource": CameraSource(f"http://cam/flv?user=admin&password={SEED}", "admin", SEED),
        "CameraConfig": CameraConfig.from_subentry(
            "cam1",
            {
                CONF_NAME: "Porch",
                CONF_STREAM_URL: f"rtsp://cam/main?token={SEED}",
                CONF_SUBSTREAM_URL: f"rtsp://admin:{SEED}@cam/sub",
                CONF_USERNAME: "admin",
                CONF_PASSWORD: SEED,
            },
        ),
        "HubOptions": HubOptions.from_entry(
            {
                CONF_STORAGE_PATH: "/media/lightnvr",
                CONF_GO2RTC_URL: f"http://admin:{SEED}@127.0.0.1:1984",
                CONF_OBJECT_URL: f"http://det:32168/?api_key={SEED}",
                CONF_OBJECT_API_KEY: SEED,
            },
            {},
        ),
        "DetectionOptions": DetectionOptions(object_url=f"http://u:{SEED}@det:32168", api_key=SEED),
        "IceServer": IceServer(("turn:turn.example:3478",), "user", SEED),
        "Go2RtcSettings": Go2RtcSettings(
            ice_servers=(IceServer(("turn:turn.example:3478",), "user", SEED),)
        ),
        "PersistedState": PersistedState(api_password=SEED, rtsp_password=SEED),
        "Go2RtcConfig": Go2RtcConfig(
            path=Path("/config/go2rtc.yaml"),
            api_port=1,
            rtsp_port=2,
            webrtc_port=3,
            api_socket=None,
            api_username="api",
            api_password=SEED,
            rtsp_username="rtsp",
            rtsp_password=SEED,
            version=(1, 9, 13),
            streams={"lightnvr_cam1": f"rtsp://admin:{SEED}@cam/x#video=copy"},
        ),
    }


@pytest.mark.parametrize("name", list(_settings_objects()))
def test_settings_repr_holds_no_secret(name: str) -> None:
    obj = _settings_objects()[name]
    assert dataclasses.is_dataclass(obj)
    text = repr(obj)
    assert SEED not in text
    assert SEED not in f"{obj}"
    assert text.startswith(f"{type(obj).__name__}(")  # still a useful repr


def test_remote_options_repr_holds_no_secret() -> None:
    assert SEED not in repr(RemoteOptions(url=f"http://u:{SEED}@det:32168", api_key=SEED))


def test_settings_repr_keeps_the_harmless_parts() -> None:
    objects = _settings_objects()
    assert "http://cam/flv?user=admin&password=***" in repr(objects["CameraSource"])
    assert "'lightnvr_cam1': 'rtsp://***@cam/x#video=copy'" in repr(objects["Go2RtcConfig"])
    assert "api_username='api'" in repr(objects["Go2RtcConfig"])


_SECRET_FIELD_RE = re.compile(r"password|passwd|credential|api_key|apikey|secret|token")
# Names that match the pattern but hold no secret: an ONVIF media profile's token is its public
# id, which the camera lists to anyone who may ask (like a stream's path).
_NOT_SECRET = {"custom_components.lightnvr.onvif.client.OnvifProfile.token"}


def _secret_fields() -> list[str]:
    """Every dataclass field of the integration whose name says it holds a secret."""
    found = []
    for info in pkgutil.walk_packages(lightnvr.__path__, f"{lightnvr.__name__}."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj):
                if obj.__module__ != module.__name__:
                    continue
                found += [
                    f"{module.__name__}.{obj.__qualname__}.{item.name}"
                    for item in dataclasses.fields(obj)
                    if _SECRET_FIELD_RE.search(item.name) and item.repr
                ]
    return [name for name in found if name not in _NOT_SECRET]


def test_every_secret_field_is_left_out_of_repr() -> None:
    """Also catches settings classes added later with a `…_password` field in their repr."""
    assert not _secret_fields()


# ----- end to end through Home Assistant ----------------------------------------------------------

QUERY_SEED = "Qry-seed-4821"  # in a streaming camera's query
FLV_SEED = "Flv-seed-7730"  # in an unreachable HTTP-FLV camera's query
LOGIN_SEED = "Lgn-seed-5519"  # the same camera's stored password
AT_SEED = "At@seed-3307"  # a legacy URL with a raw "@" in its password
KEY_SEED = "Key-seed-9183"  # the detection server's key, in its URL and setting
GO2RTC_SEED = "G2r-seed-6650"  # an external go2rtc's login
PROBE_SEED = "Prb-seed-2274"  # a camera the config flow fails to probe
SEEDS = (
    QUERY_SEED,
    FLV_SEED,
    LOGIN_SEED,
    AT_SEED,
    "seed-3307",
    KEY_SEED,
    GO2RTC_SEED,
    PROBE_SEED,
    CAMERA_PASSWORD,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def leaky_hub(
    hass: HomeAssistant, rtsp_camera: RtspServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[tuple[MockConfigEntry, int]]:
    """A hub whose settings hold secrets in every shape: one camera streams, two are refused."""
    caplog.set_level(logging.DEBUG, logger="custom_components.lightnvr")
    refused = _free_port()  # nothing listens: connection refused at once
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="LightNVR",
        data={
            **hub_entry_data(tmp_path / "recordings"),
            CONF_GO2RTC_URL: f"http://admin:{GO2RTC_SEED}@127.0.0.1:{refused}",
            CONF_OBJECT_URL: f"http://127.0.0.1:{refused}/?api_key={KEY_SEED}",
            CONF_OBJECT_API_KEY: KEY_SEED,
        },
        subentries_data=[
            camera_subentry(
                "Streaming",
                rtsp_camera.auth_url("cam", credentials=False)
                + f"?user=admin&password={QUERY_SEED}",
                **{CONF_USERNAME: CAMERA_USER, CONF_PASSWORD: CAMERA_PASSWORD},
            ),
            camera_subentry(
                "Refused FLV",
                f"http://127.0.0.1:{refused}/flv?user=admin&password={FLV_SEED}&channel=1",
                **{CONF_USERNAME: "admin", CONF_PASSWORD: LOGIN_SEED},
            ),
            camera_subentry("Refused legacy", f"rtsp://admin:{AT_SEED}@127.0.0.1:{refused}/x"),
        ],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    yield entry, refused
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


async def test_no_secret_in_logs_diagnostics_or_probe_details(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    rtsp_camera: RtspServer,
    leaky_hub: tuple[MockConfigEntry, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Streaming, refused and probed cameras log and show their URLs, never their secrets."""
    entry, refused = leaky_hub
    assert await async_setup_component(hass, "diagnostics", {})
    engine = entry.runtime_data.engine
    hubs = {sub.title: engine.hub(sub_id) for sub_id, sub in entry.subentries.items()}
    await rtsp_camera.async_wait_for(lambda: hubs["Streaming"].stats().packets > 10)
    # last_error is set right after the failure was logged.
    await rtsp_camera.async_wait_for(
        lambda: all(hubs[name].last_error for name in ("Refused FLV", "Refused legacy"))
    )

    # The config flow probes a new camera and shows why it failed.
    result = await open_stream_url_form(hass, entry.entry_id)
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {
            CONF_NAME: "Probed",
            CONF_STREAM_URL: f"http://127.0.0.1:{refused}/live.flv?user=admin&pwd={PROBE_SEED}",
            CONF_RECORD: True,
            CONF_DETECT_MOTION: False,
        },
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}
    placeholders = result["description_placeholders"]
    assert placeholders is not None
    detail = placeholders["detail"]
    assert f"127.0.0.1:{refused}/live.flv?user=admin&pwd=***" in detail
    assert PROBE_SEED not in json.dumps(result, default=str)

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    text = json.dumps(diagnostics)
    logs = caplog.text
    # The URLs are there, redacted: what the seeds are looked for in is not empty.
    assert "/cam?user=admin&password=***" in text
    assert "/flv?user=admin&password=***&channel=1" in logs
    assert f"rtsp://***@127.0.0.1:{refused}/x" in logs
    assert "opened rtsp://127.0.0.1:" in logs
    for seed in SEEDS:
        assert seed not in text, seed
        assert seed not in logs, seed
