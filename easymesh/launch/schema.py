"""The launch.yaml schema: read a launch file into frozen dataclasses, or say exactly why not.

Every problem in a file is collected and reported together, each naming the file, the line,
the dotted key (``nodes.camera.respawn_delay``), what was expected and what was found. Unknown
keys are errors (with a "did you mean" hint) because a misspelt ``respwan: true`` silently
ignored is worse than a refusal. Top-level keys that start with ``x-`` are ignored, so a file
can hold YAML anchors (``x-common-env: &env {...}`` then ``env: *env`` or ``<<: *env``).

A key given with no value (YAML null) takes its default. YAML booleans where a string is
expected (``on_host: yes``) are refused with a hint to quote them; numbers inside ``command``
lists and ``env`` values are turned into strings (``[--fps, 30]`` works).
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field
from typing import Any

from easymesh.config import DEFAULT_PORT
from easymesh.launch.errors import ConfigError
from easymesh.launch.source import Mapping, read_yaml

COORDINATOR_KEYS = (
    "host",
    "client_host",
    "port",
    "authkey",
    "log_heartbeats",
    "disabled",
    "on_host",
    "post_delay",
)
NODE_KEYS = (
    "command",
    "shell",
    "disabled",
    "on_host",
    "number",
    "pre_delay",
    "post_delay",
    "respawn",
    "respawn_delay",
    "required",
    "env",
    "cwd",
)
TOP_KEYS = ("coordinator", "nodes")
#: Seconds between a node's exit and its restart when ``respawn_delay`` is not given.
DEFAULT_RESPAWN_DELAY = 1.0
MAX_NAME_LENGTH = 256  # what easymesh.Node accepts


@dataclass(frozen=True)
class CoordinatorSpec:
    """The ``coordinator:`` section (all defaults when the section is absent)."""

    host: str = ""
    client_host: str = "localhost"
    port: int = DEFAULT_PORT
    authkey: str | None = None
    log_heartbeats: bool = False
    disabled: bool = False
    on_host: tuple[str, ...] = ()
    post_delay: float = 0.0
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class NodeSpec:
    """One entry of ``nodes:``. ``command`` is a tuple of words or one shell string."""

    name: str
    command: tuple[str, ...] | str
    shell: bool = False
    disabled: bool = False
    on_host: tuple[str, ...] = ()
    number: int = 1
    pre_delay: float = 0.0
    post_delay: float = 0.0
    respawn: bool = False
    respawn_delay: float = DEFAULT_RESPAWN_DELAY
    required: bool = False
    env: tuple[tuple[str, str | None], ...] = ()
    cwd: str | None = None
    line: int = field(default=0, compare=False)
    key_lines: tuple[tuple[str, int], ...] = field(default=(), compare=False)

    def line_of(self, key: str) -> int:
        """The line where ``key`` was written, else the line of the node."""
        return dict(self.key_lines).get(key, self.line)

    def label(self, copy: int) -> str:
        """How output and messages name copy ``copy`` (1-based): ``camera`` or ``camera#2``."""
        return self.name if self.number == 1 else f"{self.name}#{copy}"


@dataclass(frozen=True)
class LaunchConfig:
    """A whole launch file. ``base_dir`` is the folder relative ``cwd:`` values start from."""

    source: str
    base_dir: str
    coordinator: CoordinatorSpec
    nodes: tuple[NodeSpec, ...]

    def node(self, name: str) -> NodeSpec:
        """The node called ``name``. Raises KeyError when there is none."""
        for spec in self.nodes:
            if spec.name == name:
                return spec
        raise KeyError(name)


