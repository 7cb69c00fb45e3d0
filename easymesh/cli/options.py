"""What every command line shares: parsing with docopt, the node options, logging, exit.

Parsing goes through :func:`parse` (docopt-ng, the maintained fork of docopt) so that
every command answers the same way: ``-h``/``--help`` print the screen and exit 0,
``--version`` prints the version and exits 0, and arguments that do not fit the usage
print what docopt says plus the usage lines to stderr and exit 2 (the status the README
gives for bad options). docopt-ng reports leftover words as a Python repr
("Warning: found unmatched (duplicate?) arguments [Option(None, '--x', 0, True)]");
that line becomes one plain sentence. Its other messages ("--port requires argument")
are kept as they are.

The mesh key: ``--authkey-file FILE`` (read by :func:`easymesh.config.read_authkey_file`)
is preferred over ``--authkey KEY``, which any local user can read in ``/proc/*/cmdline``;
``$EASYMESH_AUTHKEY`` is the default of both. A key file that cannot be used ends the
command with ``<prog>: <reason>`` and status 2, before anything connects.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from docopt import DocoptExit, docopt

from easymesh import config

_UNMATCHED = "Warning: found unmatched (duplicate?) arguments"


def parse(doc: str, argv: list[str] | None = None, version: str | None = None) -> dict[str, Any]:
    """Parse ``argv`` (default ``sys.argv[1:]``) against the usage screen ``doc``.

    Raises SystemExit: status 0 after printing the help or the version, 2 after printing
    a usage error to stderr.
    """
    argv = sys.argv[1:] if argv is None else argv
    try:
        return dict(docopt(doc, argv=argv, version=version))
    except DocoptExit as exc:
        message = str(exc.code or "")
        if message.startswith(_UNMATCHED):
            message = message.split("\n", 1)[1] if "\n" in message else ""
            message = "the arguments do not match the usage\n" + message
        print(message, file=sys.stderr)
        raise SystemExit(2) from None


def given(args: dict[str, Any], key: str) -> str | None:
    """An option's value, or None when it is missing or still its ``$VARIABLE or ...``
    placeholder default (the variable itself is read later, by the library)."""
    value = args.get(key)
    if not value or value.startswith("$"):
        return None
    return str(value)


def fail(prog: str, message: object, status: int = 2) -> NoReturn:
    """Print ``<prog>: <message>`` to stderr and exit with ``status``."""
    print(f"{prog}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(status)


def authkey(args: dict[str, Any], prog: str | None = None) -> bytes | str | None:
    """The key from ``--authkey-file`` or ``--authkey`` (not both), else None, which lets
    the library fall back to ``$EASYMESH_AUTHKEY``. Exits (:func:`fail`) for both options
    at once or a key file that cannot be used; ``prog`` names the command in the message
    (default: the script's name)."""
    prog = prog or os.path.basename(sys.argv[0] or "easymesh")
    path, key = given(args, "--authkey-file"), given(args, "--authkey")
    if path and key:
        fail(prog, "give --authkey or --authkey-file, not both")
    if path:
        try:
            return config.read_authkey_file(path)
        except ValueError as exc:
            fail(prog, exc)
    return key


def node_kwargs(args: dict[str, Any], prog: str | None = None) -> dict[str, Any]:
    """Keyword arguments for easymesh.Node from parsed docopt options (see :func:`authkey`)."""
    kwargs: dict[str, Any] = {}
    coord = given(args, "--coordinator")
    if coord:
        kwargs["coordinator"] = coord
    key = authkey(args, prog)
    if key:
        kwargs["authkey"] = key
    return kwargs


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_main(main: Callable[[], int]) -> None:
    """Run a command's main(); Ctrl-C exits quietly with status 130."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
