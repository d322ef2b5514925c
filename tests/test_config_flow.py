"""Config flow: the hub entry, its options, and camera subentries probed against real sources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
import socket
import wave

from aiohttp import web
from homeassistant.config_entries import SOURCE_RECONFIGURE, SOURCE_USER, ConfigEntryState
from homeassistant.const import CONF_NAME, CONF_PASSWORD, CONF_USERNAME
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.lightnvr.const import (
    CONF_DETECT_MOTION,
    CONF_ENGINE,
    CONF_MIN_FREE_GB,
    CONF_RECORD,
    CONF_RETENTION_DAYS,
    CONF_STORAGE_PATH,
    CONF_STREAM_URL,
    CONF_SUBSTREAM_PASSWORD,
    CONF_SUBSTREAM_URL,
    CONF_SUBSTREAM_USERNAME,
    DOMAIN,
    ENGINE_AUTO,
    ENGINE_EMBEDDED,
    ENGINE_GO2RTC,
    SUBENTRY_CAMERA,
)
from custom_components.lightnvr.models import CameraConfig

from .conftest import (
    CAMERA_PASSWORD,
    CAMERA_USER,
    camera_subentry,
    hub_entry_data,
    open_stream_url_form,
)
from .infra.rtsp import RtspServer


def _hub_input(storage: Path, engine: str = ENGINE_EMBEDDED) -> dict[str, object]:
    return {
        CONF_ENGINE: engine,
        CONF_STORAGE_PATH: str(storage),
        CONF_RETENTION_DAYS: 14,
        CONF_MIN_FREE_GB: 5,
    }


async def test_hub_flow_creates_entry_with_defaults(hass: HomeAssistant, tmp_path: Path) -> None:
    """The form offers the media folder by default and creates the single hub."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.FORM
    schema_defaults = {
        str(key): key.default() for key in result["data_schema"].schema if callable(key.default)
    }
    assert schema_defaults[CONF_ENGINE] == ENGINE_AUTO
    assert schema_defaults[CONF_STORAGE_PATH] == str(Path(hass.config.path("media"), "lightnvr"))

    storage = tmp_path / "nvr"
    result = await hass.config_entries.flow.async_configure(result["flow_id"], _hub_input(storage))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {
        CONF_ENGINE: ENGINE_EMBEDDED,
        CONF_STORAGE_PATH: str(storage),
        CONF_RETENTION_DAYS: 14,
        CONF_MIN_FREE_GB: 5.0,
        "max_storage_gb": 0.0,
        "segment_seconds": 60,
        "object_labels": ["person"],
        "object_min_confidence": 0.6,
        "object_only_while_motion": True,
        "event_clips": True,
        "event_retention_days": 30,
        "go2rtc_webrtc_lan": True,
        "max_viewers_per_camera": 10,
        "max_viewers": 50,
        # No archive: stored as such, so options can switch a configured one off again.
        "archive_path": "",
        "archive_after_days": 0,
        "archive_at_percent": 0,
        "archive_max_mbps": 0.0,
        "archive_retention_days": 0,
        "archive_max_gb": 0.0,
    }
    assert storage.is_dir()
    await hass.async_block_till_done()
    assert result["result"].state is ConfigEntryState.LOADED

    # One hub per Home Assistant.
    again = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert again["type"] is FlowResultType.ABORT
    assert again["reason"] == "single_instance_allowed"


