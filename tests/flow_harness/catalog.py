"""The catalog: test.flow.yaml, its imports and schema files, loaded into a FlowSource,
and rewritten around discovered bindings as plain `flowctl raw discover` does."""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .documents import merge_patch
from .errors import HarnessError
from .flow_yaml import _dump_yaml, _load_yaml

DEFAULT_INTERVAL_SECONDS = 300
"""Flow's default capture `interval` (5 minutes), sent as `intervalSeconds`."""


@dataclass(frozen=True, slots=True)
class Collection:
    """A collection a binding captures into, as the connector sees it in Validate and Open."""

    name: str
    key: tuple[str, ...]
    write_schema: Mapping[str, Any]
    read_schema: Mapping[str, Any] | None = None

    def spec(self) -> dict[str, Any]:
        """The CollectionSpec fields the CDK reads."""
        out: dict[str, Any] = {"name": self.name, "key": list(self.key), "writeSchema": self.write_schema}
        if self.read_schema is not None:
            out["readSchema"] = self.read_schema
        return out


@dataclass(frozen=True, slots=True)
class Binding:
    """One `bindings[]` entry of the capture in test.flow.yaml."""

    resource: Mapping[str, Any]
    target: str
    disable: bool = False
    backfill: int = 0


@dataclass(frozen=True, slots=True)
class FlowSource:
    """A capture loaded from a test.flow.yaml, with overrides applied.

    `config` is the plaintext endpoint config, or None when it cannot be used (then
    `config_error` says why, and requests that need a config raise HarnessError).
    `env` holds only the variables the harness adds to the inherited environment:
    `LOG_LEVEL`, `endpoint.local.env`, then caller overrides.
    """

    path: Path
    capture: str
    command: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    config: Mapping[str, Any] | None
    config_error: str | None
    interval_seconds: int
    bindings: tuple[Binding, ...]
    collections: Mapping[str, Collection]
    missing_imports: tuple[Path, ...] = ()

    @property
    def enabled_bindings(self) -> tuple[Binding, ...]:
        """Bindings Flow sends to Validate and Open (`disable: true` ones are left out)."""
        return tuple(b for b in self.bindings if not b.disable)

    @property
    def prefix(self) -> str:
        """The catalog prefix discovered collections go under (`acmeCo`)."""
        return self.capture.rsplit("/", 1)[0] if "/" in self.capture else "acmeCo"

    def require_config(self) -> Mapping[str, Any]:
        if self.config is None:
            raise HarnessError(self.config_error or f"{self.path}: no endpoint config")
        return self.config

    def collection(self, name: str) -> Collection:
        try:
            return self.collections[name]
        except KeyError:
            hint = (
                f"; imports not found: {', '.join(map(str, self.missing_imports))}"
                if self.missing_imports
                else ""
            )
            raise HarnessError(
                f"{self.path}: collection {name!r} is not defined (run discover with write=True?){hint}"
            ) from None


