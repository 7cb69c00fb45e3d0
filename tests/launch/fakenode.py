"""A stand-in node for meshlaunch tests: reports how it was started, then waits for a signal.

    python fakenode.py [--exit=N] [--ignore=INT,TERM] [--child] [anything meshlaunch appends]

Prints one line ``FAKENODE {json}`` (pid, pgid, argv, cwd, selected environment variables),
then with ``--child`` starts a grandchild (a Python process in the same group that ignores
SIGINT, as a shell's background job does) and prints ``CHILD <pid>``. With ``--exit=N`` it
exits with N right away; otherwise it waits until SIGINT or SIGTERM (unless ignored).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

ENV_KEYS = (
    "FOO",
    "NUMBER",
    "REMOVE_ME",
    "MESHLAUNCH_NODE",
    "MESHLAUNCH_COPY",
    "EASYMESH_COORDINATOR",
    "EASYMESH_AUTHKEY",
    "PYTHONUNBUFFERED",
)


def main() -> int:
    args = sys.argv[1:]
    opts = {
        a.split("=", 1)[0]: a.split("=", 1)[1] if "=" in a else ""
        for a in args
        if a.startswith(("--exit", "--ignore", "--child"))
    }
    info = {
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "argv": args,
        "cwd": os.getcwd(),
        "env": {k: os.environ.get(k) for k in ENV_KEYS},
    }
    for name in filter(None, opts.get("--ignore", "").split(",")):
        signal.signal(getattr(signal, f"SIG{name}"), signal.SIG_IGN)

    def stop(signum: int, frame: object) -> None:
        print(f"got {signal.Signals(signum).name}", flush=True)
        sys.exit(0)

    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, stop)
    print("FAKENODE " + json.dumps(info), flush=True)
    if "--exit" in opts:
        return int(opts["--exit"])
    if "--child" in opts:
        code = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); signal.pause()"
        child = subprocess.Popen([sys.executable, "-c", code])
        print(f"CHILD {child.pid}", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