async def test_hub_flow_errors(hass: HomeAssistant, tmp_path: Path) -> None:
    """An engine this version cannot run and an unwritable folder are refused, then fixed."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _hub_input(blocker / "sub", engine=ENGINE_GO2RTC)
    )
    assert result["type"] is FlowResultType.FORM
    # No go2rtc is installed on this machine: the go2rtc engine is refused with the reason.
    assert result["errors"] == {
        CONF_ENGINE: "go2rtc_not_usable",
        CONF_STORAGE_PATH: "storage_not_writable",
    }
    assert "go2rtc" in result["description_placeholders"]["detail"]
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _hub_input(Path("relative/path"))
    )
    assert result["errors"] == {CONF_STORAGE_PATH: "storage_not_writable"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _hub_input(tmp_path / "ok")
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_options_flow_changes_settings_and_reloads(
    hass: HomeAssistant, tmp_path: Path
) -> None:
    """Options are validated like the first step and applied by a reload."""
    entry = MockConfigEntry(domain=DOMAIN, data=hub_entry_data(tmp_path / "a"))
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], _hub_input(tmp_path / "b", engine=ENGINE_GO2RTC)
    )
    assert result["errors"] == {CONF_ENGINE: "go2rtc_not_usable"}
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {**_hub_input(tmp_path / "b"), "object_url": "ftp://detector", "object_api_key": "k1"},
    )
    assert result["errors"] == {"object_url": "invalid_object_url"}
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            **_hub_input(tmp_path / "b", engine=ENGINE_AUTO),
            "object_url": "http://127.0.0.1:32168",
            "object_api_key": "k1",
            "object_labels": ["Person", "car", " "],
            "max_viewers_per_camera": 3,
            "max_viewers": 12,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    options = entry.runtime_data.options
    assert (options.viewer_limits.per_camera, options.viewer_limits.total) == (3, 12)
    assert options.storage_path == tmp_path / "b"
    assert options.retention_days == 14
    assert options.object_labels == ("car", "person")
    assert options.object_api_key == "k1"

    # The API key is never shown again; submitting the form without it keeps it.
    result = await hass.config_entries.options.async_init(entry.entry_id)
    suggested = [
        (key.description or {}).get("suggested_value")
        for key in result["data_schema"].schema
        if str(key) == "object_api_key"
    ]
    assert suggested == [None]
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {**_hub_input(tmp_path / "b"), "object_url": "http://127.0.0.1:32168"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert entry.runtime_data.options.object_api_key == "k1"


async def test_archive_settings(hass: HomeAssistant, tmp_path: Path) -> None:
    """An archive folder must exist, be writable, stay apart from the recordings and have a rule.

    The accepted settings reach HubOptions; clearing the folder in the options turns it off.
    """
    storage = tmp_path / "rec"
    archive = tmp_path / "nas"
    archive.mkdir()
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})

    async def submit(**archive_input: object) -> dict[str, object]:
        return await hass.config_entries.flow.async_configure(
            result["flow_id"], {**_hub_input(storage), **archive_input}
        )

    # Missing (an unmounted share is not created for it) and relative: not usable.
    for path in (tmp_path / "missing", "relative/nas"):
        refused = await submit(archive_path=str(path), archive_after_days=30)
        assert refused["errors"] == {"archive_path": "archive_not_usable"}
    # A file, not a folder.
    (tmp_path / "file").write_text("x")
    refused = await submit(archive_path=str(tmp_path / "file"), archive_after_days=30)
    assert refused["errors"] == {"archive_path": "archive_not_usable"}
    # Inside the recordings folder, the recordings folder itself, or around it.
    (storage / "old").mkdir(parents=True)
    for path in (storage / "old", storage, tmp_path):
        refused = await submit(archive_path=str(path), archive_after_days=30)
        assert refused["errors"] == {"archive_path": "archive_inside_storage"}
    # A folder but no rule saying when recordings move.
    refused = await submit(archive_path=str(archive), archive_after_days=0, archive_at_percent=0)
    assert refused["errors"] == {"archive_after_days": "archive_no_rule"}

    created = await submit(
        archive_path=f" {archive} ",
        archive_after_days=0,
        archive_at_percent=80,
        archive_max_mbps=12.5,
        archive_retention_days=365,
        archive_max_gb=2000,
    )
    assert created["type"] is FlowResultType.CREATE_ENTRY
    assert {k: v for k, v in created["data"].items() if k.startswith("archive_")} == {
        "archive_path": str(archive),
        "archive_after_days": 0,
        "archive_at_percent": 80,
        "archive_max_mbps": 12.5,
        "archive_retention_days": 365,
        "archive_max_gb": 2000.0,
    }
    # The write test leaves nothing behind (the archive tier itself may keep files there).
    assert not [p for p in archive.iterdir() if p.name.startswith(".lightnvr-write-test")]
    await hass.async_block_till_done()
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    options = entry.runtime_data.options
    assert options.archive_path == archive
    assert (options.archive_after_days, options.archive_at_percent) == (0, 80)
    assert (options.archive_max_mbps, options.archive_max_gb) == (12.5, 2000.0)
    assert options.archive_retention_days == 365

    # The options form shows the folder; submitting it empty switches the archive off.
    flow = await hass.config_entries.options.async_init(entry.entry_id)
    suggested = {
        str(key): (key.description or {}).get("suggested_value")
        for key in flow["data_schema"].schema
    }
    assert suggested["archive_path"] == str(archive)
    done = await hass.config_entries.options.async_configure(flow["flow_id"], _hub_input(storage))
    assert done["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert entry.runtime_data.options.archive_path is None
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


# ----- camera subentries ----------------------------------------------------------------------


@pytest.fixture
async def hub(hass: HomeAssistant, tmp_path: Path) -> AsyncIterator[MockConfigEntry]:
    """A loaded hub without cameras."""
    entry = MockConfigEntry(domain=DOMAIN, data=hub_entry_data(tmp_path / "rec"))
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    yield entry
    if entry.state is ConfigEntryState.LOADED:
        await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()


async def _camera_flow(
    hass: HomeAssistant, entry: MockConfigEntry, user_input: dict[str, object]
) -> dict[str, object]:
    result = await open_stream_url_form(hass, entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    return await hass.config_entries.subentries.async_configure(result["flow_id"], user_input)


def _camera_input(url: str, name: str = "Porch", **extra: object) -> dict[str, object]:
    return {
        CONF_NAME: name,
        CONF_STREAM_URL: url,
        CONF_RECORD: True,
        CONF_DETECT_MOTION: False,
        **extra,
    }


async def test_add_camera_probes_and_creates_a_device(
    hass: HomeAssistant, hub: MockConfigEntry, rtsp_camera: RtspServer
) -> None:
    """A reachable camera is saved with its login apart from the URL and starts at once."""
    url_with_login = rtsp_camera.auth_url("cam")  # rtsp://viewer:…@127.0.0.1:port/cam
    result = await _camera_flow(hass, hub, _camera_input(url_with_login))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    subentry = next(iter(hub.subentries.values()))
    assert subentry.title == "Porch"
    assert subentry.data[CONF_STREAM_URL] == rtsp_camera.auth_url("cam", credentials=False)
    assert subentry.data[CONF_USERNAME] == CAMERA_USER
    assert subentry.data[CONF_PASSWORD] == CAMERA_PASSWORD
    # Adding a camera reloads the hub, which now runs it.
    assert hub.state is ConfigEntryState.LOADED
    assert subentry.subentry_id in hub.runtime_data.cameras
    assert hass.states.get("camera.porch") is not None


async def test_add_camera_with_separate_login(
    hass: HomeAssistant, hub: MockConfigEntry, rtsp_camera: RtspServer
) -> None:
    """Username and password fields work with a URL that has no login."""
    result = await _camera_flow(
        hass,
        hub,
        _camera_input(
            rtsp_camera.auth_url("cam", credentials=False),
            **{CONF_USERNAME: CAMERA_USER, CONF_PASSWORD: CAMERA_PASSWORD},
        ),
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.parametrize(
    ("user", "password"),
    [(CAMERA_USER, "wrong-password"), (None, None), ("intruder", CAMERA_PASSWORD)],
)
async def test_add_camera_invalid_auth(
    hass: HomeAssistant,
    hub: MockConfigEntry,
    rtsp_camera: RtspServer,
    user: str | None,
    password: str | None,
) -> None:
    """A 401 from the camera (wrong or missing login) is `invalid_auth`; nothing is saved."""
    extra = {CONF_USERNAME: user, CONF_PASSWORD: password} if user else {}
    result = await _camera_flow(
        hass, hub, _camera_input(rtsp_camera.auth_url("cam", credentials=False), **extra)
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_auth"}
    assert not hub.subentries


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_add_camera_cannot_connect(
    hass: HomeAssistant, hub: MockConfigEntry, socket_enabled: None
) -> None:
    """Nothing listening on the port: `cannot_connect`."""
    result = await _camera_flow(
        hass, hub, _camera_input(f"rtsp://127.0.0.1:{_closed_port()}/stream")
    )
    assert result["errors"] == {"base": "cannot_connect"}
    assert not hub.subentries


@pytest.mark.parametrize(
    "url",
    [
        "garbage",
        "not a url at all",
        "ftp://127.0.0.1/video",
        "file:///etc/passwd",
        "rtsp://",
        "rtsp://127.0.0.1:notaport/x",
        "rtsp://127.0.0.1:70000/x",
        "",
        "rtsp://127.0.0.1/live/${SUPERVISOR_TOKEN}",  # would be replaced by a secret
    ],
)
async def test_add_camera_invalid_url(hass: HomeAssistant, hub: MockConfigEntry, url: str) -> None:
    """Anything that is not a stream URL we can open is refused before any connection."""
    result = await _camera_flow(hass, hub, _camera_input(url))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_STREAM_URL: "invalid_url"}


async def test_add_camera_invalid_substream_url(
    hass: HomeAssistant, hub: MockConfigEntry, rtsp_camera: RtspServer
) -> None:
    """A bad sub-stream URL is pointed out on its own field."""
    result = await _camera_flow(
        hass, hub, _camera_input(rtsp_camera.url("cam"), **{CONF_SUBSTREAM_URL: "nope"})
    )
    assert result["errors"] == {CONF_SUBSTREAM_URL: "invalid_url"}


@pytest.fixture
async def audio_only_url(tmp_path: Path, socket_enabled: None) -> AsyncIterator[str]:
    """An HTTP server on 127.0.0.1 serving a WAV file: a source without video."""
    path = tmp_path / "sound.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x01" * 8000)

    async def _serve(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/sound.wav", _serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/sound.wav"
    await runner.cleanup()


async def test_add_camera_no_video(
    hass: HomeAssistant, hub: MockConfigEntry, audio_only_url: str
) -> None:
    """A source that opens but carries no video: `no_video`."""
    result = await _camera_flow(hass, hub, _camera_input(audio_only_url))
    assert result["errors"] == {"base": "no_video"}


async def test_add_camera_duplicate_url(
    hass: HomeAssistant, tmp_path: Path, rtsp_camera: RtspServer
) -> None:
    """The same stream (even written differently, or with a login) cannot be added twice."""
    url = rtsp_camera.url("cam")
    entry = MockConfigEntry(
        domain=DOMAIN,
        data=hub_entry_data(tmp_path / "rec"),
        subentries_data=[camera_subentry("First", url)],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    variant = url.replace("rtsp://127.0.0.1", "RTSP://user:pw@127.0.0.1")
    result = await _camera_flow(hass, entry, _camera_input(variant, name="Second"))
    assert result["errors"] == {CONF_STREAM_URL: "duplicate_url"}
    assert len(entry.subentries) == 1
    await hass.config_entries.async_unload(entry.entry_id)


async def test_reconfigure_camera_keeps_password(
    hass: HomeAssistant, setup_camera: MockConfigEntry, rtsp_camera: RtspServer
) -> None:
    """Reconfigure: the form never shows the password; left empty, the stored one stays."""
    subentry = next(iter(setup_camera.subentries.values()))
    result = await hass.config_entries.subentries.async_init(
        (setup_camera.entry_id, SUBENTRY_CAMERA),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": subentry.subentry_id},
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    suggested = {
        str(key): (key.description or {}).get("suggested_value")
        for key in result["data_schema"].schema
    }
    assert suggested[CONF_NAME] == "Front door"
    assert suggested.get(CONF_PASSWORD) is None

    # A wrong password is refused and changes nothing.
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        _camera_input(
            rtsp_camera.auth_url("cam", credentials=False),
            name="Back door",
            **{CONF_USERNAME: CAMERA_USER, CONF_PASSWORD: "bad"},
        ),
    )
    assert result["errors"] == {"base": "invalid_auth"}
    assert subentry.data[CONF_PASSWORD] == CAMERA_PASSWORD

    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        _camera_input(
            rtsp_camera.auth_url("cam", credentials=False),
            name="Back door",
            **{CONF_USERNAME: CAMERA_USER},
        ),
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    updated = setup_camera.subentries[subentry.subentry_id]
    assert updated.title == "Back door"
    assert updated.data[CONF_PASSWORD] == CAMERA_PASSWORD
    assert setup_camera.state is ConfigEntryState.LOADED
    assert setup_camera.runtime_data.cameras[subentry.subentry_id].name == "Back door"


async def test_add_camera_invalid_zones(
    hass: HomeAssistant, hub: MockConfigEntry, rtsp_camera: RtspServer
) -> None:
    """Exclusion zones that are not four numbers from 0 to 1 are pointed out."""
    for zones in ("0,0,2,1", "a,b,c,d", "0,0,1"):
        result = await _camera_flow(
            hass, hub, _camera_input(rtsp_camera.url("cam"), exclude_zones=zones)
        )
        assert result["errors"] == {"exclude_zones": "invalid_zones"}
    result = await _camera_flow(
        hass,
        hub,
        _camera_input(
            rtsp_camera.url("cam"),
            detect_motion=True,
            exclude_zones="0,0,1,0.1; 0.8,0.8,1,1",
            detect_keyframes_only=True,
        ),
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    camera = next(iter(hub.runtime_data.cameras.values()))
    assert len(camera.exclude_zones) == 2
    assert camera.camera_id in hub.runtime_data.detection
    assert camera.detect_keyframes_only
    assert hub.runtime_data.detection[camera.camera_id].options.keyframes_only
    assert hass.states.get("binary_sensor.porch_motion") is not None
    assert hass.states.get("switch.porch_detection") is not None


async def test_reconfigure_to_another_host_asks_for_the_password(
    hass: HomeAssistant, setup_camera: MockConfigEntry, rtsp_camera: RtspServer
) -> None:
    """A stored password is kept for its own host only, never sent to a new address."""
    subentry = next(iter(setup_camera.subentries.values()))
    result = await hass.config_entries.subentries.async_init(
        (setup_camera.entry_id, SUBENTRY_CAMERA),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": subentry.subentry_id},
    )
    other_address = rtsp_camera.url("cam")  # the server's other port: another address
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], _camera_input(other_address, **{CONF_USERNAME: CAMERA_USER})
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_PASSWORD: "password_required"}
    assert setup_camera.subentries[subentry.subentry_id].data[CONF_PASSWORD] == CAMERA_PASSWORD


async def test_substream_keeps_its_own_login(
    hass: HomeAssistant, hub: MockConfigEntry, rtsp_camera: RtspServer
) -> None:
    """A login typed into the sub-stream URL is its own; the main one goes to its host only."""
    main = rtsp_camera.auth_url("cam", credentials=False)
    sub_with_login = main.replace("rtsp://", "rtsp://subuser:sub%40pass@") + "?sub"
    result = await _camera_flow(
        hass,
        hub,
        _camera_input(
            main,
            **{
                CONF_USERNAME: CAMERA_USER,
                CONF_PASSWORD: CAMERA_PASSWORD,
                CONF_SUBSTREAM_URL: sub_with_login,
            },
        ),
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    subentry = next(iter(hub.subentries.values()))
    assert subentry.data[CONF_SUBSTREAM_URL] == main + "?sub"  # stored without its login
    assert subentry.data[CONF_SUBSTREAM_USERNAME] == "subuser"
    assert subentry.data[CONF_SUBSTREAM_PASSWORD] == "sub@pass"
    camera = CameraConfig.from_subentry(subentry.subentry_id, subentry.data)
    assert camera.substream is not None
    assert (camera.substream.username, camera.substream.password) == ("subuser", "sub@pass")

    # No login of its own: the camera's for the same host, none for another host.
    same_host = CameraConfig.from_subentry(
        "a",
        {
            **_camera_input(main),
            CONF_USERNAME: "u",
            CONF_PASSWORD: "p",
            CONF_SUBSTREAM_URL: main + "?sub",
        },
    )
    assert same_host.substream is not None
    assert same_host.substream.password == "p"
    elsewhere = CameraConfig.from_subentry(
        "b",
        {
            **_camera_input(main),
            CONF_USERNAME: "u",
            CONF_PASSWORD: "p",
            CONF_SUBSTREAM_URL: "rtsp://nvr.example:554/sub",
        },
    )
    assert elsewhere.substream is not None
    assert (elsewhere.substream.username, elsewhere.substream.password) == (None, None)
    assert "p@" not in elsewhere.substream.connect_url()
