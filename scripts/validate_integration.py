#!/usr/bin/env python3
"""Check the integration's metadata files the way Home Assistant's `hassfest` does, and more.

Home Assistant core validates its integrations with `script/hassfest`, which is not shipped with
the `homeassistant` package. This script re-states the rules that matter for a custom integration
(manifest.json, strings.json, translations/en.json, services.yaml, icons.json) and adds checks
hassfest cannot do for us: every translation key the code uses exists, every form field is
described, every service is translated and has an icon.

Stricter than hassfest, on purpose: the manifest must name its owners, tracker, version and
requirements; every form field needs a data_description (the quality scale's config-flow rule);
services are translated in strings.json rather than described in services.yaml; an exception
text needs its `message`; a `[%key:…%]` reference must point into this integration, since only
scripts/translations.py resolves references for a custom integration.

Problems are errors (exit status 1). Quality-scale advice that needs a Python change, such as an
exception raised without a translation key, and texts no code seems to use, are warnings (exit
status 0 unless --strict). Usages the static scan cannot resolve (a key computed at run time)
are listed with --verbose: they are not checked, and not reported as problems.

Run: .venv/bin/python scripts/validate_integration.py [--strict] [--verbose] [INTEGRATION_DIR]
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Callable, Iterable, Iterator
import contextlib
from dataclasses import dataclass, field
import functools
import importlib.util
import json
from pathlib import Path
import re
import string
import sys
from typing import Any

from awesomeversion import AwesomeVersion, AwesomeVersionException, AwesomeVersionStrategy
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
import voluptuous as vol
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INTEGRATION = ROOT / "custom_components" / "lightnvr"
TRANSLATIONS_SCRIPT = ROOT / "scripts" / "translations.py"

Validator = Callable[[Any], Any]

# ---------------------------------------------------------------------------------------------
# Findings


@dataclass(frozen=True)
class Finding:
    """One problem, located by file and by a dotted key path or a line number."""

    file: str
    where: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        level = "warning" if self.warning else "error"
        where = f" {self.where}:" if self.where else ""
        return f"{level}: {self.file}:{where} {self.message}"


@dataclass
class Report:
    """Everything found in one run."""

    findings: list[Finding] = field(default_factory=list)
    # Usages the static scan could not resolve: not checked, shown with --verbose.
    unchecked: list[str] = field(default_factory=list)

    def error(self, file: str, where: str, message: str) -> None:
        """Record a problem that fails the check."""
        self.findings.append(Finding(file, where, message))

    def warn(self, file: str, where: str, message: str) -> None:
        """Record advice that fails the check only with --strict."""
        self.findings.append(Finding(file, where, message, warning=True))

    @property
    def errors(self) -> list[Finding]:
        """The findings that fail the check."""
        return [finding for finding in self.findings if not finding.warning]

    @property
    def warnings(self) -> list[Finding]:
        """The findings that are advice."""
        return [finding for finding in self.findings if finding.warning]

    def messages(self) -> list[str]:
        """Every finding as printed."""
        return [str(finding) for finding in self.findings]


def dotted(path: Iterable[Any]) -> str:
    """Return a key path as `a.b.c` (list indexes as `[0]`)."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def run_schema(
    schema: Validator, data: Any, file: str, report: Report, prefix: tuple[Any, ...] = ()
) -> bool:
    """Validate `data`; record every voluptuous error with its key path. True when valid."""
    try:
        schema(data)
    except vol.MultipleInvalid as err:
        for error in err.errors:
            report.error(file, dotted((*prefix, *error.path)), error.msg)
        return False
    except vol.Invalid as err:
        report.error(file, dotted((*prefix, *err.path)), err.msg)
        return False
    return True


def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON object hook: a repeated key silently drops the first value, so refuse it."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def load_json(path: Path, report: Report, name: str) -> Any:
    """Return the parsed file, None when it is missing or invalid (invalid is reported)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=reject_duplicate_keys)
    except ValueError as err:
        report.error(name, "", f"invalid JSON: {err}")
        return None


# ---------------------------------------------------------------------------------------------
# Shared value and key rules

SLUG_RE = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
# Translation keys: lower-case letters, digits, single `-` or `_` between them.
TRANSLATION_KEY_RE = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
HTML_TAG_RE = re.compile(r"<[a-z][^>\n]*>", re.IGNORECASE)
QUOTED_PLACEHOLDER_RE = re.compile(r"'\{\w+\}'")
# A link to a named host; hassfest wants those as description placeholders so they can change
# without a new translation. An address like http://127.0.0.1:1984 is an example, not a link.
URL_RE = re.compile(
    r"(?:\b(?:https?|ftps?|mqtts?|scp|socket|socks5)://|\bwww\.)"
    r"[a-z0-9]+(?:[-.][a-z0-9]+)*\.[a-z]{2,5}\b",
    re.IGNORECASE,
)
REFERENCE_RE = re.compile(r"^\[%key:([^\s:%\[\]]+(?:::[^\s:%\[\]]+)*)%\]$")
MDI_RE = re.compile(r"^mdi:[a-z0-9]+(?:-[a-z0-9]+)*$")


def slug(value: Any) -> str:
    """Validate a slug: lower-case letters and digits joined by single underscores."""
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise vol.Invalid(f"invalid key {value!r}: use lower-case letters, digits and single _")
    return value


def slug_or_underscore(value: Any) -> str:
    """Validate a slug, or `_` (the section that applies to every key)."""
    return "_" if value == "_" else slug(value)


def translation_key(value: Any) -> str:
    """Validate a translation key."""
    if not isinstance(value, str) or not TRANSLATION_KEY_RE.match(value):
        raise vol.Invalid(
            f"invalid translation key {value!r}: use lower-case letters, digits, - and _, "
            "not at the start or end and never two in a row"
        )
    return value


def any_key(value: Any) -> str:
    """Accept any string key."""
    if not isinstance(value, str):
        raise vol.Invalid(f"key {value!r} must be a string")
    return value


def placeholder_names(text: str) -> set[str]:
    """Return the `{name}` placeholders of a text (ValueError for unbalanced braces)."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def text(*, placeholders: bool = True) -> Validator:
    """Validate a user-visible text (references are checked by `check_references`)."""

    def validate(value: Any) -> str:
        if not isinstance(value, str):
            raise vol.Invalid("expected a text")
        if HTML_TAG_RE.search(value):
            raise vol.Invalid("the text contains an HTML tag; translations are plain text")
        if value != value.strip():
            raise vol.Invalid("the text starts or ends with whitespace")
        if QUOTED_PLACEHOLDER_RE.search(value):
            raise vol.Invalid("a placeholder is inside single quotes; drop the quotes")
        try:
            names = placeholder_names(value)
        except ValueError as err:
            raise vol.Invalid(
                f"bad placeholder syntax ({err}); write {{name}}, and {{{{ for a literal brace"
            ) from err
        if names and not placeholders:
            raise vol.Invalid("placeholders are not allowed in this text")
        if bad := sorted(name for name in names if not name.isidentifier()):
            raise vol.Invalid(f"placeholder names must be identifiers, not {bad}")
        if URL_RE.search(value):
            raise vol.Invalid("the text contains a URL; pass it as a description placeholder")
        return value

    return validate


def keyed(value_schema: Any, key: Validator = translation_key) -> Validator:
    """Validate a mapping: every key with `key`, every value with `value_schema`.

    voluptuous reports a key that fails a key validator only as "extra keys not allowed";
    this reports why, at the key's path.
    """
    values = vol.Schema(value_schema)

    def validate(data: Any) -> Any:
        if not isinstance(data, dict):
            raise vol.Invalid("expected a mapping")
        errors: list[vol.Invalid] = []
        for name, value in data.items():
            try:
                key(name)
            except vol.Invalid as err:
                errors.append(vol.Invalid(err.msg, [name]))
            try:
                values(value)
            except vol.MultipleInvalid as err:
                errors.extend(vol.Invalid(error.msg, [name, *error.path]) for error in err.errors)
            except vol.Invalid as err:
                errors.append(vol.Invalid(err.msg, [name, *err.path]))
        if errors:
            raise vol.MultipleInvalid(errors)
        return data

    return validate