def load_source(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    config_patch: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> FlowSource:
    """Load the capture in `path` (a test.flow.yaml), following `import:` for collections.

    - `name` picks the capture when the file has several.
    - The endpoint config is `config` if given, else the inline object or file named
      by `endpoint.local.config`. A sops-encrypted file cannot be decrypted here: the
      file named by the `FLOW_HARNESS_CONFIG` environment variable (a plaintext
      copy, e.g. a git-ignored config.local.yaml) stands in for it, with the
      `_sops` key suffixes stripped as flowctl does; without one `config` is unset
      (spec still works; requests that need the config raise HarnessError).
      `config_patch` is then applied as an RFC 7396 merge patch, e.g. to point the
      connector at an emulator on a random port.
    - `env` is added to the spawned process's environment, over `LOG_LEVEL`
      (`shards.logLevel`, default `info`) and `endpoint.local.env`.
    - `cwd` defaults to the directory holding `path`, as flowctl runs local commands.

    Import files that do not exist are tolerated (a fresh catalog before
    `discover(write=True)`), and reported when a collection is looked up.
    """
    path = Path(path).resolve()
    document = _load_yaml(path) or {}
    captures = document.get("captures") or {}
    if not captures:
        raise HarnessError(f"{path}: no captures")
    if name is None:
        if len(captures) != 1:
            raise HarnessError(f"{path}: several captures ({', '.join(captures)}); pass name=")
        name = next(iter(captures))
    if name not in captures:
        raise HarnessError(f"{path}: no capture {name!r}")
    capture = captures[name] or {}

    local = (capture.get("endpoint") or {}).get("local")
    if not isinstance(local, dict) or not local.get("command"):
        raise HarnessError(f"{path}: capture {name!r} needs endpoint.local.command")
    command = tuple(str(part) for part in local["command"])

    endpoint_config, config_error = _endpoint_config(path, local.get("config"), config)
    if endpoint_config is not None and config_patch is not None:
        endpoint_config = merge_patch(endpoint_config, config_patch)

    log_level = str(((capture.get("shards") or {}).get("logLevel")) or "info")
    process_env = {"LOG_LEVEL": log_level}
    process_env.update({str(k): str(v) for k, v in (local.get("env") or {}).items()})
    process_env.update(env or {})

    interval = capture.get("interval")
    interval_seconds = DEFAULT_INTERVAL_SECONDS if interval is None else int(parse_duration(interval))

    bindings = tuple(
        Binding(
            resource=b.get("resource") or {},
            target=str(b["target"]),
            disable=bool(b.get("disable", False)),
            backfill=int(b.get("backfill", 0)),
        )
        for b in capture.get("bindings") or []
    )

    collections_found: dict[str, Collection] = {}
    missing: list[Path] = []
    _load_collections(path, document, collections_found, missing, visited=set())

    return FlowSource(
        path=path,
        capture=name,
        command=command,
        cwd=Path(cwd).resolve() if cwd is not None else path.parent,
        env=process_env,
        config=endpoint_config,
        config_error=config_error,
        interval_seconds=interval_seconds,
        bindings=bindings,
        collections=collections_found,
        missing_imports=tuple(missing),
    )


def _endpoint_config(
    path: Path, declared: Any, override: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, str | None]:
    """The plaintext endpoint config, or (None, why not)."""
    if override is not None:
        return copy.deepcopy(dict(override)), None
    if declared is None or isinstance(declared, dict):
        return copy.deepcopy(declared or {}), None
    if not isinstance(declared, str):
        return None, f"{path}: endpoint.local.config must be an object or a file name"

    declared_path = path.parent / declared
    if not declared_path.exists():
        return None, f"{path}: endpoint config file {declared_path} does not exist"
    loaded = _load_yaml(declared_path)
    if not (isinstance(loaded, dict) and "sops" in loaded):
        return loaded if isinstance(loaded, dict) else {}, None

    plaintext = os.environ.get("FLOW_HARNESS_CONFIG")
    if not plaintext:
        return None, (
            f"{declared_path} is sops-encrypted and the harness cannot decrypt it: "
            "pass config=... or set FLOW_HARNESS_CONFIG to a plaintext copy"
        )
    decrypted = _load_yaml(Path(plaintext))
    if not isinstance(decrypted, dict) or "sops" in decrypted:
        return None, f"FLOW_HARNESS_CONFIG={plaintext} is not a plaintext config object"
    suffix = str((loaded["sops"] or {}).get("encrypted_suffix") or "_sops")
    return _strip_suffix(decrypted, suffix), None


def _strip_suffix(value: Any, suffix: str) -> Any:
    """Remove a sops `encrypted_suffix` from every key, as flowctl does after decrypting."""
    if isinstance(value, dict):
        return {
            (k[: -len(suffix)] if isinstance(k, str) and k.endswith(suffix) else k): _strip_suffix(v, suffix)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_strip_suffix(v, suffix) for v in value]
    return value


def _load_collections(
    path: Path,
    document: Mapping[str, Any],
    out: dict[str, Collection],
    missing: list[Path],
    visited: set[Path],
) -> None:
    visited.add(path)
    for name, spec_ in (document.get("collections") or {}).items():
        spec_ = spec_ or {}
        write = spec_.get("writeSchema", spec_.get("schema"))
        read = spec_.get("readSchema")
        out[str(name)] = Collection(
            name=str(name),
            key=tuple(spec_.get("key") or ()),
            write_schema=_load_schema(path, write),
            read_schema=None if read is None else _load_schema(path, read),
        )
    imports = document.get("import") or []
    for entry in imports:
        target = (path.parent / str(entry)).resolve()
        if target in visited:
            continue
        if not target.exists():
            missing.append(target)
            continue
        _load_collections(target, _load_yaml(target) or {}, out, missing, visited)


def _load_schema(path: Path, schema: Any) -> Mapping[str, Any]:
    if schema is None:
        return {}
    loaded: Mapping[str, Any] = _load_yaml(path.parent / schema) or {} if isinstance(schema, str) else schema
    return loaded


def _resolve(
    source: str | os.PathLike[str] | FlowSource,
    config: Mapping[str, Any] | None,
    config_patch: Mapping[str, Any] | None,
    env: Mapping[str, str] | None,
) -> FlowSource:
    """A FlowSource for `source`, with per-call overrides layered on."""
    if not isinstance(source, FlowSource):
        return load_source(source, config=config, config_patch=config_patch, env=env)
    changes: dict[str, Any] = {}
    if config is not None:
        changes["config"], changes["config_error"] = copy.deepcopy(dict(config)), None
    if config_patch is not None:
        base = changes.get("config", source.config)
        if base is not None:
            changes["config"] = merge_patch(base, config_patch)
    if env:
        changes["env"] = {**source.env, **env}
    return dataclasses.replace(source, **changes) if changes else source


_DURATION_UNITS = {
    "ms": 0.001, "msec": 0.001, "millis": 0.001,
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}  # fmt: skip
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)")