def load_config(path: str | os.PathLike[str]) -> LaunchConfig:
    """Read and check the launch file at ``path``.

    Raises ConfigError when the file cannot be read, is not YAML, or breaks the schema.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such launch file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read the launch file: {exc}"]) from None
    return parse_config(text, source=path, base_dir=os.path.dirname(os.path.abspath(path)))


def parse_config(
    text: str, *, source: str = "<string>", base_dir: str | None = None
) -> LaunchConfig:
    """Check launch-file ``text``; ``source`` names it in errors.

    Raises ConfigError listing every problem found.
    """
    data = read_yaml(text, source)
    checker = _Checker(source)
    config = checker.top(data, base_dir or os.getcwd())
    if checker.problems:
        raise ConfigError(checker.problems)
    assert config is not None
    return config


def _kind(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        type(None): "nothing",
    }
    if isinstance(value, dict):
        return "a mapping"
    return names.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Checker:
    """Turns parsed YAML into specs, collecting problems instead of stopping at the first."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def problem(self, line: int, path: str, message: str) -> None:
        where = f"{self.source}:{line}" if line else self.source
        self.problems.append(f"{where}: {path}: {message}")

    def expected(self, m: Mapping, key: str, path: str, what: str) -> None:
        value = m[key]
        hint = (
            " (quote it to make it a string)"
            if isinstance(value, bool) and "string" in what
            else ""
        )
        self.problem(
            m.line_of(key), path, f"expected {what}, got {_kind(value)} {_show(value)}{hint}"
        )

    def keys(self, m: Mapping, allowed: tuple[str, ...], path: str, what: str) -> None:
        for key in m:
            if key in allowed or (path == "" and isinstance(key, str) and key.startswith("x-")):
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            where = f"{path}.{key}" if path else str(key)
            self.problem(
                m.line_of(key), where, f"unknown key{hint}; {what} keys are: {', '.join(allowed)}"
            )

    # -- typed values -----------------------------------------------------------------------

    def boolean(self, m: Mapping, key: str, path: str, default: bool) -> bool:
        value = m.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.expected(m, key, f"{path}.{key}", "true or false")
            return default
        return value

    def number(self, m: Mapping, key: str, path: str, default: float) -> float:
        value = m.get(key)
        if value is None:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            self.expected(m, key, f"{path}.{key}", "a number of seconds >= 0")
            return default
        return float(value)

    def integer(self, m: Mapping, key: str, path: str, default: int, low: int, high: int) -> int:
        value = m.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.expected(m, key, f"{path}.{key}", f"a whole number from {low} to {high}")
            return default
        return value

    def string(
        self, m: Mapping, key: str, path: str, default: str | None, *, empty: bool = False
    ) -> str | None:
        value = m.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or (not empty and not value):
            self.expected(m, key, f"{path}.{key}", "a string" if empty else "a non-empty string")
            return default
        return value

    def hosts(self, m: Mapping, key: str, path: str) -> tuple[str, ...]:
        value = m.get(key)
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) and v.strip() for v in items):
            self.expected(m, key, f"{path}.{key}", "a host name (a string) or a list of them")
            return ()
        return tuple(v.strip() for v in items)

    def command(self, m: Mapping, path: str) -> tuple[str, ...] | str:
        if "command" not in m or m["command"] is None:
            self.problem(
                m.line,
                f"{path}.command",
                "missing; every node needs a command (a list of words, or a string)",
            )
            return ""
        value = m["command"]
        if isinstance(value, str):
            if not value.strip():
                self.expected(m, "command", f"{path}.command", "a non-empty command")
            return value
        if isinstance(value, list) and value:
            words: list[str] = []
            for i, word in enumerate(value):
                if isinstance(word, str):
                    words.append(word)
                elif isinstance(word, (int, float)) and not isinstance(word, bool):
                    words.append(str(word))
                else:
                    hint = " (quote it)" if isinstance(word, bool) or word is None else ""
                    self.problem(
                        m.line_of("command"),
                        f"{path}.command[{i}]",
                        f"expected a string or a number, got {_kind(word)} {_show(word)}{hint}",
                    )
            return tuple(words)
        self.expected(m, "command", f"{path}.command", "a non-empty list of words or a string")
        return ""

    def env(self, m: Mapping, path: str) -> tuple[tuple[str, str | None], ...]:
        value = m.get("env")
        if value is None:
            return ()
        if not isinstance(value, dict):
            self.expected(m, "env", f"{path}.env", "a mapping of variable name to value")
            return ()
        line = value.line_of if isinstance(value, Mapping) else (lambda k: m.line_of("env"))
        result: list[tuple[str, str | None]] = []
        for name, val in value.items():
            where = f"{path}.env.{name}"
            if not isinstance(name, str) or not name or "=" in name or "\0" in name:
                self.problem(
                    line(name), where, "a variable name must be a non-empty string without '='"
                )
            elif val is None or isinstance(val, str):
                result.append((name, val))
            elif isinstance(val, (int, float)) and not isinstance(val, bool):
                result.append((name, str(val)))
            else:
                hint = " (quote it)" if isinstance(val, bool) else ""
                self.problem(
                    line(name),
                    where,
                    f"expected a string, a number or nothing "
                    f"(to unset it), got {_kind(val)} {_show(val)}{hint}",
                )
        return tuple(result)

    # -- sections ---------------------------------------------------------------------------

    def top(self, data: Any, base_dir: str) -> LaunchConfig | None:
        if data is None:
            self.problem(0, "(file)", "empty; expected a mapping with a 'nodes' key")
            return None
        if not isinstance(data, Mapping):
            self.problem(0, "(file)", f"expected a mapping with a 'nodes' key, got {_kind(data)}")
            return None
        self.keys(data, TOP_KEYS, "", "top-level")
        coordinator = self.coordinator(data)
        nodes: list[NodeSpec] = []
        raw = data.get("nodes")
        if "nodes" not in data or raw is None:
            self.problem(
                data.line_of("nodes"),
                "nodes",
                "missing; expected a mapping of node name to its settings",
            )
        elif not isinstance(raw, Mapping):
            self.expected(data, "nodes", "nodes", "a mapping of node name to its settings")
        else:
            for name, settings in raw.items():
                spec = self.node(raw, name, settings)
                if spec is not None:
                    nodes.append(spec)
        return LaunchConfig(self.source, base_dir, coordinator, tuple(nodes))

    def coordinator(self, data: Mapping) -> CoordinatorSpec:
        m = data.get("coordinator")
        if m is None:
            return CoordinatorSpec()
        if not isinstance(m, Mapping):
            self.expected(data, "coordinator", "coordinator", "a mapping of settings")
            return CoordinatorSpec()
        p = "coordinator"
        self.keys(m, COORDINATOR_KEYS, p, "coordinator")
        return CoordinatorSpec(
            host=self.string(m, "host", p, "", empty=True) or "",
            client_host=self.string(m, "client_host", p, "localhost") or "localhost",
            port=self.integer(m, "port", p, DEFAULT_PORT, 0, 65535),
            authkey=self.string(m, "authkey", p, None),
            log_heartbeats=self.boolean(m, "log_heartbeats", p, False),
            disabled=self.boolean(m, "disabled", p, False),
            on_host=self.hosts(m, "on_host", p),
            post_delay=self.number(m, "post_delay", p, 0.0),
            line=data.line_of("coordinator"),
        )

    def node(self, nodes: Mapping, name: Any, m: Any) -> NodeSpec | None:
        line = nodes.line_of(name)
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
            hint = (
                " (YAML reads yes/no/on/off/true/false as booleans: quote the name)"
                if isinstance(name, bool)
                else ""
            )
            self.problem(
                line,
                f"nodes.{name!r}",
                f"a node name must be a non-empty string of "
                f"at most {MAX_NAME_LENGTH} characters, got {_kind(name)}{hint}",
            )
            return None
        p = f"nodes.{name}"
        if not isinstance(m, Mapping):
            what = "missing settings" if m is None else f"got {_kind(m)} {_show(m)}"
            self.problem(line, p, f"expected a mapping with at least 'command', {what}")
            return None
        self.keys(m, NODE_KEYS, p, "node")
        command = self.command(m, p)
        respawn = self.boolean(m, "respawn", p, False)
        required = self.boolean(m, "required", p, False)
        if respawn and required:
            self.problem(
                m.line_of("required"),
                p,
                "'respawn' and 'required' cannot both be "
                "true (a required node ends the launch when it exits)",
            )
        return NodeSpec(
            name=name,
            command=command,
            shell=self.boolean(m, "shell", p, isinstance(command, str)),
            disabled=self.boolean(m, "disabled", p, False),
            on_host=self.hosts(m, "on_host", p),
            number=self.integer(m, "number", p, 1, 1, 1000),
            pre_delay=self.number(m, "pre_delay", p, 0.0),
            post_delay=self.number(m, "post_delay", p, 0.0),
            respawn=respawn,
            respawn_delay=self.number(m, "respawn_delay", p, DEFAULT_RESPAWN_DELAY),
            required=required,
            env=self.env(m, p),
            cwd=self.string(m, "cwd", p, None),
            line=line,
            key_lines=tuple((k, v) for k, v in m.key_lines.items() if isinstance(k, str)),
        )