def nested_texts(data: Any) -> Any:
    """Validate a tree of mappings whose leaves are texts (free-form sections)."""
    if isinstance(data, dict):
        return keyed(nested_texts, any_key)(data)
    return text()(data)


# ---------------------------------------------------------------------------------------------
# manifest.json

IOT_CLASSES = (
    "assumed_state",
    "calculated",
    "cloud_polling",
    "cloud_push",
    "local_polling",
    "local_push",
)
INTEGRATION_TYPES = ("device", "entity", "hardware", "helper", "hub", "service", "system")
QUALITY_SCALES = ("internal", "bronze", "silver", "gold", "platinum")
# A GitHub user (`@name`) or team (`@org/team`); user names are at most 39 characters.
CODEOWNER_RE = re.compile(r"^@[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}(?:/[\w.-]+)?$")


def version(value: Any) -> str:
    """Validate a version the way Home Assistant's loader accepts it for custom integrations."""
    if not isinstance(value, str):
        raise vol.Invalid("expected a string")
    try:
        AwesomeVersion(
            value,
            ensure_strategy=[
                AwesomeVersionStrategy.CALVER,
                AwesomeVersionStrategy.SEMVER,
                AwesomeVersionStrategy.SIMPLEVER,
                AwesomeVersionStrategy.BUILDVER,
                AwesomeVersionStrategy.PEP440,
            ],
        )
    except AwesomeVersionException as err:
        raise vol.Invalid(f"{value!r} is not a valid version") from err
    return value


def https_url(value: Any) -> str:
    """Validate an https URL."""
    if not isinstance(value, str) or not re.match(r"^https://[^\s/]+\.[^\s/]+(?:/\S*)?$", value):
        raise vol.Invalid(f"{value!r} is not an https:// URL")
    return value


def requirement(value: Any) -> str:
    """Validate a pip requirement string (pins against HA's are tested elsewhere)."""
    if not isinstance(value, str):
        raise vol.Invalid("expected a string")
    try:
        Requirement(value)
    except InvalidRequirement as err:
        raise vol.Invalid(f"{value!r} is not a valid requirement: {err}") from err
    return value


def codeowner(value: Any) -> str:
    """Validate a GitHub handle."""
    if not isinstance(value, str) or not CODEOWNER_RE.match(value):
        raise vol.Invalid(f"{value!r} is not a GitHub handle: write @user or @org/team")
    return value


def domain_name(value: Any) -> str:
    """Validate an integration domain."""
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise vol.Invalid(f"{value!r} is not an integration domain")
    return value


def unique(value: list[Any]) -> list[Any]:
    """Validate that a list has no repeated entry."""
    if repeated := sorted({item for item in value if value.count(item) > 1}):
        raise vol.Invalid(f"repeated entries: {repeated}")
    return value


# hassfest makes several of these optional; a custom integration is installed by HACS and
# users, so we require the keys that tell them what it is, who owns it and where to report.
MANIFEST_SCHEMA = vol.Schema(
    {
        vol.Required("domain"): domain_name,
        vol.Required("name"): vol.All(str, vol.Length(min=1)),
        vol.Required("codeowners"): vol.All(
            [codeowner], vol.Length(min=1, msg="needs at least one GitHub handle"), unique
        ),
        vol.Required("config_flow"): bool,
        vol.Required("documentation"): https_url,
        vol.Required("integration_type"): vol.In(INTEGRATION_TYPES),
        vol.Required("iot_class"): vol.In(IOT_CLASSES),
        vol.Required("issue_tracker"): https_url,
        vol.Required("requirements"): vol.All([requirement], unique),
        vol.Required("version"): version,
        vol.Optional("after_dependencies"): vol.All([domain_name], unique),
        vol.Optional("dependencies"): vol.All([domain_name], unique),
        vol.Optional("disabled"): str,
        vol.Optional("import_executor"): bool,
        vol.Optional("loggers"): vol.All([str], unique),
        vol.Optional("quality_scale"): vol.In(QUALITY_SCALES),
        vol.Optional("single_config_entry"): bool,
        # Discovery matchers: their details are Home Assistant's business, not ours.
        vol.Optional("bluetooth"): [dict],
        vol.Optional("dhcp"): [dict],
        vol.Optional("homekit"): dict,
        vol.Optional("mqtt"): [str],
        vol.Optional("ssdp"): [dict],
        vol.Optional("usb"): [dict],
        vol.Optional("zeroconf"): [vol.Any(str, dict)],
    }
)


def manifest_key_order(key: str) -> tuple[int, str]:
    """hassfest's order: domain, name, then the other keys alphabetically."""
    return {"domain": (0, ""), "name": (1, "")}.get(key, (2, key))


def check_manifest(integration: Path, manifest: dict[str, Any], report: Report) -> None:
    """Validate manifest.json."""
    name = "manifest.json"
    if not isinstance(manifest, dict):
        report.error(name, "", "the manifest must be a JSON object")
        return
    run_schema(MANIFEST_SCHEMA, manifest, name, report)
    keys = list(manifest)
    if keys != sorted(keys, key=manifest_key_order):
        wanted = ", ".join(sorted(keys, key=manifest_key_order))
        report.error(
            name, "", f"keys are not sorted: domain, name, then alphabetical order ({wanted})"
        )
    domain = manifest.get("domain")
    if domain != integration.name:
        report.error(name, "domain", f"{domain!r} does not match the folder {integration.name!r}")
    dependencies = manifest.get("dependencies") or []
    after = manifest.get("after_dependencies") or []
    if isinstance(dependencies, list) and isinstance(after, list):
        if both := sorted(set(dependencies) & set(after)):
            report.error(
                name,
                "after_dependencies",
                f"{both} also in dependencies: a domain is either needed or only ordered",
            )
        if domain in dependencies or domain in after:
            report.error(name, "dependencies", "the integration depends on itself")
    requirements = manifest.get("requirements") or []
    if isinstance(requirements, list):
        seen: dict[str, str] = {}
        for entry in requirements:
            try:
                package = canonicalize_name(Requirement(entry).name)
            except (InvalidRequirement, TypeError):
                continue  # reported by the schema
            if package in seen:
                report.error(
                    name, "requirements", f"{seen[package]!r} and {entry!r} name the same package"
                )
            seen[package] = entry
    flow_file = (integration / "config_flow.py").is_file()
    if manifest.get("config_flow") is True and not flow_file:
        report.error(name, "config_flow", "config_flow is true but there is no config_flow.py")
    if manifest.get("config_flow") is False and flow_file:
        report.error(name, "config_flow", "config_flow.py exists but config_flow is false")
    if isinstance(domain, str) and core_has_domain(domain):
        report.warn(name, "domain", f"{domain!r} is also a built-in integration, which it hides")


def core_has_domain(domain: str) -> bool:
    """Return True when Home Assistant ships an integration of that domain."""
    spec = importlib.util.find_spec("homeassistant")
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(
        (Path(location) / "components" / domain).is_dir()
        for location in spec.submodule_search_locations
    )


# ---------------------------------------------------------------------------------------------
# strings.json


