"""The demo: a coordinator, a receiver and a sender exchanging messages for a few seconds.

Run it as `python -m easymesh.demo` (or `scripts/demo`).

Usage:
  easymesh.demo [--seconds=S] [--port=PORT]
  easymesh.demo (-h | --help)

Options:
  --seconds=S   How long the sender sends (one message every 0.5 s) [default: 4].
  --port=PORT   Coordinator port; 0 picks a free one [default: 0].
  -h --help     Show this screen.

Each process is started in its own process group and its output is printed with
a prefix; Ctrl-C (or the end of the run) stops them all: SIGINT, then SIGKILL
after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from docopt import docopt

from easymesh.cli.options import run_main

COLORS = {"coordinator": "\033[36m", "receiver": "\033[32m", "sender": "\033[33m"}


def _pump(name: str, proc: subprocess.Popen, first_line: list[str], ready: threading.Event) -> None:
    color = COLORS.get(name, "") if sys.stdout.isatty() else ""
    reset = "\033[0m" if color else ""
    assert proc.stdout is not None
    for line in proc.stdout:
        if not first_line:
            first_line.append(line)
            ready.set()
        sys.stdout.write(f"{color}[{name:>11}]{reset} {line}")
        sys.stdout.flush()
    ready.set()


def _start(name: str, args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, list[str], threading.Event]:
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env, start_new_session=True,
    )
    first: list[str] = []
    ready = threading.Event()
    threading.Thread(target=_pump, args=(name, proc, first, ready), daemon=True).start()
    return proc, first, ready


def _stop(procs: list[subprocess.Popen], grace: float = 3.0) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def main(argv: list[str] | None = None) -> int:
    args = docopt(__doc__, argv=argv)
    seconds = float(args["--seconds"])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs: list[subprocess.Popen] = []
    try:
        coord, first, ready = _start(
            "coordinator", ["-m", "easymesh", "--host", "127.0.0.1", "--port", args["--port"]], env
        )
        procs.append(coord)
        if not ready.wait(15) or not first or "listening on" not in first[0]:
            print("demo: the coordinator did not start", file=sys.stderr)
            return 1
        address = first[0].split("listening on ")[1].split()[0]
        env["EASYMESH_COORDINATOR"] = address
        recv, _, _ = _start("receiver", ["-m", "easymesh.demo.receiver"], env)
        procs.append(recv)
        count = max(1, int(seconds / 0.5))
        send, _, _ = _start(
            "sender", ["-m", "easymesh.demo.sender", "--interval", "0.5", "--count", str(count)], env
        )
        procs.append(send)
        code = send.wait(seconds + 30)
        time.sleep(0.3)  # let the last line reach the receiver's output
        print(f"demo: sender finished (exit {code}); stopping the receiver and the coordinator", flush=True)
        return code
    except KeyboardInterrupt:
        print("\ndemo: Ctrl-C; stopping everything", flush=True)
        return 130
    finally:
        _stop(list(reversed(procs)))


if __name__ == "__main__":
    run_main(main)