def parse_duration(value: str | float) -> float:
    """Seconds in a humantime duration (`10s`, `3m`, `1h 30m`, `500ms`); a bare number is seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip().lower()
    total, pos = 0.0, 0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if not match or (match.group(2) and match.group(2) not in _DURATION_UNITS):
            raise HarnessError(f"not a duration: {value!r}")
        total += float(match.group(1)) * _DURATION_UNITS.get(match.group(2), 1.0)
        pos = match.end()
    if pos == 0:
        raise HarnessError(f"not a duration: {value!r}")
    return total


def write_discovered(
    source: str | os.PathLike[str] | FlowSource, bindings: Sequence[Mapping[str, Any]]
) -> list[Path]:
    """Rewrite the catalog around `bindings` the way plain `flowctl raw discover` does.

    - test.flow.yaml: the capture's `bindings` become one entry per discovered
      binding (`resource` = its resourceConfig, `disable: true` if marked, `target` =
      `<prefix>/<recommendedName>`), `<prefix>/flow.yaml` is added to `import` (listed
      first in the file); everything else, including the endpoint config as written
      in the file, is kept.
    - `<prefix>/flow.yaml`: `collections`, sorted by name, each with
      `schema: <recommendedName>.schema.yaml` and `key`.
    - `<prefix>/<recommendedName>.schema.yaml` per binding, holding its documentSchema;
      other `*.schema.yaml` files under `<prefix>/` are deleted.

    Returns the files written. `<prefix>` is the capture name's prefix (`acmeCo`).
    """
    src = source if isinstance(source, FlowSource) else load_source(source)
    prefix = src.prefix
    root = src.path.parent
    catalog_dir = root / prefix
    catalog_dir.mkdir(parents=True, exist_ok=True)

    document = _load_yaml(src.path) or {}
    capture = document["captures"][src.capture]
    new_bindings = []
    for binding in bindings:
        entry: dict[str, Any] = {"resource": binding["resourceConfig"]}
        if binding.get("disable"):
            entry["disable"] = True
        entry["target"] = f"{prefix}/{binding['recommendedName']}"
        new_bindings.append(entry)
    capture["bindings"] = new_bindings

    flow_import = f"{prefix}/flow.yaml"
    imports = list(document.get("import") or [])
    if flow_import not in imports:
        imports.append(flow_import)
    rewritten = {"import": imports, **{k: v for k, v in document.items() if k != "import"}}

    written: list[Path] = []
    schema_files: set[Path] = set()
    collections_doc: dict[str, Any] = {}
    for binding in sorted(bindings, key=lambda b: str(b["recommendedName"])):
        name = str(binding["recommendedName"])
        schema_path = catalog_dir / f"{name}.schema.yaml"
        schema_path.parent.mkdir(parents=True, exist_ok=True)
        schema_path.write_text(_dump_yaml(binding["documentSchema"]))
        schema_files.add(schema_path.resolve())
        written.append(schema_path)
        collections_doc[f"{prefix}/{name}"] = {
            "schema": f"{name}.schema.yaml",
            "key": list(binding.get("key") or []),
        }

    for stale in catalog_dir.rglob("*.schema.yaml"):
        if stale.resolve() not in schema_files:
            stale.unlink()

    flow_path = catalog_dir / "flow.yaml"
    flow_path.write_text(_dump_yaml({"collections": collections_doc}))
    src.path.write_text(_dump_yaml(rewritten))
    return [src.path, flow_path, *written]