def flow_schema(*, subentry: bool = False, config: bool = False) -> Validator:
    """The schema of one data entry flow's texts (config, options, a subentry, a fix flow)."""
    texts = keyed(text(), any_key)
    step = {
        vol.Optional("title"): text(),
        vol.Optional("description"): text(),
        vol.Optional("data"): texts,
        vol.Optional("data_description"): texts,
        vol.Optional("menu_options"): texts,
        vol.Optional("menu_option_descriptions"): texts,
        vol.Optional("submit"): text(),
        vol.Optional("sections"): keyed(
            {
                vol.Optional("name"): text(),
                vol.Optional("description"): text(),
                vol.Optional("data"): texts,
                vol.Optional("data_description"): texts,
            },
            any_key,
        ),
    }
    schema: dict[Any, Any] = {
        vol.Required("step"): keyed(step, any_key),
        vol.Optional("flow_title"): text(),
        vol.Optional("error"): texts,
        vol.Optional("abort"): texts,
        vol.Optional("progress"): texts,
        vol.Optional("create_entry"): texts,
    }
    if subentry:
        schema[vol.Required("entry_type")] = text()
        schema[vol.Required("initiate_flow")] = {vol.Required("user"): text(), str: text()}
    else:
        schema[vol.Optional("initiate_flow")] = {vol.Required("user"): text()}
    if config:
        schema[vol.Optional("title")] = text()  # obsolete: warned about in check_strings
    return vol.Schema(schema)


def issue(value: Any) -> Any:
    """A repair issue: a title, then a description or a fix flow (not both)."""
    if isinstance(value, dict) and ("description" in value) == ("fix_flow" in value):
        raise vol.Invalid("an issue needs either a description or a fix_flow, not both")
    return vol.Schema(
        {
            vol.Required("title"): text(),
            vol.Optional("description"): text(),
            vol.Optional("fix_flow"): flow_schema(),
        }
    )(value)


STATE_TEXTS = keyed(text(placeholders=False))
SERVICE_FIELD = {
    vol.Required("name"): str,
    vol.Required("description"): text(),
    vol.Optional("example"): text(),
}
NAMED = {
    vol.Required("name"): text(),
    vol.Required("description"): text(),
    vol.Optional("fields"): keyed(SERVICE_FIELD),
}

STRINGS_SCHEMA = vol.Schema(
    {
        vol.Optional("title"): text(),
        vol.Optional("config"): flow_schema(config=True),
        vol.Optional("options"): flow_schema(),
        vol.Optional("config_subentries"): keyed(flow_schema(subentry=True), slug_or_underscore),
        vol.Optional("selector"): keyed(
            {
                vol.Optional("options"): keyed(text()),
                vol.Optional("choices"): keyed(text()),
                vol.Optional("unit_of_measurement"): keyed(text()),
                vol.Optional("fields"): keyed(
                    vol.Any(str, {vol.Required("name"): str, vol.Required("description"): text()})
                ),
            },
            slug_or_underscore,
        ),
        vol.Optional("issues"): keyed(issue, any_key),
        vol.Optional("exceptions"): keyed({vol.Required("message"): text()}, slug),
        vol.Optional("entity"): keyed(
            keyed(
                {
                    vol.Optional("name"): text(),
                    vol.Optional("state"): STATE_TEXTS,
                    vol.Optional("state_attributes"): keyed(
                        {
                            vol.Optional("name"): text(placeholders=False),
                            vol.Optional("state"): STATE_TEXTS,
                        }
                    ),
                    vol.Optional("unit_of_measurement"): text(placeholders=False),
                }
            ),
            slug,
        ),
        vol.Optional("entity_component"): keyed(
            {
                vol.Optional("name"): str,
                vol.Optional("state"): STATE_TEXTS,
                vol.Optional("state_attributes"): keyed(
                    {vol.Optional("name"): str, vol.Optional("state"): STATE_TEXTS}
                ),
            },
            slug_or_underscore,
        ),
        vol.Optional("device"): keyed({vol.Optional("name"): text()}),
        vol.Optional("services"): keyed(
            {
                **NAMED,
                vol.Optional("sections"): keyed(
                    {vol.Required("name"): str, vol.Optional("description"): text()}
                ),
            }
        ),
        vol.Optional("conditions"): keyed(NAMED, slug),
        vol.Optional("triggers"): keyed(NAMED, slug),
        vol.Optional("device_automation"): {
            vol.Optional(part): keyed(text(), any_key)
            for part in (
                "action_type",
                "condition_type",
                "trigger_type",
                "trigger_subtype",
                "extra_fields",
                "extra_fields_descriptions",
            )
        },
        vol.Optional("system_health"): {vol.Optional("info"): keyed(text())},
        vol.Optional("application_credentials"): {vol.Optional("description"): text()},
        vol.Optional("preview_features"): keyed(
            {
                vol.Required("name"): text(),
                vol.Required("description"): text(),
                vol.Optional("enable_confirmation"): text(),
                vol.Optional("disable_confirmation"): text(),
            }
        ),
        vol.Optional("config_panel"): nested_texts,
        vol.Optional("conversation"): {vol.Required("agent"): {vol.Required("done"): text()}},
        vol.Optional("common"): keyed(text(), slug),
    }
)


def leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Yield (key path, value) for every non-mapping value of a JSON tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, str(key)))
    else:
        yield path, node


def flows(strings: dict[str, Any]) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """Yield (path, flow section) for every data entry flow in strings.json."""
    for part in ("config", "options"):
        if isinstance(flow := strings.get(part), dict):
            yield (part,), flow
    for kind, flow in sub(strings, "config_subentries").items():
        if isinstance(flow, dict):
            yield ("config_subentries", kind), flow
    for key, entry in sub(strings, "issues").items():
        if isinstance(entry, dict) and isinstance(flow := entry.get("fix_flow"), dict):
            yield ("issues", key, "fix_flow"), flow


def check_field_descriptions(strings: dict[str, Any], report: Report) -> None:
    """Every form field has a label and a description, and no description is orphaned.

    hassfest refuses a description without a field; the quality scale's `config-flow` rule
    asks for a description of every field.
    """
    for flow_path, flow in flows(strings):
        for step_id, step in sub(flow, "step").items():
            if not isinstance(step, dict):
                continue
            forms = [((*flow_path, "step", step_id), step)]
            forms += [
                ((*flow_path, "step", step_id, "sections", section_id), section)
                for section_id, section in sub(step, "sections").items()
                if isinstance(section, dict)
            ]
            for path, form in forms:
                data, descriptions = sub(form, "data"), sub(form, "data_description")
                for key in data:
                    if key not in descriptions:
                        report.error(
                            "strings.json",
                            dotted((*path, "data_description")),
                            f"missing data_description for field {key!r}",
                        )
                for key in descriptions:
                    if key not in data:
                        report.error(
                            "strings.json",
                            dotted((*path, "data_description")),
                            f"data_description for {key!r}, which is not a field in data",
                        )


def sub(node: Any, *keys: str) -> dict[str, Any]:
    """Return the mapping at `keys`, or an empty one when any step is missing or not a mapping.

    The cross checks run even on files that failed their schema (those errors are reported
    already), so they must not trip over a value of the wrong type.
    """
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def lookup(root: Any, parts: Iterable[str]) -> tuple[Any, str | None]:
    """Walk `root` along `parts`; return (value, None) or (None, first missing part)."""
    node = root
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None, part
        node = node[part]
    return node, None


def check_references(domain: str, strings: dict[str, Any], report: Report) -> None:
    """`[%key:…%]` references are whole, well-formed, and resolve inside this file.

    Home Assistant resolves references only while building core's translations. A custom
    integration ships translations/en.json, made by scripts/translations.py, which resolves
    references into this integration's own strings: any other reference would reach users raw.
    """
    own = ("component", domain)
    for path, value in leaves(strings):
        if not isinstance(value, str) or ("[%" not in value and "%]" not in value):
            continue
        where = dotted(path)
        match = REFERENCE_RE.match(value)
        if match is None:
            report.error(
                "strings.json",
                where,
                f"malformed reference {value!r}: a reference is the whole text, "
                "written [%key:component::<domain>::<key>::…%]",
            )
            continue
        parts = match.group(1).split("::")
        if tuple(parts[:2]) != own:
            report.error(
                "strings.json",
                where,
                f"reference {value!r} points outside this integration; only "
                f"[%key:component::{domain}::…%] is resolved for a custom integration",
            )
            continue
        target, missing = lookup(strings, parts[2:])
        if missing is not None:
            report.error(
                "strings.json",
                where,
                f"dangling reference {value!r}: {missing!r} does not exist",
            )
        elif not isinstance(target, str):
            report.error(
                "strings.json", where, f"reference {value!r} points to a section, not a text"
            )
        elif REFERENCE_RE.match(target):
            report.error(
                "strings.json",
                where,
                f"reference {value!r} points to another reference; point to its target",
            )


