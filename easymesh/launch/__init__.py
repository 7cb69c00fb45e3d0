"""meshlaunch: start a coordinator and a whole mesh of nodes from a launch file, stop them all.

    from easymesh.launch import load_config, make_plan, Launcher
    status = Launcher(make_plan(load_config("launch.yaml"))).run()

Modules: ``source`` (YAML that remembers lines, rejects duplicate keys), ``schema`` (the
launch.yaml keys, checked), ``plan`` (what starts on this host and with which command line),
``process`` (one child in its own process group), ``output`` (prefixed, coloured lines),
``launcher`` (the supervisor). The command line is ``easymesh.cli.launch``.

Choices where the issue is silent (the README's "meshlaunch" section says the same):

- Copies (``number: 3``) all get the same ``--name``, so they form one load-balancing group;
  their output is labelled ``camera#1`` .. ``camera#3`` and each gets ``MESHLAUNCH_COPY``
  (1..3) and ``MESHLAUNCH_NODE`` in its environment.
- Appended to every node command: ``--name NAME --coordinator CLIENT_HOST:PORT``. The same
  address is also put in ``EASYMESH_COORDINATOR`` for programs that build nodes without
  reading options. The key (``coordinator.authkey``, or ``meshlaunch --authkey-file``) goes
  to the coordinator and every node in ``EASYMESH_AUTHKEY`` only: a command line can be read
  by every local user (``/proc/<pid>/cmdline``), an environment only by its owner and root. ``PYTHONUNBUFFERED=1`` is set so Python output arrives line by line.
  When meshlaunch runs from a virtualenv, that virtualenv's ``bin`` goes first on the nodes'
  PATH, so ``command: [python, ...]`` uses the interpreter meshlaunch was installed in.
  A node's ``env:`` is applied last and wins; ``VAR: null`` removes a variable.
- ``shell: true``: the command runs under ``/bin/sh -c``; a list is joined with spaces
  (unquoted, so pipes and ``&&`` work) and the mesh options are appended, quoted, at the end.
- ``cwd:`` relative to the launch file's folder (``~`` expanded); without it a node runs in
  meshlaunch's current folder.
- ``on_host`` (a name or a list) matches this machine's hostname or fully qualified name,
  either whole or up to the first dot, case-insensitively (``--as-host`` overrides the name).
  A coordinator skipped by ``on_host``/``disabled``/``--no-coordinator`` is still the address
  the nodes are given.
- Readiness: the coordinator counts as started when it prints ``listening on HOST:PORT``
  (within 20 s); ``post_delay`` (default 0) is waited after that. ``port: 0`` picks a free
  port, read from that line; it needs the coordinator to be started by this launch.
- ``respawn_delay`` defaults to 1 s (no hot restart loop); a respawned copy keeps its copy
  number. ``respawn`` and ``required`` together are refused. A required node's exit, for any
  reason, ends the launch.
- When every node has exited for good, meshlaunch ends if it started no coordinator; if it
  did, the coordinator keeps running (other machines may use it) until Ctrl-C.
- A coordinator started by meshlaunch that dies ends the launch (status 1).
- Exit status: 0 after Ctrl-C/SIGTERM/SIGHUP; a required node's status when it ends the
  launch; 1 when the coordinator failed, or when all nodes ended on their own and one
  failed; 2 for a bad file or bad options (nothing was started).
- Stop order: nodes first (SIGINT, ``--grace`` s, SIGTERM, 2 s, SIGKILL, all process groups
  at once), then the coordinator the same way.
- Top-level keys starting with ``x-`` are ignored (a place for YAML anchors).
"""

from __future__ import annotations

from easymesh.launch.errors import ConfigError, LaunchError
from easymesh.launch.launcher import Launcher
from easymesh.launch.output import Printer
from easymesh.launch.plan import Plan, host_names, make_plan
from easymesh.launch.schema import (
    CoordinatorSpec,
    LaunchConfig,
    NodeSpec,
    load_config,
    parse_config,
)

__all__ = [
    "ConfigError",
    "CoordinatorSpec",
    "LaunchConfig",
    "LaunchError",
    "Launcher",
    "NodeSpec",
    "Plan",
    "Printer",
    "host_names",
    "load_config",
    "make_plan",
    "parse_config",
]
