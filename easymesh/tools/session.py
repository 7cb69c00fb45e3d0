"""Run one tool invocation: open its node, run the action, report mesh errors.

A tool's node is an ordinary node. Its default name is ``<prog>-<pid>``: unique,
so that two tools (two ``meshtopic echo`` in two terminals, say) never form a
load-balancing group and split the messages between them.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from easymesh import signals
from easymesh.errors import MeshError
from easymesh.node import Node


def default_name(prog: str) -> str:
    """``<prog>-<pid>``: the tool's node name when ``--name`` is not given."""
    return f"{prog}-{os.getpid()}"


def run_tool(
    prog: str,
    name: str | None,
    node_kwargs: dict[str, Any],
    action: Callable[[Node], int],
    err: TextIO | None = None,
) -> int:
    """Open a node named ``name`` (default :func:`default_name`), return ``action(node)``
    and close the node, also on Ctrl-C. SIGTERM is treated like Ctrl-C (and so is
    SIGINT where the shell started us with it ignored).

    A MeshError (coordinator unreachable, wrong authkey, ...) is printed to ``err``
    as ``<prog>: <message>`` and gives exit status 1. KeyboardInterrupt propagates
    after the node is closed.
    """
    err = err or sys.stderr
    restore = signals.interrupt_on()
    try:
        with Node(name or default_name(prog), **{"watch": "all", **node_kwargs}) as node:
            return action(node)
    except MeshError as exc:
        print(f"{prog}: {exc}", file=err, flush=True)
        return 1
    finally:
        restore()


def others(node: Node) -> list[Any]:
    """The mesh's nodes (NodeInfo records) without the tool's own node."""
    return [n for n in node.nodes() if n.id != node.id]


class UsageError(ValueError):
    """A command-line value is malformed (exit status 2)."""


def number(text: str | None, kind: type, what: str, minimum: float | None = None) -> Any:
    """``kind(text)`` (int or float), None for None. Raises UsageError if it is not a
    number of that kind or is below ``minimum``."""
    if text is None:
        return None
    try:
        value = kind(text)
    except ValueError:
        raise UsageError(
            f"{what} must be {'an integer' if kind is int else 'a number'}, not {text!r}"
        ) from None
    if minimum is not None and value < minimum:
        raise UsageError(f"{what} must be at least {minimum:g}, not {text}")
    return value


def literal(text: str) -> Any:
    """The Python literal in ``text`` (``ast.literal_eval``: never runs code).

    Raises UsageError with a hint, for example when a string was not quoted.
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise UsageError(
            f"DATA {text!r} is not a Python literal; to send a string, quote it: \"'{text}'\""
        ) from None


def run_cli(
    prog: str,
    args: dict[str, Any],
    node_kwargs: dict[str, Any],
    make_action: Callable[[dict[str, Any]], Callable[[Node], int]],
) -> int:
    """What meshtopic, meshservice and meshnode do with their parsed arguments: build the
    action (a malformed value prints ``<prog>: <reason>`` and gives exit status 2), then
    :func:`run_tool` it."""
    try:
        action = make_action(args)
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    return run_tool(prog, args["--name"], node_kwargs, action)
