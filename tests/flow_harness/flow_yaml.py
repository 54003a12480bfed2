"""YAML read and written the way flowctl (serde_yaml) does it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


class _FlowYamlLoader(yaml.SafeLoader):
    """YAML 1.2-ish loading, as serde_yaml does it: timestamps stay strings and only
    true/false are booleans (PyYAML would turn `start_date: 2024-01-01T00:00:00Z`
    into a datetime and `on` into True)."""


_FlowYamlLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_FlowYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


class _FlowYamlDumper(yaml.SafeDumper):
    """Writes YAML in flowctl's (serde_yaml's) style: `---` first, sequences indented
    under their key, double quotes where quoting is needed, and `-m`-like strings quoted."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def choose_scalar_style(self) -> str:
        style = super().choose_scalar_style()
        if style == "'":
            return '"'
        if style == "" and isinstance(self.event, yaml.ScalarEvent) and self.event.value.startswith("-"):
            # Plain `-m` is valid YAML, but serde_yaml quotes it; match its output.
            return '"' if self.event.implicit[0] and not _is_number(self.event.value) else style
        return style


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _load_yaml(path: Path) -> Any:
    with path.open("rb") as f:
        return yaml.load(f, Loader=_FlowYamlLoader)  # A SafeLoader subclass: no arbitrary objects.


def _dump_yaml(value: Any) -> str:
    text: str = yaml.dump(
        value,
        Dumper=_FlowYamlDumper,
        sort_keys=False,
        explicit_start=True,
        allow_unicode=True,
        width=1 << 30,
    )
    return text