def check_strings(domain: str, strings: Any, report: Report) -> None:
    """Validate strings.json."""
    if not isinstance(strings, dict):
        report.error("strings.json", "", "strings.json must be a JSON object")
        return
    run_schema(STRINGS_SCHEMA, strings, "strings.json", report)
    if isinstance(strings.get("config"), dict) and "title" in strings["config"]:
        report.warn(
            "strings.json",
            "config.title",
            "obsolete: the integration's name comes from the manifest (or a root `title`)",
        )
    check_field_descriptions(strings, report)
    check_references(domain, strings, report)


@functools.cache
def translations_generator() -> Callable[[Any, dict[str, Any]], Any] | None:
    """Return scripts/translations.py's `resolve`, the one function that makes en.json."""
    spec = importlib.util.spec_from_file_location("_lightnvr_translations", TRANSLATIONS_SCRIPT)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    resolve: Callable[[Any, dict[str, Any]], Any] = module.resolve
    return resolve


def differences(want: Any, have: Any, path: tuple[str, ...] = ()) -> Iterator[str]:
    """Yield the key paths where two JSON trees differ."""
    if isinstance(want, dict) and isinstance(have, dict):
        for key in want.keys() | have.keys():
            if key not in have:
                yield f"{dotted((*path, key))} is missing"
            elif key not in want:
                yield f"{dotted((*path, key))} is not in strings.json"
            else:
                yield from differences(want[key], have[key], (*path, key))
    elif want != have:
        yield f"{dotted(path) or 'the whole file'} differs"


def check_english(integration: Path, strings: dict[str, Any], report: Report) -> None:
    """translations/en.json is what scripts/translations.py makes of strings.json.

    Home Assistant loads a custom integration's texts from translations/<language>.json only;
    strings.json is the source, so an edit there does nothing until en.json is regenerated.
    """
    name = "translations/en.json"
    english = load_json(integration / "translations" / "en.json", report, name)
    if english is None:
        if not (integration / "translations" / "en.json").is_file():
            report.error(name, "", "missing: run scripts/translations.py")
        return
    resolve = translations_generator()
    if resolve is None:
        report.unchecked.append(f"{name}: {TRANSLATIONS_SCRIPT} not found")
        return
    try:
        want = resolve(strings, strings)
    except (KeyError, TypeError) as err:
        report.unchecked.append(f"{name}: strings.json cannot be resolved ({err!r})")
        return
    if found := sorted(differences(want, english)):
        shown = "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")
        report.error(
            name, "", f"out of date with strings.json ({shown}): run scripts/translations.py"
        )
    for path, value in leaves(english):
        if isinstance(value, str) and "[%key:" in value:
            report.error(name, dotted(path), "unresolved reference: users would see it raw")


# ---------------------------------------------------------------------------------------------
# icons.json


def icon(value: Any) -> str:
    """Validate a Material Design Icons name, `mdi:name-with-dashes`."""
    if not isinstance(value, str) or not MDI_RE.match(value):
        raise vol.Invalid(f"{value!r} is not an icon: write mdi:<name> (Material Design Icons)")
    return value


def number_key(value: Any) -> str:
    """Validate a range icon's key: the number from which the icon applies."""
    try:
        float(value)
    except (TypeError, ValueError) as err:
        raise vol.Invalid(f"range key {value!r} is not a number") from err
    return str(value)


def not_same_as_default(value: Any) -> Any:
    """A state icon equal to the default icon is redundant (hassfest refuses it)."""
    if isinstance(value, dict) and (default := value.get("default")):
        for state, state_icon in sub(value, "state").items():
            if state_icon == default:
                raise vol.Invalid(f"the icon of state {state!r} is the default icon; drop it")
    return value


ENTITY_ICONS = vol.All(
    {
        vol.Optional("default"): icon,
        vol.Optional("state"): keyed(icon),
        vol.Optional("range"): keyed(icon, number_key),
        vol.Optional("state_attributes"): keyed(
            vol.All(
                {
                    vol.Optional("default"): icon,
                    vol.Optional("state"): keyed(icon),
                    vol.Optional("range"): keyed(icon, number_key),
                },
                not_same_as_default,
            )
        ),
    },
    not_same_as_default,
)
FLOW_ICONS = {
    vol.Optional("step"): keyed({vol.Optional("sections"): keyed(icon, any_key)}, any_key)
}
ICONS_SCHEMA = vol.Schema(
    {
        vol.Optional("config"): FLOW_ICONS,
        vol.Optional("options"): FLOW_ICONS,
        vol.Optional("issues"): keyed({vol.Optional("fix_flow"): FLOW_ICONS}, any_key),
        vol.Optional("entity"): keyed(keyed(ENTITY_ICONS), slug),
        # A service's icon: the short form, or the long form with icons of its sections.
        vol.Optional("services"): keyed(
            vol.Any(
                icon,
                {vol.Required("service"): icon, vol.Optional("sections"): keyed(icon)},
            )
        ),
    }
)


def check_icons(icons: Any, strings: dict[str, Any], report: Report) -> None:
    """Validate icons.json; entity icons belong to translation keys strings.json declares."""
    if not isinstance(icons, dict):
        report.error("icons.json", "", "icons.json must be a JSON object")
        return
    run_schema(ICONS_SCHEMA, icons, "icons.json", report)
    for platform, entries in sub(icons, "entity").items():
        if not isinstance(entries, dict):
            continue
        for key in entries:
            if key not in sub(strings, "entity", platform):
                report.error(
                    "icons.json",
                    f"entity.{platform}.{key}",
                    f"no entity uses translation key {key!r}: strings.json has no "
                    f"entity.{platform}.{key}",
                )


# ---------------------------------------------------------------------------------------------
# services.yaml


@functools.cache
def selector_validators() -> tuple[Validator, Validator] | None:
    """Home Assistant's own selector and target validators, when Home Assistant is installed."""
    try:
        from homeassistant.helpers import selector  # noqa: PLC0415 - optional and slow-ish
    except ImportError:
        return None
    return selector.validate_selector, selector.TargetSelector.CONFIG_SCHEMA


def selector_config(value: Any) -> Any:
    """Validate a field's selector with Home Assistant's rules (or at least its shape)."""
    if (validators := selector_validators()) is not None:
        return validators[0](value)
    if not isinstance(value, dict) or len(value) != 1:
        raise vol.Invalid("a selector is a mapping with one key, the selector type")
    return value


def target_config(value: Any) -> Any:
    """Validate a service's target."""
    if value is None:
        return value
    if (validators := selector_validators()) is not None:
        return validators[1](value)
    if not isinstance(value, dict):
        raise vol.Invalid("a target is a mapping (entity, device, area)")
    return value


def exists(value: Any) -> Any:
    """An example or default written as an empty value is a mistake."""
    if value is None:
        raise vol.Invalid("empty value")
    return value


def service_field_schema(targeted: bool) -> vol.Schema:
    """A service field (name and description may be given here, but we translate them)."""
    schema: dict[Any, Any] = {
        vol.Optional("name"): str,
        vol.Optional("description"): str,
        vol.Optional("example"): exists,
        vol.Optional("default"): exists,
        vol.Optional("required"): bool,
        vol.Optional("advanced"): bool,
        vol.Optional("selector"): selector_config,
    }
    if targeted:  # filters narrow the field to the targeted entities' attributes/features
        schema[vol.Optional("filter")] = dict
    return vol.Schema(schema)


