"""The HA API LightNVR uses exists, fits and is not deprecated in every supported release.

Each release's source is read from its wheel with `ast` (see compat/api_surface.py): nothing is
imported, so releases that need a newer Python are checked as well.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
import re
import textwrap

import pytest

from .compat import ROOT, load_release, release_versions
from .compat.api_surface import Release, Use, check, collect, deprecations, overrides

PACKAGE = ROOT / "custom_components" / "lightnvr"
VERSIONS = release_versions()

# Known findings waiting for a fix, as "file name — reason" (no release, no line), each with
# why it may wait. Remove entries as they are fixed: an entry that matches nothing fails.
ALLOWED: dict[str, str] = {}


def _key(problem: str) -> str:
    """A problem without its release(s) and line, as ALLOWED lists it."""
    return re.sub(r"^.*?: (\S+?):\d+ ", r"\1 ", problem)


def _unexpected(problems: list[str]) -> str:
    return "\n".join(p for p in problems if _key(p) not in ALLOWED)


@pytest.fixture(scope="module")
def uses() -> list[Use]:
    """Every use of HA in the integration."""
    return collect(PACKAGE, ROOT)


@pytest.fixture(scope="module")
def releases() -> Iterator[dict[str, Release]]:
    """Releases, opened when first needed and closed at the end."""
    opened: dict[str, Release] = {}
    yield opened
    for release in opened.values():
        release.close()


def _open(releases: dict[str, Release], version: str) -> Release:
    if version not in releases:
        releases[version] = Release(version, load_release(version).wheel)
    return releases[version]


def _all(releases: dict[str, Release]) -> list[Release]:
    return [_open(releases, version) for version in VERSIONS]


@pytest.mark.parametrize("version", VERSIONS)
def test_api_exists_and_calls_fit(
    version: str, uses: list[Use], releases: dict[str, Release]
) -> None:
    """Every imported name, member and call resolves, and calls fit the signature."""
    assert not (found := _unexpected(check(_open(releases, version), uses))), found


def test_overridden_hooks_exist_in_every_release(
    uses: list[Use], releases: dict[str, Release]
) -> None:
    """HA never calls a hook it renamed or has not introduced yet."""
    assert not (found := _unexpected(overrides(_all(releases), uses))), found


def test_nothing_deprecated_in_newest_release(
    uses: list[Use], releases: dict[str, Release]
) -> None:
    """What the newest release deprecates breaks within about a year."""
    newest = _open(releases, VERSIONS[-1])
    assert not (found := _unexpected(deprecations(newest, uses))), found


def test_allowed_findings_still_occur(uses: list[Use], releases: dict[str, Release]) -> None:
    """An allow-list entry that no longer matches anything is stale."""
    if not ALLOWED:
        return
    opened = _all(releases)
    problems = overrides(opened, uses) + deprecations(opened[-1], uses)
    problems += [p for release in opened for p in check(release, uses)]
    assert not (stale := set(ALLOWED) - set(map(_key, problems))), f"fixed, remove: {stale}"


def _snippet(tmp_path: Path, source: str) -> list[Use]:
    package = tmp_path / "custom_components" / "demo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return collect(package, tmp_path)


BROKEN = """
    from homeassistant.components.camera import Camera
    from homeassistant.components.media_source import BrowseMediaSource
    from homeassistant.config_entries import OptionsFlowWithConfigEntry
    from homeassistant.core import HomeAssistant, NoSuchThing
    from homeassistant.helpers import issue_registry as ir


    async def async_setup(hass: HomeAssistant) -> None:
        ir.async_create_issue(
            hass, "demo", "id", bogus=1, is_fixable=False, severity=ir.IssueSeverity.ERROR
        )
        hass.http.register_static_path("/demo", "www")
        await hass.async_add_executor_job()
        BrowseMediaSource(domain="demo", identifier=None, title="Demo", can_play=True, bogus=2)


    class DemoCamera(Camera):
        async def async_handle_web_rtc_offer(self, offer_sdp: str) -> str | None:
            return None

        async def async_on_webrtc_candidate(self, session_id: str) -> None:
            return None
