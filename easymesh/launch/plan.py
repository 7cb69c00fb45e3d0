"""Deciding what a launch starts on this machine, and the exact command line of each process.

Everything that can be checked before a process starts is checked here (unknown ``--exclude``
names, ``port: 0`` without a coordinator to ask, a missing ``cwd`` folder, a program that is
not on the PATH), so a bad launch fails before anything runs.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from easymesh.config import format_address
from easymesh.launch.errors import ConfigError
from easymesh.launch.schema import CoordinatorSpec, LaunchConfig, NodeSpec

SHELL = "/bin/sh"


def host_names(hostname: str | None = None) -> frozenset[str]:
    """The names ``on_host`` may use for this machine, lower-cased.

    With ``hostname`` given, that name (and its short form) stands for this machine. Otherwise:
    ``socket.gethostname()``, the fully qualified name ``socket.getfqdn()``, and the short form
    (up to the first dot) of each.
    """
    names = [hostname] if hostname else [socket.gethostname(), socket.getfqdn()]
    result: set[str] = set()
    for name in names:
        name = name.strip().lower().rstrip(".")
        if name:
            result.update((name, name.split(".")[0]))
    return frozenset(result)


def runs_here(on_host: tuple[str, ...], names: Iterable[str]) -> bool:
    """True when ``on_host`` is empty or one of its entries is one of ``names``."""
    if not on_host:
        return True
    names = set(names)
    return any(h.lower().rstrip(".") in names for h in on_host)


@dataclass(frozen=True)
class Plan:
    """What to start here: ``nodes`` in file order; ``skipped`` pairs a node name with why."""

    config: LaunchConfig
    start_coordinator: bool
    nodes: tuple[NodeSpec, ...]
    skipped: tuple[tuple[str, str], ...]
    coordinator_note: str = ""

    @property
    def coordinator(self) -> CoordinatorSpec:
        return self.config.coordinator

    def labels(self) -> list[str]:
        """Every output label this plan can print (for aligning the prefixes)."""
        labels = ["meshlaunch"] + (["coordinator"] if self.start_coordinator else [])
        for spec in self.nodes:
            labels += [spec.label(i) for i in range(1, spec.number + 1)]
        return labels


def make_plan(
    config: LaunchConfig,
    *,
    exclude: Iterable[str] = (),
    no_coordinator: bool = False,
    hostname: str | None = None,
) -> Plan:
    """Decide what starts on this machine.

    Raises ConfigError (listing every problem) for ``exclude`` names that are not nodes,
    ``port: 0`` when this launch does not start the coordinator, a missing ``cwd`` folder, or
    a program that cannot be found.
    """
    problems: list[str] = []
    src = config.source
    known = [spec.name for spec in config.nodes]
    excluded = set(exclude)
    for name in sorted(excluded - set(known)):
        problems.append(
            f"--exclude {name}: no node of that name in {src} (nodes: {', '.join(known) or 'none'})"
        )
    need_names = config.coordinator.on_host or any(spec.on_host for spec in config.nodes)
    names = host_names(hostname) if need_names else frozenset()
    coord = config.coordinator
    start_coordinator, note = True, ""
    if no_coordinator:
        start_coordinator, note = False, "not started (--no-coordinator)"
    elif coord.disabled:
        start_coordinator, note = False, "not started (disabled: true)"
    elif not runs_here(coord.on_host, names):
        start_coordinator, note = False, f"not started (on_host: {', '.join(coord.on_host)})"
    nodes: list[NodeSpec] = []
    skipped: list[tuple[str, str]] = []
    for spec in config.nodes:
        if spec.name in excluded:
            skipped.append((spec.name, "--exclude"))
        elif spec.disabled:
            skipped.append((spec.name, "disabled: true"))
        elif not runs_here(spec.on_host, names):
            skipped.append((spec.name, f"on_host: {', '.join(spec.on_host)}"))
        else:
            nodes.append(spec)
            problems += _check_node(config, spec)
    if coord.port == 0 and not start_coordinator and nodes:
        problems.append(
            f"{src}:{coord.line}: coordinator.port: 0 (pick a free port) needs the "
            f"coordinator to be started by this launch, but it is {note}"
        )
    if problems:
        raise ConfigError(problems)
    return Plan(config, start_coordinator, tuple(nodes), tuple(skipped), note)


def _check_node(config: LaunchConfig, spec: NodeSpec) -> list[str]:
    where = f"{config.source}:{{}}: nodes.{spec.name}"
    cwd = node_cwd(config, spec)
    if cwd is not None and not os.path.isdir(cwd):
        return [f"{where.format(spec.line_of('cwd'))}.cwd: no such folder: {cwd}"]
    if spec.shell:
        return []
    argv = command_words(spec)
    if not argv:
        return [f"{where.format(spec.line_of('command'))}.command: the command is empty"]
    program = argv[0]
    path = dict(node_environment(spec, "", None, 1)).get("PATH", os.defpath)
    if os.sep in program:
        full = os.path.join(cwd or os.getcwd(), os.path.expanduser(program))
        found = os.path.isfile(full) and os.access(full, os.X_OK)
    else:
        found = shutil.which(program, path=path) is not None
    if not found:
        return [
            f"{where.format(spec.line_of('command'))}.command: program {program!r} "
            f"{'is not an executable file' if os.sep in program else 'not found on the PATH'}"
        ]
    return []


def node_cwd(config: LaunchConfig, spec: NodeSpec) -> str | None:
    """The node's working folder: ``cwd`` (``~`` expanded, relative to the launch file's
    folder), or None to run in meshlaunch's own current folder."""
    if spec.cwd is None:
        return None
    return os.path.normpath(os.path.join(config.base_dir, os.path.expanduser(spec.cwd)))


