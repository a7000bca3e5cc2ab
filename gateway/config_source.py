"""Reading the YAML an operator wrote, keeping every line number.

``settings.py`` validates; this module only turns text into plain Python
values and remembers, for every key path, the line it came from, so that an
error can say ``web.port: must be <= 65535 (line 12)`` instead of leaving the
operator to hunt. It also resolves secret references (``${env:NAME}``,
``${env:NAME:-default}``, ``${file:/path}``) and applies ``--set`` overrides.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]

_REFERENCE = re.compile(r"\$\{(env|file):([^}]*)\}")


def format_path(path: KeyPath) -> str:
    """``("sip", "transports", 1)`` -> ``sip.transports[1]``; the root is ``(root)``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(root)"


@dataclass
class ConfigSource:
    """Plain data from YAML plus where each key came from."""

    data: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict)
    overridden: set[KeyPath] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    #: Paths that already have a problem; later stages do not pile on.
    problem_paths: set[KeyPath] = field(default_factory=set)

    def where(self, path: KeyPath) -> str:
        """The position suffix for an error at ``path``: its own line, an
        override, or the nearest enclosing key's line."""
        for cut in range(len(path), -1, -1):
            prefix = path[:cut]
            if prefix in self.overridden:
                return " (--set)"
            if prefix in self.lines:
                return f" (line {self.lines[prefix]})"
        return ""

    def problem(self, path: KeyPath, reason: str) -> None:
        """Record one error in the ``key.path: reason (line N)`` form."""
        if path in self.problem_paths:
            return
        self.problem_paths.add(path)
        self.problems.append(f"{format_path(path)}: {reason}{self.where(path)}")


def parse_yaml(text: str) -> ConfigSource:
    """Parse YAML text into a ``ConfigSource``; syntax errors become problems."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" (line {mark.line + 1})" if mark is not None else ""
        reason = exc.problem or exc.context or "invalid YAML"
        return ConfigSource(data={}, problems=[f"(yaml): syntax error: {reason}{line}"])
    except yaml.YAMLError as exc:
        return ConfigSource(data={}, problems=[f"(yaml): {exc}"])
    source = ConfigSource(data={})
    if node is None:
        return source  # an empty file means "all defaults"
    if not isinstance(node, yaml.MappingNode):
        source.problems.append(
            f"(root): the file must be a mapping of keys, not a {_node_kind(node)}"
            f" (line {node.start_mark.line + 1})"
        )
        return source
    source.data = _build_mapping(node, (), source)
    return source


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "list"
    return "single value"


def _build(node: yaml.Node, path: KeyPath, source: ConfigSource) -> Any:
    source.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        return _build_mapping(node, path, source)
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), source) for i, item in enumerate(node.value)]
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        source.problem(path, f"cannot read value: {exc.problem}")
        return None
    finally:
        loader.dispose()


def _build_mapping(node: yaml.MappingNode, path: KeyPath, source: ConfigSource) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            source.problems.append(
                f"{format_path(path)}: keys must be plain names, merge keys are not supported"
                f" (line {line})"
            )
            continue
        key = str(key_node.value)
        child: KeyPath = (*path, key)
        if key in out:
            first = source.lines.get(child)
            source.problems.append(
                f"{format_path(child)}: duplicate key, first given on line {first} (line {line})"
            )
            continue
        source.lines[child] = line
        out[key] = _build(value_node, child, source)
    return out


def resolve_references(source: ConfigSource, environ: Mapping[str, str] | None = None) -> None:
    """Replace ``${env:NAME}``, ``${env:NAME:-default}`` and ``${file:/path}`` in
    every string value, in place. A missing variable or unreadable file is a
    problem naming the key; the secret itself never appears in a message."""
    env = os.environ if environ is None else environ
    source.data = _resolve(source.data, (), source, env)


def _resolve(value: Any, path: KeyPath, source: ConfigSource, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _resolve(v, (*path, k), source, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, (*path, i), source, env) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        kind, arg = match.group(1), match.group(2)
        if kind == "env":
            name, has_default, default = arg.partition(":-")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                source.problem(path, f"invalid environment variable name {name!r}")
                return ""
            if name in env:
                return env[name]
            if has_default:
                return default
            source.problem(path, f"environment variable {name} is not set")
            return ""
        file_path = Path(arg)
        if not file_path.is_absolute():
            source.problem(path, f"secret file path must be absolute: {arg}")
            return ""
        try:
            return file_path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            source.problem(path, f"cannot read secret file {arg}: {exc.strerror or exc}")
            return ""
        except UnicodeDecodeError:
            source.problem(path, f"secret file {arg} is not UTF-8 text")
            return ""

    return _REFERENCE.sub(substitute, value)


def apply_overrides(source: ConfigSource, overrides: list[str]) -> None:
    """Apply ``key.path=value`` overrides (value parsed as YAML, so ``8081``
    is a number and ``[udp, tcp]`` a list)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            source.problems.append(f"--set {item!r}: expected key.path=value")
            continue
        parts = key.strip().split(".")
        if any(not p for p in parts):
            source.problems.append(f"--set {item!r}: empty part in key path")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        target: dict[str, Any] = source.data
        path: KeyPath = ()
        for part in parts[:-1]:
            path = (*path, part)
            nxt = target.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                target[part] = nxt
            target = nxt
        target[parts[-1]] = value
        source.overridden.add(tuple(parts))
