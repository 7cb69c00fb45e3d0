"""meshbag — record, play back, inspect and export easymesh topics in MCAP files.

Usage:
  meshbag record TOPIC... [options]
  meshbag play [FILE] [options]
  meshbag info [FILE]
  meshbag export FILE --json=OUT [options]
  meshbag (-h | --help)
  meshbag --version

Commands:
  record   Record topics until Ctrl-C into record_<YYYY-MM-DD-HH-MM-SS>.bag (MCAP).
  play     Play a bag back with its recorded timing.
  info     Show what a bag holds (from its summary, without reading it all).
  export   Write a JSON copy of a bag that Foxglove can plot.

Run `meshbag COMMAND --help` for the options of a command.
"""

from __future__ import annotations

import sys
from typing import Any

import easymesh
from easymesh.cli.options import node_kwargs, parse, run_main, setup_logging

_NODE = """\
  --coordinator=HOST:PORT  Coordinator address [default: $EASYMESH_COORDINATOR or localhost:6374].
  --authkey=KEY            Shared secret; other users can read it in the process list
                           [default: $EASYMESH_AUTHKEY or none].
  --authkey-file=FILE      Read the shared secret from FILE (chmod 600).
  -v                       Verbose (debug) logging.
  -h --help                Show this screen."""

RECORD = f"""meshbag record — record topics into an MCAP file until Ctrl-C (or SIGTERM).

Usage:
  meshbag record TOPIC... [options]
  meshbag record (-h | --help)

Shows a live line with messages and bytes per topic on a terminal. Nothing
recorded: no file is written. The file is written as FILE.part and renamed to
FILE once complete, so FILE is always a valid, indexed MCAP file.

Options:
  -o FILE --output=FILE    File to write (default: record_<YYYY-MM-DD-HH-MM-SS>.bag here).
  -f --force               Overwrite FILE if it exists.
  --compression=C          Chunk compression: zstd, lz4 or none [default: zstd].
  --duration=S             Stop after S seconds (default: run until Ctrl-C).
  --status-every=S         When stderr is not a terminal, print the status line every
                           S seconds (default: only on a terminal, redrawn in place).
  --name=NAME              Node name (default: meshbag-record-<pid>, unique so that
                           the recorder gets every message).
{_NODE}
"""

PLAY = f"""meshbag play — send a bag's messages again, with the recorded spacing.

Usage:
  meshbag play [FILE] [--topics=T]... [options]
  meshbag play (-h | --help)

FILE defaults to the most recent record_*.bag in the current folder. Waits up
to --wait seconds for a listener on every topic, then plays (messages to a
topic nobody listens to go nowhere, as when they were first sent).

Options:
  -r RATE --rate=RATE      Speed factor: the recorded gaps are divided by RATE [default: 1].
  --loop                   Start over after the last message, until Ctrl-C.
  --start=SECONDS          Skip the first SECONDS of the bag [default: 0].
  --topics=T               Play only topic T; repeat, or separate with commas.
  --immediate              Send as fast as possible, ignoring the recorded timing.
  --wait=S                 Seconds to wait for listeners before playing [default: 5].
  --name=NAME              Node name [default: meshbag-play].
{_NODE}
"""

INFO = """meshbag info — path, size, duration, start/end time, message count and topics of a bag.

Usage:
  meshbag info [FILE]
  meshbag info (-h | --help)

FILE defaults to the most recent record_*.bag in the current folder. Reads the
MCAP summary only (no full scan), however big the file.

Options:
  -h --help                Show this screen.
"""

EXPORT = """meshbag export — write a copy of a bag with every message as JSON (for Foxglove).

Usage:
  meshbag export FILE --json=OUT [--topics=T]... [options]
  meshbag export (-h | --help)

Messages are decoded with their codec and written as JSON objects (message
encoding "json") with a JSON schema inferred from each channel's first message;
a value that is not an object is wrapped as {"data": value}; NaN and infinity
become null; what JSON cannot hold (bytes, sets, other objects) becomes its
repr; a numpy uint8 array of shape (H, W) or (H, W, 3) becomes a
foxglove.RawImage that Foxglove's Image panel shows. Messages that cannot be
decoded are skipped and counted. Decoding pickle runs code from the bag:
export only bags you trust.

Options:
  --json=OUT               The MCAP file to write.
  --topics=T               Export only topic T; repeat, or separate with commas.
  -f --force               Overwrite OUT if it exists.
  -h --help                Show this screen.
"""

COMMANDS = {"record": RECORD, "play": PLAY, "info": INFO, "export": EXPORT}


def _topics(values: list[str]) -> list[str] | None:
    topics = [t.strip() for v in values for t in v.split(",") if t.strip()]
    return topics or None


def _number(args: dict[str, Any], key: str, what: str) -> float:
    try:
        return float(args[key])
    except (TypeError, ValueError):
        raise SystemExit(f"meshbag: {key} must be {what}, not {args[key]!r}") from None


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    doc = COMMANDS.get(argv[0], __doc__) if argv else __doc__
    args = parse(doc, argv=argv, version=f"meshbag (easymesh {easymesh.__version__})")
    from easymesh import bag  # imported after parsing: --help stays quick
    from easymesh.bag.bagfile import resolve_bag

    try:
        if args.get("record"):
            setup_logging(args["-v"])
            duration = _number(args, "--duration", "seconds") if args["--duration"] else None
            every = _number(args, "--status-every", "seconds") if args["--status-every"] else None
            bag.record(
                args["TOPIC"],
                args["--output"],
                name=args["--name"],
                node_options=node_kwargs(args, "meshbag"),
                compression=args["--compression"],
                duration=duration,
                overwrite=args["--force"],
                status_every=every,
            )
            return 0
        if args.get("play"):
            setup_logging(args["-v"])
            bag.play(
                args["FILE"],
                name=args["--name"],
                node_options=node_kwargs(args, "meshbag"),
                rate=_number(args, "--rate", "a number above 0"),
                loop=args["--loop"],
                start=_number(args, "--start", "seconds"),
                topics=_topics(args["--topics"]),
                immediate=args["--immediate"],
                wait=_number(args, "--wait", "seconds"),
            )
            return 0
        if args.get("info"):
            print(bag.format_info(bag.read_info(resolve_bag(args["FILE"]))))
            return 0
        if args.get("export"):
            result = bag.export_json(
                args["FILE"],
                args["--json"],
                topics=_topics(args["--topics"]),
                overwrite=args["--force"],
            )
            if result.path is None:
                print("meshbag: no message could be exported as JSON; no file written")
            else:
                print(f"meshbag: wrote {result.path}: {result.written} messages as JSON")
            for topic, n in sorted(result.skipped.items()):
                print(f"meshbag: skipped {n} messages on {topic!r}: {result.reasons[topic]}")
            return 0
    except (easymesh.MeshError, ValueError) as exc:
        print(f"meshbag: {exc}", file=sys.stderr)
        return 1
    print(doc, file=sys.stderr)
    return 2


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()
