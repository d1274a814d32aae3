"""docs/configuration.md lists every setting of the code, with its environment
variable and its default, so the list cannot fall behind settings.py."""

from __future__ import annotations

import re

from dicom_node.settings import ENV_PREFIX, Settings
from tests.support import REPO


def _rows() -> dict[str, tuple[str, str]]:
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z_0-9]+)` \| `([A-Z_0-9]+)` \| ([^|]*) \|", text, re.MULTILINE)
    return {name: (env, default.strip()) for name, env, default in rows}


def _shown(value: object) -> str:
    if value is None:
        return "unset"
    if value in ("", [], {}):
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def test_every_setting_is_documented_with_its_variable_and_default() -> None:
    rows = _rows()
    assert sorted(rows) == sorted(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        env, shown = rows[name]
        assert env == f"{ENV_PREFIX}{name.upper()}", name
        assert shown == _shown(default), name
