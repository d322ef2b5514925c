#!/usr/bin/env python3
"""Regenerate translations/en.json from strings.json, resolving `[%key:…%]` references.

Home Assistant's own tooling does this for core integrations; a custom integration ships the
generated English file itself. Run: python3 scripts/translations.py
"""

from __future__ import annotations

import json
from pathlib import Path
import re
from typing import Any

INTEGRATION = Path(__file__).resolve().parent.parent / "custom_components" / "lightnvr"
REFERENCE = re.compile(r"\[%key:component::lightnvr::(.*)%\]")


def resolve(node: Any, root: dict[str, Any]) -> Any:
    """Replace every reference in `node` by the text it points to."""
    if isinstance(node, dict):
        return {key: resolve(value, root) for key, value in node.items()}
    if isinstance(node, str) and (match := REFERENCE.fullmatch(node)):
        target: Any = root
        for part in match.group(1).split("::"):
            target = target[part]
        return target
    return node


def main() -> None:
    """Write translations/en.json."""
    strings = json.loads((INTEGRATION / "strings.json").read_text())
    text = json.dumps(resolve(strings, strings), indent=2, ensure_ascii=False) + "\n"
    (INTEGRATION / "translations" / "en.json").write_text(text)


if __name__ == "__main__":
    main()
