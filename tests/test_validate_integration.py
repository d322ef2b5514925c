"""scripts/validate_integration.py: the real integration passes, and every check can fail.

Each broken case edits a copy of the integration in tmp_path (the folder keeps the domain's
name, which the manifest check compares) and expects that check's message.
"""

from __future__ import annotations

from collections.abc import Callable
import importlib.util
import json
from pathlib import Path
import shutil
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "validate_integration.py"
INTEGRATION = ROOT / "custom_components" / "lightnvr"


def load_validator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("validate_integration", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


validator = load_validator()


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the integration, in a folder named after its domain."""
    target = tmp_path / "lightnvr"
    shutil.copytree(INTEGRATION, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def edit_yaml(path: Path, change: Callable[[Any], Any]) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def manifest(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return lambda root: edit_json(root / "manifest.json", change)


def strings(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return lambda root: edit_json(root / "strings.json", change)


def icons(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return lambda root: edit_json(root / "icons.json", change)


def services(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return lambda root: edit_yaml(root / "services.yaml", change)


def module(name: str, source: str) -> Callable[[Path], None]:
    """Add a module to the copy (new files keep the cases independent of the real code)."""
    header = (
        "from homeassistant.exceptions import HomeAssistantError\n"
        "from homeassistant.helpers import issue_registry as ir\n"
        "import voluptuous as vol\n\n"
        "from .const import DOMAIN\n\n"
    )
    return lambda root: (root / name).write_text(header + source, encoding="utf-8")


def both(*changes: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        for change in changes:
            change(root)

    return apply


def reordered(data: dict[str, Any]) -> None:
    value = data.pop("domain")
    data["domain"] = value


def text_at(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set a dotted path (the last part is created) in a JSON tree."""

    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            data = data[part]
        data[last] = value

    return change


def drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            data = data[part]
        del data[last]

    return change


def user_data(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return text_at(f"config.step.user.data.{key}", value)


CAMERA_USER = "config_subentries.camera.step.stream_url"
OPTION_ENGINE = "options.step.init.data.engine"
SECOND_SERVICE = """
def register(hass):
    hass.services.async_register(
        DOMAIN, "purge", lambda call: None, schema=vol.Schema({vol.Required("days"): int})
    )
"""


def add_purge_service(fields: dict[str, Any]) -> Callable[[Path], None]:
    """A second service: registered by a new module, described, translated, with an icon."""
    return both(
        module("purge.py", SECOND_SERVICE),
        services(text_at("purge", {"fields": fields})),
        strings(
            text_at(
                "services.purge",
                {
                    "name": "Purge",
                    "description": "Deletes old recordings.",
                    "fields": {
                        name: {"name": name.title(), "description": f"The {name}."}
                        for name in fields
                    },
                },
            )
        ),
        icons(text_at("services.purge", {"service": "mdi:delete"})),
    )


CASES: list[tuple[str, Callable[[Path], None], str]] = [
    # manifest.json
    (
        "manifest-key-order",
        manifest(reordered),
        "manifest.json: keys are not sorted: domain, name, then alphabetical order",
    ),
    (
        "manifest-no-codeowner",
        manifest(text_at("codeowners", [])),
        "codeowners: needs at least one GitHub handle",
    ),
    (
        "manifest-codeowner-without-at",
        manifest(text_at("codeowners", ["lightnvr"])),
        "'lightnvr' is not a GitHub handle",
    ),
    ("manifest-version", manifest(text_at("version", "one")), "'one' is not a valid version"),
    (
        "manifest-requirement",
        manifest(text_at("requirements", ["aiortc>=>1.10"])),
        "'aiortc>=>1.10' is not a valid requirement",
    ),
    (
        "manifest-requirement-twice",
        manifest(text_at("requirements", ["aiortc>=1.10", "AIORTC<2"])),
        "name the same package",
    ),
    (
        "manifest-dependency-overlap",
        manifest(text_at("after_dependencies", ["media_source", "http"])),
        "['http'] also in dependencies",
    ),
    (
        "manifest-required-key",
        manifest(drop("issue_tracker")),
        "manifest.json: issue_tracker: required key not provided",
    ),
    (
        "manifest-domain-folder",
        manifest(text_at("domain", "other")),
        "'other' does not match the folder 'lightnvr'",
    ),
    ("manifest-iot-class", manifest(text_at("iot_class", "local")), "iot_class: value must be"),
    (
        "manifest-config-flow-file",
        lambda root: (root / "config_flow.py").unlink(),
        "config_flow is true but there is no config_flow.py",
    ),
    (
        "json-duplicate-key",
        lambda root: (root / "icons.json").write_text('{"services": {}, "services": {}}'),
        "icons.json: invalid JSON: duplicate key 'services'",
    ),
    # strings.json: schema and text rules
    (
        "strings-missing-data-description",
        strings(drop("config.step.user.data_description.engine")),
        "config.step.user.data_description: missing data_description for field 'engine'",
    ),
    (
        "strings-orphan-data-description",
        strings(text_at(f"{CAMERA_USER}.data_description.colour", "Not a field.")),
        "data_description for 'colour', which is not a field in data",
    ),
    (
        "strings-trailing-whitespace",
        strings(user_data("engine", "Stream engine ")),
        "config.step.user.data.engine: the text starts or ends with whitespace",
    ),
    (
        "strings-html",
        strings(user_data("engine", "Stream <b>engine</b>")),
        "contains an HTML tag",
    ),
    (
        "strings-placeholder-syntax",
        strings(text_at("config.step.user.description", "Set up {detail")),
        "config.step.user.description: bad placeholder syntax",
    ),
    (
        "strings-placeholder-name",
        strings(text_at("config.step.user.description", "Set up {0}")),
        "placeholder names must be identifiers",
    ),
    (
        "strings-quoted-placeholder",
        strings(text_at("config.step.user.description", "Set up '{detail}'")),
        "a placeholder is inside single quotes",
    ),
    (
        "strings-placeholder-in-state",
        strings(text_at("entity.sensor.live_view.state.idle", "Idle {since}")),
        "entity.sensor.live_view.state.idle: placeholders are not allowed",
    ),
    (
        "strings-url",
        strings(user_data("engine", "See https://www.example.com/docs")),
        "the text contains a URL",
    ),
    (
        "strings-unknown-section",
        strings(text_at("entities", {})),
        "entities: extra keys not allowed",
    ),
    (
        "strings-bad-translation-key",
        strings(text_at("entity.sensor.Live_View", {"name": "Live view"})),
        "invalid translation key 'Live_View'",
    ),
    (
        "strings-issue-without-description",
        strings(drop("issues.storage_full.description")),
        "issues.storage_full: an issue needs either a description or a fix_flow",
    ),
    (
        "strings-exception-without-message",
        strings(text_at("exceptions", {"clip_failed": {}})),
        "exceptions.clip_failed.message: required key not provided",
    ),
    (
        "strings-subentry-without-entry-type",
        strings(drop("config_subentries.camera.entry_type")),
        "config_subentries.camera.entry_type: required key not provided",
    ),
    (
        "strings-obsolete-config-title",
        strings(text_at("config.title", "LightNVR")),
        "warning: strings.json: config.title: obsolete",
    ),
    # strings.json: references
    (
        "reference-dangling",
        strings(text_at(OPTION_ENGINE, "[%key:component::lightnvr::config::step::user::data::x%]")),
        "options.step.init.data.engine: dangling reference",
    ),
    (
        "reference-combined",
        strings(
            text_at(OPTION_ENGINE, "The [%key:component::lightnvr::config::step::user::title%]")
        ),
        "options.step.init.data.engine: malformed reference",
    ),
    (
        "reference-malformed",
        strings(text_at(OPTION_ENGINE, "[%key:component::lightnvr::config::step::user::title]")),
        "malformed reference",
    ),
    (
        "reference-outside",
        strings(text_at(OPTION_ENGINE, "[%key:common::config_flow::data::host%]")),
        "points outside this integration",
    ),
    (
        "reference-to-reference",
        strings(
            text_at(
                OPTION_ENGINE, "[%key:component::lightnvr::options::step::init::data::go2rtc_url%]"
            )
        ),
        "points to another reference",
    ),
    (
        "reference-to-section",
        strings(text_at(OPTION_ENGINE, "[%key:component::lightnvr::config::step::user::data%]")),
        "points to a section, not a text",
    ),
    # translations/en.json
    (
        "english-out-of-date",
        strings(user_data("engine", "Video engine")),
        "translations/en.json: out of date with strings.json (config.step.user.data.engine "
        "differs;",
    ),
    (
        "english-missing",
        lambda root: (root / "translations" / "en.json").unlink(),
        "translations/en.json: missing",
    ),
    # services.yaml
    (
        "service-field-without-translation",
        strings(drop("services.save_clip.fields.duration")),
        "services.yaml: save_clip.fields.duration: no name in strings.json "
        "(services.save_clip.fields.duration.name)",
    ),
    (
        "service-without-translation",
        strings(drop("services.save_clip")),
        "services.yaml: save_clip: no translation: add services.save_clip to strings.json",
    ),
    (
        "service-without-description",
        strings(drop("services.save_clip.description")),
        "no description in strings.json (services.save_clip.description)",
    ),
    (
        "service-stale-translation",
        strings(text_at("services.rewind", {"name": "Rewind", "description": "Rewinds."})),
        "strings.json: services.rewind: translates a service not in services.yaml",
    ),
    (
        "service-stale-field-translation",
        strings(text_at("services.save_clip.fields.speed", {"name": "S", "description": "S."})),
        "services.save_clip.fields.speed: translates a field",
    ),
    ("service-without-icon", icons(drop("services.save_clip")), "save_clip: no icon"),
    (
        "service-stale-icon",
        icons(text_at("services.rewind", "mdi:export")),
        "icons.json: services.rewind: icon of a service not in services.yaml",
    ),
    (
        "service-bad-selector",
        services(text_at("save_clip.fields.duration.selector", {"numbr": {}})),
        "services.yaml: save_clip.fields.duration.selector: Unknown selector type numbr",
    ),
    (
        "service-unknown-option",
        services(text_at("save_clip.fields.duration.mandatory", True)),
        "save_clip.fields.duration.mandatory: extra keys not allowed",
    ),
    (
        "service-empty-default",
        services(text_at("save_clip.fields.duration.default", None)),
        "save_clip.fields.duration.default: empty value",
    ),
    (
        "service-field-not-in-code",
        add_purge_service({"days": {"selector": {"number": {}}}, "keep": {"selector": {}}}),
        "services.yaml: purge: fields ['keep'] are not accepted by the schema",
    ),
    (
        "service-registered-not-described",
        module("purge.py", SECOND_SERVICE),
        "purge.py: line 9: service 'purge' is not in services.yaml",
    ),
    # icons.json
    (
        "icon-without-mdi",
        icons(text_at("services.save_clip", {"service": "content-save"})),
        "icons.json: services.save_clip.service: 'content-save' is not an icon: write mdi:<name>",
    ),
    (
        "icon-entity-format",
        icons(text_at("entity.sensor.storage_used.default", "fa:harddisk")),
        "entity.sensor.storage_used.default: 'fa:harddisk' is not an icon",
    ),
    (
        "icon-range-key",
        icons(text_at("entity.sensor.storage_used.range", {"half": "mdi:harddisk"})),
        "range key 'half' is not a number",
    ),
    (
        "icon-same-as-default",
        icons(text_at("entity.switch.recording.state", {"on": "mdi:record-rec"})),
        "the icon of state 'on' is the default icon",
    ),
    (
        "icon-unknown-translation-key",
        icons(text_at("entity.sensor.uptime", {"default": "mdi:timer"})),
        "icons.json: entity.sensor.uptime: no entity uses translation key 'uptime'",
    ),
    # The code against strings.json
    (
        "code-exception-key-missing",
        module(
            "broken.py",
            "def fail():\n"
            "    raise HomeAssistantError(translation_domain=DOMAIN, translation_key='nope')\n",
        ),
        "broken.py: line 8: exception translation_key 'nope' is not in strings.json "
        "(exceptions.nope.message)",
    ),
    (
        "code-exception-placeholders",
        both(
            strings(text_at("exceptions", {"nope": {"message": "No clip of {camera}."}})),
            module(
                "broken.py",
                "def fail():\n"
                "    raise HomeAssistantError(\n"
                "        translation_domain=DOMAIN,\n"
                "        translation_key='nope',\n"
                "        translation_placeholders={'name': 'x'},\n"
                "    )\n",
            ),
        ),
        "exception 'nope': the text uses placeholders ['camera'] that translation_placeholders",
    ),
    (
        "code-exception-without-domain",
        module("broken.py", "def fail():\n    raise HomeAssistantError(translation_key='nope')\n"),
        "HomeAssistantError has a translation_key but no translation_domain",
    ),
    (
        "code-exception-subclass",
        module(
            "broken.py",
            "class Broken(HomeAssistantError):\n    pass\n\n\n"
            "def fail():\n    raise Broken(translation_domain=DOMAIN, translation_key='gone')\n",
        ),
        "exception translation_key 'gone' is not in strings.json",
    ),
    (
        "code-exception-untranslated",
        module("broken.py", "def fail():\n    raise HomeAssistantError('no clip')\n"),
        "warning: broken.py: line 8: raises HomeAssistantError without translation_domain",
    ),
    (
        "code-entity-key-missing",
        module("button.py", "class Restart:\n    _attr_translation_key = 'restart'\n"),
        "button.py: line 8: entity translation_key 'restart' is not in strings.json "
        "(entity.button.restart)",
    ),
    (
        "code-entity-key-from-constant",
        module(
            "button.py",
            "KEY = 'restart'\n\n\nclass Restart:\n    def __init__(self):\n"
            "        self._attr_translation_key = KEY\n",
        ),
        "entity translation_key 'restart' is not in strings.json",
    ),
    (
        "code-entity-text-unused",
        strings(text_at("entity.sensor.uptime", {"name": "Uptime"})),
        "warning: strings.json: entity.sensor.uptime: no entity in the code uses",
    ),
    (
        "code-exception-text-unused",
        strings(text_at("exceptions.never_raised", {"message": "No clip."})),
        "warning: strings.json: exceptions.never_raised: no exception in the code uses this text",
    ),
    (
        "code-lower-case-name-not-resolved",
        module(
            "button.py",
            "key = 'restart'\n\n\nclass Restart:\n    def __init__(self, key):\n"
            "        self._attr_translation_key = key\n",
        ),
        "",  # `key` may be the parameter: the usage is listed as not checked, not as an error
    ),
    (
        "manifest-config-flow-false",
        manifest(text_at("config_flow", False)),
        "config_flow.py exists but config_flow is false",
    ),
    (
        "manifest-documentation-http",
        manifest(text_at("documentation", "http://example.com/lightnvr")),
        "documentation: 'http://example.com/lightnvr' is not an https:// URL",
    ),
    (
        "code-issue-key-missing",
        module(
            "broken.py",
            "def fail(hass):\n"
            "    ir.async_create_issue(hass, DOMAIN, 'x', is_fixable=False,\n"
            "        severity=ir.IssueSeverity.ERROR, translation_key='nope_issue')\n",
        ),
        "issue translation_key 'nope_issue' is not in strings.json (issues.nope_issue)",
    ),
    (
        "code-issue-placeholders",
        module(
            "broken.py",
            "def fail(hass):\n"
            "    ir.async_create_issue(hass, DOMAIN, 'x', is_fixable=False,\n"
            "        severity=ir.IssueSeverity.ERROR, translation_key='storage_full',\n"
            "        translation_placeholders={'path': '/media'})\n",
        ),
        "issue 'storage_full': the text uses placeholders ['free', 'minimum']",
    ),
    (
        "code-issue-of-another-domain",
        module(
            "broken.py",
            "def fail(hass):\n"
            "    ir.async_create_issue(hass, 'http', 'x', is_fixable=False,\n"
            "        severity=ir.IssueSeverity.ERROR, translation_key='nope_issue')\n",
        ),
        "",  # another integration's issue: its texts are not ours to check
    ),
    (
        "flow-error-missing",
        strings(drop("config.error.invalid_object_url")),
        "form error 'invalid_object_url' is not in strings.json (config.error.invalid_object_url)",
    ),
    (
        "flow-error-missing-in-options",
        strings(drop("options.error.go2rtc_unreachable")),
        "(options.error.go2rtc_unreachable)",
    ),
    (
        "flow-error-from-returned-dict",
        strings(drop("config_subentries.camera.error.duplicate_url")),
        "form error 'duplicate_url' is not in strings.json "
        "(config_subentries.camera.error.duplicate_url)",
    ),
    (
        "flow-error-from-imported-constant",
        strings(drop("config_subentries.camera.error.cannot_connect")),
        "form error 'cannot_connect' is not in strings.json",
    ),
    (
        "flow-abort-missing",
        strings(drop("config_subentries.camera.abort.reconfigure_successful")),
        "abort reason 'reconfigure_successful' is not in strings.json "
        "(config_subentries.camera.abort.reconfigure_successful)",
    ),
    (
        "flow-step-missing",
        strings(drop("options.step.init")),
        "step 'init' is not in strings.json (options.step.init)",
    ),
    (
        "flow-single-instance",
        strings(drop("config.abort.single_instance_allowed")),
        "single_config_entry is set",
    ),
    (
        "flow-selector-text-missing",
        strings(drop("selector.engine")),
        "selector translation_key 'engine' is not in strings.json (selector.engine)",
    ),
    (
        "flow-selector-option-missing",
        strings(drop("selector.engine.options.embedded")),
        "selector option 'embedded' has no text in strings.json",
    ),
]


def test_real_integration_passes() -> None:
    report = validator.validate(INTEGRATION)
    assert [str(finding) for finding in report.errors] == []


def test_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lightnvr: 0 error(s)" in result.stdout


def test_copy_is_clean(copy: Path) -> None:
    """The broken cases start from a copy without errors: each message is the case's own."""
    assert [str(finding) for finding in validator.validate(copy).errors] == []


@pytest.mark.parametrize(
    ("change", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_broken_copy(copy: Path, change: Callable[[Path], None], expected: str) -> None:
    change(copy)
    messages = validator.validate(copy).messages()
    if not expected:
        assert [m for m in messages if m.startswith("error")] == []
        return
    assert any(expected in message for message in messages), "\n".join(messages)


def test_exit_status(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module("broken.py", "def fail():\n    raise HomeAssistantError('no clip')\n")(copy)
    assert validator.main([str(copy)]) == 0  # a warning alone passes
    assert validator.main(["--strict", str(copy)]) == 1
    strings(drop("config.step.user.data_description.engine"))(copy)
    assert validator.main([str(copy)]) == 1
    out = capsys.readouterr().out
    assert "error: strings.json: config.step.user.data_description" in out
    assert "lightnvr: 2 error(s)" in out  # the missing description, and en.json out of date


def test_verbose_lists_what_was_not_checked(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module(
        "broken.py",
        "def fail(key):\n    raise HomeAssistantError(translation_domain=DOMAIN, "
        "translation_key=key)\n",
    )(copy)
    assert validator.main(["--verbose", str(copy)]) == 0
    assert "not checked: broken.py:8: exception translation_key" in capsys.readouterr().out