"""


def test_checker_finds_broken_code(tmp_path: Path, releases: dict[str, Release]) -> None:
    """Missing names, bad calls, hooks and deprecations are reported, in every release."""
    uses = _snippet(tmp_path, BROKEN)
    for release in _all(releases):
        problems = "\n".join(check(release, uses))
        for expected in (
            "__init__.py:5 import homeassistant.core.NoSuchThing — NoSuchThing not found",
            "__init__.py:10 ir.async_create_issue — has no parameter bogus",
            "__init__.py:14 hass.async_add_executor_job — misses required target",
            "__init__.py:15 BrowseMediaSource — has no parameter bogus",
            "__init__.py:22 DemoCamera.async_on_webrtc_candidate — override takes 1 arguments",
        ):
            assert f"{release.version}: custom_components/demo/{expected}" in problems, problems
    # Removed after 2025.4.4, which reports it as deprecated; likewise the sync WebRTC hook.
    oldest, newest = _open(releases, VERSIONS[0]), _open(releases, VERSIONS[-1])
    assert "register_static_path not found" in "\n".join(check(newest, uses))
    assert "register_static_path not found" not in "\n".join(check(oldest, uses))
    assert "register_static_path — deprecated" in "\n".join(deprecations(oldest, uses))
    old_flow = 'OptionsFlowWithConfigEntry — deprecated: "inherits from OptionsFlowWithConfigEntry"'
    assert old_flow in "\n".join(deprecations(newest, uses))
    hook = "DemoCamera.async_handle_web_rtc_offer — no such method to override"
    assert hook in "\n".join(overrides([oldest, newest], uses))


# The APIs our issue names, used the way LightNVR uses them: a release that drops, changes or
# deprecates any of them fails here even when the integration's code has not changed yet.
ISSUE_APIS = """
    from datetime import timedelta
    from typing import Any

    from homeassistant.components.camera import Camera, CameraEntityFeature, WebRTCSendMessage
    from homeassistant.components.http import HomeAssistantView, StaticPathConfig
    from homeassistant.components.http.auth import async_sign_path
    from homeassistant.components.media_player import MediaClass
    from homeassistant.components.media_source import (
        BrowseMediaSource, MediaSource, MediaSourceItem, PlayMedia, async_browse_media,
        async_resolve_media,
    )
    from homeassistant.config_entries import (
        ConfigEntry, ConfigFlow, ConfigFlowResult, ConfigSubentryFlow, OptionsFlow,
        SubentryFlowResult,
    )
    from homeassistant.core import HomeAssistant, SupportsResponse, callback
    from homeassistant.helpers import entity_platform
    from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback


    async def async_setup_entry(
        hass: HomeAssistant, entry: ConfigEntry, add: AddConfigEntryEntitiesCallback
    ) -> None:
        await hass.http.async_register_static_paths([StaticPathConfig("/demo", "www", True)])
        hass.http.register_view(DemoView())
        async_sign_path(hass, "/demo", timedelta(minutes=5), refresh_token_id=None)
        await async_resolve_media(hass, "media-source://demo", None)
        await async_browse_media(hass, "media-source://demo")
        platform = entity_platform.async_get_current_platform()
        platform.async_register_entity_service(
            "demo", {}, "async_demo", supports_response=SupportsResponse.OPTIONAL
        )
        add([DemoCamera()], config_subentry_id=None)
        await hass.config_entries.async_forward_entry_setups(entry, ["camera"])


    class DemoCamera(Camera):
        _attr_supported_features = CameraEntityFeature.STREAM

        async def async_handle_async_webrtc_offer(
            self, offer_sdp: str, session_id: str, send_message: WebRTCSendMessage
        ) -> None:
            return None

        async def async_on_webrtc_candidate(self, session_id: str, candidate: Any) -> None:
            return None

        @callback
        def close_webrtc_session(self, session_id: str) -> None:
            return None


    class DemoSource(MediaSource):
        def __init__(self) -> None:
            super().__init__("demo")

        async def async_resolve_media(self, item: MediaSourceItem) -> PlayMedia:
            return PlayMedia("/demo.mp4", "video/mp4")

        async def async_browse_media(self, item: MediaSourceItem) -> BrowseMediaSource:
            return BrowseMediaSource(
                domain="demo", identifier=None, media_class=MediaClass.DIRECTORY,
                media_content_type="", title="Demo", can_play=False, can_expand=True,
            )


    class DemoView(HomeAssistantView):
        url = "/api/demo"
        name = "api:demo"
        requires_auth = True


    class DemoFlow(ConfigFlow, domain="demo"):
        async def async_step_user(self, user_input: Any = None) -> ConfigFlowResult:
            return self.async_show_form(step_id="user")

        @staticmethod
        @callback
        def async_get_options_flow(config_entry: ConfigEntry) -> OptionsFlow:
            return DemoOptions()

        @classmethod
        @callback
        def async_get_supported_subentry_types(
            cls, config_entry: ConfigEntry
        ) -> dict[str, type[ConfigSubentryFlow]]:
            return {"camera": DemoSubentryFlow}


    class DemoOptions(OptionsFlow):
        async def async_step_init(self, user_input: Any = None) -> ConfigFlowResult:
            return self.async_create_entry(data=dict(self.config_entry.options))


    class DemoSubentryFlow(ConfigSubentryFlow):
        async def async_step_reconfigure(
            self, user_input: dict[str, Any] | None = None
        ) -> SubentryFlowResult:
            subentry = self._get_reconfigure_subentry()
            return self.async_update_and_abort(self._get_entry(), subentry, title=subentry.title)
"""


def test_issue_apis_in_every_release(tmp_path: Path, releases: dict[str, Release]) -> None:
    """WebRTC camera, media source, HTTP views, entity services and flows: all still fit."""
    uses = _snippet(tmp_path, ISSUE_APIS)
    opened = _all(releases)
    problems = [p for release in opened for p in check(release, uses)]
    problems += overrides(opened, uses) + deprecations(opened[-1], uses)
    assert not problems, "\n".join(problems)
    seen = {use.text for use in uses}  # each is seen (and so checked), not passed over
    assert {
        "platform.async_register_entity_service",
        "DemoCamera.async_handle_async_webrtc_offer",
        "DemoSubentryFlow.async_step_reconfigure",
        "self.async_update_and_abort",
        "hass.http.async_register_static_paths",
        "async_sign_path",
        "BrowseMediaSource",
        "add",
    } <= seen, seen