def service_schema(value: Any) -> Any:
    """Validate one service of services.yaml."""
    if value is None:
        return value
    if not isinstance(value, dict):
        raise vol.Invalid("expected a mapping")
    field_schema = service_field_schema("target" in value)
    section_schema = vol.Schema(
        {
            vol.Required("fields"): keyed(field_schema, any_key),
            vol.Optional("collapsed"): bool,
            vol.Optional("name"): str,
            vol.Optional("description"): str,
        }
    )

    def field_or_section(entry: Any) -> Any:
        if isinstance(entry, dict) and "fields" in entry:
            return section_schema(entry)
        return field_schema(entry)

    def unique_fields(fields: dict[str, Any]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, entry in fields.items():
            names = entry["fields"] if isinstance(entry, dict) and "fields" in entry else [key]
            for name in names:
                if name in seen:
                    raise vol.Invalid(f"field {name!r} is used twice")
                seen.add(name)
        return fields

    return vol.Schema(
        {
            vol.Optional("target"): target_config,
            vol.Optional("name"): str,
            vol.Optional("description"): str,
            vol.Optional("fields"): vol.All(keyed(field_or_section, any_key), unique_fields),
        }
    )(value)


def service_fields(schema: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (name, definition) of every field of a service, sections flattened."""
    fields = schema.get("fields") if isinstance(schema, dict) else None
    for key, entry in (fields if isinstance(fields, dict) else {}).items():
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("fields"), dict):
            yield from (
                (name, item) for name, item in entry["fields"].items() if isinstance(item, dict)
            )
        else:
            yield key, entry


def check_service_texts(
    service: str,
    schema: dict[str, Any],
    texts: dict[str, Any],
    strings: dict[str, Any],
    report: Report,
) -> None:
    """One service's name, description, fields and sections are translated, and only those."""
    name = "services.yaml"
    for part in ("name", "description"):
        if part not in texts:
            report.error(name, service, f"no {part} in strings.json (services.{service}.{part})")
    field_texts = sub(texts, "fields")
    fields = dict(service_fields(schema))
    for field_name, definition in fields.items():
        for part in ("name", "description"):
            if part not in sub(field_texts, field_name):
                report.error(
                    name,
                    f"{service}.fields.{field_name}",
                    f"no {part} in strings.json (services.{service}.fields.{field_name}.{part})",
                )
        select = definition.get("selector")
        select = select.get("select") if isinstance(select, dict) else None
        key = select.get("translation_key") if isinstance(select, dict) else None
        if key and key not in sub(strings, "selector"):
            report.error(
                name,
                f"{service}.fields.{field_name}",
                f"selector translation_key {key!r} is not in strings.json selector",
            )
    for field_name in field_texts:
        if field_name not in fields:
            report.error(
                "strings.json",
                f"services.{service}.fields.{field_name}",
                f"translates a field that services.yaml's {service} does not have",
            )
    entries = schema.get("fields")
    for key, entry in (entries if isinstance(entries, dict) else {}).items():
        is_section = isinstance(entry, dict) and isinstance(entry.get("fields"), dict)
        if is_section and "name" not in sub(texts, "sections", key):
            report.error(
                name,
                f"{service}.fields.{key}",
                f"no name in strings.json (services.{service}.sections.{key}.name)",
            )


def check_services(
    services: Any, strings: dict[str, Any], icons: dict[str, Any], report: Report
) -> None:
    """Validate services.yaml, its translations in strings.json and its icons."""
    name = "services.yaml"
    if not isinstance(services, dict):
        report.error(name, "", "services.yaml must be a mapping of service names")
        return
    run_schema(keyed(service_schema, slug), services, name, report)
    translated, service_icons = sub(strings, "services"), sub(icons, "services")
    for service, schema in services.items():
        if service not in service_icons:
            report.error(name, service, f"no icon: add services.{service} to icons.json")
        texts = translated.get(service)
        if not isinstance(texts, dict):
            report.error(name, service, f"no translation: add services.{service} to strings.json")
            continue
        check_service_texts(
            service, schema if isinstance(schema, dict) else {}, texts, strings, report
        )
    for service in translated:
        if service not in services:
            report.error(
                "strings.json", f"services.{service}", "translates a service not in services.yaml"
            )
    for service in service_icons:
        if service not in services:
            report.error(
                "icons.json", f"services.{service}", "icon of a service not in services.yaml"
            )


# ---------------------------------------------------------------------------------------------
# The code: a static scan of the integration's Python modules

# Home Assistant's exceptions that carry a translated message to the user.
HA_EXCEPTIONS = frozenset(
    {
        "HomeAssistantError",
        "ServiceValidationError",
        "ConfigEntryNotReady",
        "ConfigEntryError",
        "ConfigEntryAuthFailed",
        "PlatformNotReady",
        "IntegrationError",
        "TemplateError",
        "ServiceNotSupported",
    }
)
FLOW_KINDS = {
    "ConfigFlow": "config",
    "OptionsFlow": "options",
    "OptionsFlowWithConfigEntry": "options",
    "OptionsFlowWithReload": "options",
    "ConfigSubentryFlow": "config_subentries",
}
# Used only when Home Assistant is not installed (its Platform enum is the real list).
FALLBACK_PLATFORMS = frozenset(
    {
        "binary_sensor", "button", "camera", "event", "image", "light", "number", "select",
        "sensor", "switch", "text", "update",
    }
)  # fmt: skip


@functools.cache
def entity_platforms() -> frozenset[str]:
    """Entity platform names: a module of that name holds the entities of that platform."""
    try:
        from homeassistant.const import Platform  # noqa: PLC0415 - optional
    except ImportError:
        return FALLBACK_PLATFORMS
    return frozenset(platform.value for platform in Platform)


@dataclass
class Module:
    """One parsed module of the integration and the string constants it defines or imports."""

    name: str  # dotted, rooted at the integration's folder name
    rel: str  # path relative to the integration
    tree: ast.Module
    is_package: bool
    assigned: dict[str, ast.expr] = field(default_factory=dict)
    imported: dict[str, tuple[str, str]] = field(default_factory=dict)


@functools.lru_cache(maxsize=256)
def parse(source: str) -> ast.Module:
    """Parse a module; cached by text, as tests validate many copies of the same code."""
    return ast.parse(source)


class Code:
    """The integration's modules, with just enough name resolution for literal keys."""

    def __init__(self, integration: Path, report: Report) -> None:
        """Parse every module; a module that does not parse is reported."""
        self.root = integration.name
        self.modules: dict[str, Module] = {}
        for path in sorted(integration.rglob("*.py")):
            rel = path.relative_to(integration)
            if "__pycache__" in rel.parts:
                continue
            try:
                tree = parse(path.read_text(encoding="utf-8"))
            except SyntaxError as err:
                report.error(str(rel), f"line {err.lineno}", f"does not parse: {err.msg}")
                continue
            parts = [self.root, *rel.with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            module = Module(".".join(parts), rel.as_posix(), tree, is_package)
            self._index(module)
            self.modules[module.name] = module
        self.classes = [
            node
            for module in self.modules.values()
            for node in ast.walk(module.tree)
            if isinstance(node, ast.ClassDef)
        ]

    def _index(self, module: Module) -> None:
        package = module.name if module.is_package else module.name.rpartition(".")[0]
        seen: set[str] = set()
        for node in module.tree.body:
            name, value = None, None
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                if isinstance(target := node.targets[0], ast.Name):
                    name, value = target.id, node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                name, value = node.target.id, node.value
            elif isinstance(node, ast.ImportFrom):
                source = self._import_source(package, node)
                if source is None:
                    continue
                for alias in node.names:
                    module.imported[alias.asname or alias.name] = (source, alias.name)
            if name is not None and value is not None:
                # A name bound twice has no single value: leave it unresolved.
                module.assigned[name] = value if name not in seen else ast.Constant(None)
                seen.add(name)

    def _import_source(self, package: str, node: ast.ImportFrom) -> str | None:
        if node.level:
            base = package.split(".")
            if node.level > 1:
                base = base[: -(node.level - 1)]
            return ".".join([*base, node.module] if node.module else base)
        prefix = f"custom_components.{self.root}"
        if node.module and (node.module == prefix or node.module.startswith(prefix + ".")):
            return self.root + node.module[len(prefix) :]
        return None  # outside the integration: not resolved

    def value(self, module: Module, node: ast.expr | None, depth: int = 0) -> Any:
        """Return the string (or tuple/list of strings) an expression is, or None."""
        if node is None or depth > 10:
            return None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, (ast.Tuple, ast.List)):
            items = [self.value(module, item, depth + 1) for item in node.elts]
            return tuple(items) if all(isinstance(item, str) for item in items) else None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("list", "tuple", "sorted")
            and len(node.args) == 1
            and not node.keywords
        ):
            return self.value(module, node.args[0], depth + 1)
        if isinstance(node, ast.Name) and node.id.isupper():
            # Only constants: an UPPER_CASE name inside a function is the module's (ruff's N806
            # keeps locals lower-case), whereas a lower-case one may be a local or a parameter.
            return self.name_value(module, node.id, depth + 1)
        return None

    def name_value(self, module: Module, name: str, depth: int) -> Any:
        """Resolve a module-level name through assignments and in-package imports."""
        if name in module.assigned:
            return self.value(module, module.assigned[name], depth)
        if name in module.imported:
            source, original = module.imported[name]
            if (target := self.modules.get(source)) is not None:
                return self.name_value(target, original, depth + 1)
        return None


def call_name(node: ast.Call) -> str | None:
    """Return the called function's last name: `ir.async_create_issue(…)` → async_create_issue."""
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def keyword(node: ast.Call, name: str) -> ast.expr | None:
    """Return a call's keyword argument."""
    return next((item.value for item in node.keywords if item.arg == name), None)


def argument(node: ast.Call, index: int, name: str) -> ast.expr | None:
    """Return a call's argument by keyword, else by position."""
    if (found := keyword(node, name)) is not None:
        return found
    return node.args[index] if len(node.args) > index else None


def dict_keys(code: Code, module: Module, node: ast.expr | None) -> set[str] | None:
    """Return the keys of a dict literal when they are all resolvable strings."""
    if not isinstance(node, ast.Dict):
        return None
    keys = {code.value(module, key) for key in node.keys}
    return keys if all(isinstance(key, str) for key in keys) else None


@dataclass
class Usage:
    """A translation key the code uses, where, and what it passes as placeholders."""

    kind: str
    key: str | None  # None: not resolvable statically
    module: Module
    line: int
    placeholders: set[str] | None = None
    platform: str | None = None
    options: tuple[str, ...] | None = None
    callee: str | None = None

    @property
    def where(self) -> str:
        return f"line {self.line}"


class UsageScanner(ast.NodeVisitor):
    """Collect translation keys used for entities, exceptions, issues and selectors."""

    def __init__(
        self,
        code: Code,
        module: Module,
        exceptions: frozenset[str] | set[str],
        descriptions: set[str],
        report: Report,
    ) -> None:
        """Scan one module."""
        self.code = code
        self.module = module
        self.exceptions = exceptions
        self.descriptions = descriptions
        self.report = report
        self.usages: list[Usage] = []
        self.services: list[tuple[str | None, set[str] | None, int]] = []
        stem = Path(module.rel).stem
        top_level = "/" not in module.rel
        self.platform = stem if top_level and stem in entity_platforms() else None

    def add(self, kind: str, node: ast.expr | None, line: int, **extra: Any) -> None:
        value = self.code.value(self.module, node)
        if isinstance(node, ast.Constant) and node.value is None:
            return  # explicitly no translation key
        self.usages.append(
            Usage(kind, value if isinstance(value, str) else None, self.module, line, **extra)
        )

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for statement in node.body:
            targets: list[ast.expr] = []
            value: ast.expr | None = None
            if isinstance(statement, ast.Assign):
                targets, value = statement.targets, statement.value
            elif isinstance(statement, ast.AnnAssign):
                targets, value = [statement.target], statement.value
            if any(isinstance(t, ast.Name) and t.id == "_attr_translation_key" for t in targets):
                self.add("entity", value, statement.lineno, platform=self.platform)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            if isinstance(target, ast.Attribute) and target.attr == "_attr_translation_key":
                self.add("entity", node.value, node.lineno, platform=self.platform)
        self.generic_visit(node)

    def visit_Raise(self, node: ast.Raise) -> None:
        exc = node.exc
        name = call_name(exc) if isinstance(exc, ast.Call) else None
        if isinstance(exc, ast.Name):
            name = exc.id
        if name in HA_EXCEPTIONS and (
            not isinstance(exc, ast.Call) or keyword(exc, "translation_key") is None
        ):
            self.report.warn(
                self.module.rel,
                f"line {node.lineno}",
                f"raises {name} without translation_domain/translation_key: the user sees an "
                "untranslated message (quality scale rule exception-translations)",
            )
        self.generic_visit(node)

    def ours(self, kind: str, domain: ast.expr | None, line: int) -> bool:
        """Whether a translation domain is this integration's (an unknown one is not checked)."""
        value = self.code.value(self.module, domain)
        if value is None:
            self.usages.append(Usage(kind, None, self.module, line))
        return bool(value == self.code.root)

    def visit_Call(self, node: ast.Call) -> None:
        name = call_name(node) or ""
        key = keyword(node, "translation_key")
        if name in self.exceptions and key is not None:
            domain = keyword(node, "translation_domain")
            if domain is None:
                self.report.error(
                    self.module.rel,
                    f"line {node.lineno}",
                    f"{name} has a translation_key but no translation_domain: "
                    "Home Assistant would not look the message up",
                )
            elif self.ours("exception", domain, node.lineno):
                self.add(
                    "exception",
                    key,
                    node.lineno,
                    placeholders=dict_keys(
                        self.code, self.module, keyword(node, "translation_placeholders")
                    ),
                )
        elif name in ("async_create_issue", "create_issue"):
            if self.ours("issue", argument(node, 1, "domain"), node.lineno):
                self.add(
                    "issue",
                    key,
                    node.lineno,
                    placeholders=dict_keys(
                        self.code, self.module, keyword(node, "translation_placeholders")
                    ),
                )
        elif (name.endswith("EntityDescription") or name in self.descriptions) and key is not None:
            self.add("entity", key, node.lineno, platform=self.platform)
        elif name.endswith("SelectorConfig") and key is not None:
            options = self.code.value(self.module, keyword(node, "options"))
            self.add(
                "selector",
                key,
                node.lineno,
                options=options if isinstance(options, tuple) else None,
            )
        elif key is not None:
            # Of unknown kind: it could be any section's, so nothing can be called unused.
            self.usages.append(Usage("unknown", None, self.module, node.lineno, callee=name))
        self.scan_service(name, node)
        self.generic_visit(node)

    def scan_service(self, name: str, node: ast.Call) -> None:
        """Record services the code registers, with the fields its schema accepts."""
        if name == "async_register_entity_service":
            service, schema = argument(node, 0, "name"), argument(node, 1, "schema")
        elif name in ("async_register", "register") and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if not (isinstance(owner, ast.Attribute) and owner.attr == "services"):
                return
            if self.code.value(self.module, argument(node, 0, "domain")) not in (
                None,
                self.code.root,
            ):
                return  # another integration's service
            service, schema = argument(node, 1, "service"), argument(node, 3, "schema")
        elif name in ("async_register_admin_service", "async_register_platform_entity_service"):
            service, schema = argument(node, 2, "service"), keyword(node, "schema")
        else:
            return
        resolved = self.code.value(self.module, service)
        fields: set[str] | None = None
        if isinstance(schema, ast.Call) and call_name(schema) == "Schema" and schema.args:
            schema = schema.args[0]
        if isinstance(schema, ast.Dict):
            keys = [
                self.code.value(self.module, item.args[0])
                if isinstance(item, ast.Call)
                and call_name(item) in ("Optional", "Required")
                and item.args
                else self.code.value(self.module, item)
                for item in schema.keys
                if item is not None
            ]
            if all(isinstance(key, str) for key in keys):
                fields = {key for key in keys if isinstance(key, str)}
        self.services.append((resolved if isinstance(resolved, str) else None, fields, node.lineno))


def subclasses(code: Code, roots: Callable[[str], bool]) -> set[str]:
    """Names of the integration's classes deriving (at any depth) from a root class name."""
    names: set[str] = set()
    changed = True
    while changed:  # subclasses of subclasses, in whatever module order
        changed = False
        for node in code.classes:
            if node.name in names:
                continue
            bases = [
                b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases
            ]
            if any(roots(base) or base in names for base in bases):
                names.add(node.name)
                changed = True
    return names


def check_usages(code: Code, strings: dict[str, Any], usages: list[Usage], report: Report) -> None:
    """Every translation key the code uses exists in strings.json, with its placeholders."""
    resolved: dict[str, bool] = {}
    used: dict[str, set[tuple[str, ...]]] = {}
    for usage in usages:
        file, where = usage.module.rel, usage.where
        if usage.kind == "unknown":
            report.unchecked.append(
                f"{file}:{usage.line}: translation_key passed to {usage.callee}()"
            )
            resolved.update(exception=False, issue=False, entity=False)
            continue
        if usage.key is None:
            report.unchecked.append(f"{file}:{usage.line}: {usage.kind} translation_key")
            resolved[usage.kind] = False
            continue
        resolved.setdefault(usage.kind, True)
        if usage.kind == "entity":
            if usage.platform is None:
                report.unchecked.append(
                    f"{file}:{usage.line}: entity translation_key {usage.key!r} outside a "
                    "platform module (its platform is unknown)"
                )
                resolved["entity"] = False
                continue
            path: tuple[str, ...] = ("entity", usage.platform, usage.key)
        elif usage.kind == "exception":
            path = ("exceptions", usage.key, "message")
        elif usage.kind == "issue":
            path = ("issues", usage.key)
        else:
            path = ("selector", usage.key)
        used.setdefault(usage.kind, set()).add(path[:3] if usage.kind == "entity" else path[:2])
        target, _ = lookup(strings, path)
        if target is None:
            report.error(
                file,
                where,
                f"{usage.kind} translation_key {usage.key!r} is not in strings.json "
                f"({dotted(path)})",
            )
            continue
        if usage.kind == "selector" and usage.options is not None:
            texts = sub(target, "options")
            for option in usage.options:
                if option not in texts:
                    report.error(
                        file,
                        where,
                        f"selector option {option!r} has no text in strings.json "
                        f"(selector.{usage.key}.options.{option})",
                    )
        if usage.placeholders is not None:
            wanted: set[str] = set()
            for _, value in leaves(target):
                if isinstance(value, str):
                    with contextlib.suppress(ValueError):  # reported by the strings schema
                        wanted |= placeholder_names(value)
            if missing := sorted(wanted - usage.placeholders):
                report.error(
                    file,
                    where,
                    f"{usage.kind} {usage.key!r}: the text uses placeholders {missing} that "
                    "translation_placeholders does not pass",
                )
    # Unused texts can only be told when every usage of that kind was resolved.
    for kind, section in (("exception", "exceptions"), ("issue", "issues")):
        if not resolved.get(kind, True):
            continue
        for key in sub(strings, section):
            if (section, key) not in used.get(kind, set()):
                report.warn(
                    "strings.json", f"{section}.{key}", f"no {kind} in the code uses this text"
                )
    if resolved.get("entity", True):
        for platform, entries in sub(strings, "entity").items():
            for key in entries if isinstance(entries, dict) else {}:
                if ("entity", platform, key) not in used.get("entity", set()):
                    report.warn(
                        "strings.json",
                        f"entity.{platform}.{key}",
                        "no entity in the code uses this translation key",
                    )


TARGET_KEYS = frozenset({"entity_id", "device_id", "area_id", "floor_id", "label_id"})


def check_registered_services(
    services: dict[str, Any] | None,
    registered: list[tuple[Module, str | None, set[str] | None, int]],
    report: Report,
) -> None:
    """Services the code registers are described in services.yaml with the same fields."""
    if registered and services is None:
        module, _, _, line = registered[0]
        report.error(
            module.rel, f"line {line}", "registers a service but there is no services.yaml"
        )
        return
    described = services or {}
    for module, service, fields, line in registered:
        if service is None:
            report.unchecked.append(f"{module.rel}:{line}: registered service name")
            continue
        if service not in described:
            report.error(module.rel, f"line {line}", f"service {service!r} is not in services.yaml")
            continue
        if fields is None:
            report.unchecked.append(f"{module.rel}:{line}: fields of service {service!r}")
            continue
        yaml_fields = set(dict(service_fields(described[service])))
        if extra := sorted(yaml_fields - fields):
            report.error(
                "services.yaml",
                service,
                f"fields {extra} are not accepted by the schema the code registers",
            )
        # Target keys come from the service's `target`, not from its fields.
        if missing := sorted(fields - yaml_fields - TARGET_KEYS):
            report.warn(
                "services.yaml",
                service,
                f"fields {missing} are accepted by the code but not offered in the UI",
            )


# ---------------------------------------------------------------------------------------------
# Config flows: errors, abort reasons and step ids against the flow's texts


@dataclass
class FlowFacts:
    """What a flow handler (and the module functions it calls) can show."""

    errors: list[tuple[ast.expr, int]] = field(default_factory=list)
    aborts: list[tuple[ast.expr | str, int]] = field(default_factory=list)
    steps: list[tuple[ast.expr, int]] = field(default_factory=list)
    calls: set[str] = field(default_factory=set)


def error_slots(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[int] | None:
    """Which parts of the return value are error dicts, judged by the annotation.

    A helper annotated `-> dict[str, str]` returns errors; in `-> tuple[…, dict[str, str], …]`
    the `dict[str, str]` slot does. None: the function returns no errors dict.
    """
    returns = function.returns
    if returns is None:
        return None
    if ast.unparse(returns) == "dict[str, str]":
        return {-1}
    if isinstance(returns, ast.Subscript) and ast.unparse(returns.value) == "tuple":
        parts = returns.slice.elts if isinstance(returns.slice, ast.Tuple) else [returns.slice]
        slots = {i for i, part in enumerate(parts) if ast.unparse(part) == "dict[str, str]"}
        return slots or None
    return None


def is_errors_name(node: ast.expr) -> bool:
    """`errors` (or `…_errors`), the conventional name of a form's error dict."""
    return isinstance(node, ast.Name) and (node.id == "errors" or node.id.endswith("_errors"))


def flow_facts(function: ast.FunctionDef | ast.AsyncFunctionDef) -> FlowFacts:
    """Collect the error values, abort reasons and step ids one function shows."""
    facts = FlowFacts()
    slots = error_slots(function)

    def dict_values(node: ast.expr | None) -> None:
        if isinstance(node, ast.Dict):
            facts.errors.extend((value, value.lineno) for value in node.values)

    for node in ast.walk(function):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Subscript) and is_errors_name(target.value):
                    facts.errors.append((node.value, node.lineno))
                if is_errors_name(target):
                    dict_values(node.value)
        elif isinstance(node, ast.AnnAssign) and is_errors_name(node.target):
            dict_values(node.value)
        elif isinstance(node, ast.Return) and slots is not None and node.value is not None:
            if -1 in slots:
                dict_values(node.value)
            elif isinstance(node.value, ast.Tuple):
                for slot in slots:
                    if slot < len(node.value.elts):
                        dict_values(node.value.elts[slot])
        elif isinstance(node, ast.Call):
            name = call_name(node)
            if isinstance(node.func, ast.Name):
                facts.calls.add(node.func.id)
            if name in ("async_abort", "AbortFlow"):
                if (reason := argument(node, 0, "reason")) is not None:
                    facts.aborts.append((reason, node.lineno))
            elif name == "async_update_and_abort":  # subentry reconfigure
                facts.aborts.append(("reconfigure_successful", node.lineno))
            elif name == "async_update_reload_and_abort":
                found = keyword(node, "reason")
                facts.aborts.append((found if found is not None else "<reload>", node.lineno))
            elif name in ("_abort_if_unique_id_configured", "_async_abort_entries_match"):
                found = keyword(node, "error") if name.startswith("_abort_if") else None
                facts.aborts.append(
                    (found if found is not None else "already_configured", node.lineno)
                )
            elif name in ("async_show_form", "async_show_menu") and (
                step := keyword(node, "step_id")
            ):
                facts.steps.append((step, node.lineno))
            if name == "async_show_form":
                dict_values(keyword(node, "errors"))
    return facts


def subentry_types(code: Code, module: Module) -> dict[str, str | None]:
    """Map subentry flow class names to their subentry type, from the config flow's table."""
    found: dict[str, str | None] = {}
    for node in ast.walk(module.tree):
        is_table = (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name == "async_get_supported_subentry_types"
        )
        if not is_table:
            continue
        for item in ast.walk(node):
            if isinstance(item, ast.Return) and isinstance(item.value, ast.Dict):
                for key, value in zip(item.value.keys, item.value.values, strict=True):
                    if isinstance(value, ast.Name):
                        kind = code.value(module, key)
                        found[value.id] = kind if isinstance(kind, str) else None
    return found


def check_flows(
    code: Code, manifest: dict[str, Any], strings: dict[str, Any], report: Report
) -> None:
    """Errors, abort reasons and step ids of config_flow.py exist in the flow's texts."""
    module = code.modules.get(f"{code.root}.config_flow")
    if manifest.get("single_config_entry") and "single_instance_allowed" not in (
        sub(strings, "config", "abort")
    ):
        report.error(
            "strings.json",
            "config.abort",
            "single_config_entry is set: Home Assistant aborts a second setup with "
            "'single_instance_allowed', which needs a text here",
        )
    if module is None:
        return
    functions = {
        node.name: node
        for node in module.tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    function_facts = {name: flow_facts(node) for name, node in functions.items()}
    kinds = subentry_types(code, module)
    classes: dict[str, str] = {}
    for node in module.tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
        kind = next((FLOW_KINDS.get(b) or classes.get(b) for b in bases if
                     FLOW_KINDS.get(b) or classes.get(b)), None)  # fmt: skip
        if kind is None:
            continue
        classes[node.name] = kind
        if kind == "config_subentries":
            subentry = kinds.get(node.name)
            if subentry is None:
                report.unchecked.append(f"{module.rel}:{node.lineno}: subentry type of {node.name}")
                continue
            section_path: tuple[str, ...] = ("config_subentries", subentry)
        else:
            section_path = (kind,)
        section, _ = lookup(strings, section_path)
        section = section if isinstance(section, dict) else {}
        methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        facts = [flow_facts(method) for method in methods]
        # Module functions the handler calls, and the ones they call in turn.
        pending = {name for fact in facts for name in fact.calls if name in function_facts}
        reached: set[str] = set()
        while pending:
            name = pending.pop()
            reached.add(name)
            facts.append(function_facts[name])
            pending |= {c for c in function_facts[name].calls if c in function_facts} - reached
        method_names = {method.name for method in methods}
        check_flow_facts(
            code,
            module,
            section=section,
            path=section_path,
            facts=facts,
            methods=method_names,
            report=report,
        )


def check_flow_facts(
    code: Code,
    module: Module,
    *,
    section: dict[str, Any],
    path: tuple[str, ...],
    facts: list[FlowFacts],
    methods: set[str],
    report: Report,
) -> None:
    """Compare what one flow handler shows with its section of strings.json."""
    where = dotted(path)
    reported: set[tuple[str, str]] = set()

    def need(part: str, node: ast.expr | str, line: int, what: str) -> None:
        value = node if isinstance(node, str) else code.value(module, node)
        if value == "<reload>":  # async_update_reload_and_abort: the reason follows the source
            wanted = [
                reason
                for step, reason in (
                    ("async_step_reconfigure", "reconfigure_successful"),
                    ("async_step_reauth", "reauth_successful"),
                )
                if step in methods
            ]
            for reason in wanted:
                need(part, reason, line, what)
            return
        if not isinstance(value, str):
            report.unchecked.append(f"{module.rel}:{line}: {what} of the {where} flow")
            return
        if value not in sub(section, part) and (part, value) not in reported:
            reported.add((part, value))
            report.error(
                module.rel,
                f"line {line}",
                f"{what} {value!r} is not in strings.json ({where}.{part}.{value})",
            )

    for fact in facts:
        for node, line in fact.errors:
            need("error", node, line, "form error")
        for reason, line in fact.aborts:
            need("abort", reason, line, "abort reason")
        for node, line in fact.steps:
            need("step", node, line, "step")


# ---------------------------------------------------------------------------------------------
# Entry points


def check_code(
    integration: Path,
    manifest: dict[str, Any],
    strings: dict[str, Any],
    services: dict[str, Any] | None,
    report: Report,
) -> None:
    """Cross-check the Python modules with strings.json and services.yaml."""
    code = Code(integration, report)
    exceptions = HA_EXCEPTIONS | subclasses(code, HA_EXCEPTIONS.__contains__)
    descriptions = subclasses(code, lambda name: name.endswith("EntityDescription"))
    usages: list[Usage] = []
    registered: list[tuple[Module, str | None, set[str] | None, int]] = []
    for module in code.modules.values():
        scanner = UsageScanner(code, module, exceptions, descriptions, report)
        scanner.visit(module.tree)
        usages += scanner.usages
        registered += [(module, *service) for service in scanner.services]
    check_usages(code, strings, usages, report)
    check_registered_services(services, registered, report)
    check_flows(code, manifest, strings, report)


def validate(integration: Path) -> Report:
    """Run every check on one integration folder."""
    report = Report()
    manifest = load_json(integration / "manifest.json", report, "manifest.json")
    if manifest is None:
        if not (integration / "manifest.json").is_file():
            report.error("manifest.json", "", "missing")
        return report
    check_manifest(integration, manifest, report)
    domain = integration.name
    strings = load_json(integration / "strings.json", report, "strings.json")
    if strings is None:
        if not (integration / "strings.json").is_file():
            report.error("strings.json", "", "missing: it is the source of every text")
        strings = {}
    else:
        check_strings(domain, strings, report)
        if isinstance(strings, dict):
            check_english(integration, strings, report)
    strings = strings if isinstance(strings, dict) else {}
    icons = load_json(integration / "icons.json", report, "icons.json")
    if icons is not None:
        check_icons(icons, strings, report)
    icons = icons if isinstance(icons, dict) else {}
    services: Any = None
    services_file = integration / "services.yaml"
    if services_file.is_file():
        try:
            services = yaml.safe_load(services_file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            report.error("services.yaml", "", f"invalid YAML: {err}")
        else:
            check_services(services, strings, icons, report)
    check_code(
        integration,
        manifest if isinstance(manifest, dict) else {},
        strings,
        services if isinstance(services, dict) else None,
        report,
    )
    return report


def main(argv: list[str] | None = None) -> int:
    """Print the findings; exit 1 on an error (or on a warning with --strict)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("integration", nargs="?", type=Path, default=DEFAULT_INTEGRATION)
    parser.add_argument("--strict", action="store_true", help="fail on warnings too")
    parser.add_argument("--verbose", action="store_true", help="list what was not checked")
    args = parser.parse_args(argv)
    integration: Path = args.integration.resolve()
    report = validate(integration)
    for line in report.messages():
        print(line)
    if args.verbose:
        for line in report.unchecked:
            print(f"not checked: {line}")
    failed = bool(report.errors) or (args.strict and bool(report.warnings))
    print(
        f"{integration.name}: {len(report.errors)} error(s), {len(report.warnings)} warning(s), "
        f"{len(report.unchecked)} usage(s) not statically checkable"
        + ("" if args.verbose or not report.unchecked else " (--verbose lists them)")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