def command_words(spec: NodeSpec) -> list[str]:
    """The node's own words (before the appended options), for a command run without a shell."""
    return list(spec.command) if isinstance(spec.command, tuple) else shlex.split(spec.command)


def mesh_options(name: str, address: str) -> list[str]:
    """What meshlaunch appends to every node command. Never the key: any local user can
    read a command line (``/proc/<pid>/cmdline``); it goes in ``EASYMESH_AUTHKEY``."""
    return ["--name", name, "--coordinator", address]


def node_argv(spec: NodeSpec, address: str) -> list[str]:
    """The full argv for one copy of ``spec``.

    Without a shell: the words plus the mesh options. With ``shell: true``: ``/bin/sh -c`` and
    the command text (a list is joined with spaces, unquoted, so shell syntax in it works) with
    the mesh options appended, quoted, at the end of the text.
    """
    extra = mesh_options(spec.name, address)
    if not spec.shell:
        return command_words(spec) + extra
    text = spec.command if isinstance(spec.command, str) else " ".join(spec.command)
    return [SHELL, "-c", f"{text} {shlex.join(extra)}"]


def node_environment(
    spec: NodeSpec,
    address: str,
    authkey: str | None,
    copy: int,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one copy: meshlaunch's own, then meshlaunch's additions, then the
    node's ``env:`` (which wins; a null value removes the variable).

    Additions: ``PYTHONUNBUFFERED=1`` (output shows up line by line), ``EASYMESH_COORDINATOR``
    and ``EASYMESH_AUTHKEY`` (the only way the key reaches a node: a process's environment
    is readable by its owner and root only, its command line by everyone),
    ``MESHLAUNCH_NODE`` (the name) and ``MESHLAUNCH_COPY`` (1..number), and, when meshlaunch
    runs from a virtualenv, that virtualenv's ``bin`` first on the PATH (as if activated).
    """
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    if sys.prefix != sys.base_prefix:
        bindir = os.path.dirname(sys.executable)
        parts = env.get("PATH", os.defpath).split(os.pathsep)
        if parts[0] != bindir:
            env["PATH"] = os.pathsep.join([bindir] + parts)
        env["VIRTUAL_ENV"] = sys.prefix
    if address:
        env["EASYMESH_COORDINATOR"] = address
    if authkey:
        env["EASYMESH_AUTHKEY"] = authkey
    env["MESHLAUNCH_NODE"] = spec.name
    env["MESHLAUNCH_COPY"] = str(copy)
    for key, value in spec.env:
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def coordinator_argv(spec: CoordinatorSpec) -> list[str]:
    """The coordinator's argv: this Python running ``-m easymesh`` with the section's settings
    (the key is not among them: see :func:`coordinator_environment`)."""
    argv = [sys.executable, "-m", "easymesh", "--host", spec.host, "--port", str(spec.port)]
    if spec.log_heartbeats:
        argv.append("--log-heartbeats")
    return argv


def coordinator_environment(
    spec: CoordinatorSpec, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The coordinator's environment: meshlaunch's own, ``PYTHONUNBUFFERED=1``, and the key
    in ``EASYMESH_AUTHKEY`` when the launch has one."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    if spec.authkey:
        env["EASYMESH_AUTHKEY"] = spec.authkey
    return env


def client_address(spec: CoordinatorSpec, port: int) -> str:
    """``client_host:port`` as nodes are told it (IPv6 hosts in brackets)."""
    return format_address(spec.client_host, port)


def describe(plan: Plan) -> list[str]:
    """What the plan would run, one line each (a key set by the launch is named, never shown)."""
    coord = plan.coordinator
    address = client_address(coord, coord.port)
    if not coord.port:
        address = address.rsplit(":", 1)[0] + ":<port chosen at start>"

    def show(argv: list[str]) -> str:
        return " ".join(shlex.quote(w) for w in argv)

    lines = []
    if coord.authkey:
        lines.append("key: given to the coordinator and every node in EASYMESH_AUTHKEY")
    if plan.start_coordinator:
        lines.append(f"coordinator: {show(coordinator_argv(coord))}")
    else:
        lines.append(f"coordinator: {plan.coordinator_note}")
    for spec in plan.nodes:
        extras = [k for k in ("respawn", "required") if getattr(spec, k)]
        tail = f"  ({', '.join(extras)})" if extras else ""
        for copy in range(1, spec.number + 1):
            lines.append(f"{spec.label(copy)}: {show(node_argv(spec, address))}{tail}")
    for name, why in plan.skipped:
        lines.append(f"{name}: not started ({why})")
    return lines
