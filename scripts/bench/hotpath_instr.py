"""Instructions per message on the hot paths, counted by callgrind: exact where wall time
on a shared 2-core machine is not.

Usage:
  hotpath_instr.py [--count=N] [--requests=R] [--size=B] [--transport=T] [--keep=DIR]
  hotpath_instr.py role --who=WHO --coordinator=ADDR [--size=B] [--transport=T]
  hotpath_instr.py (-h | --help)

Options:
  --count=N       Topic messages sent in the measured window [default: 2000].
  --requests=R    Sequential requests in the measured window [default: 500].
  --size=B        Payload bytes [default: 0].
  --transport=T   auto (Unix socket) or tcp [default: auto].
  --keep=DIR      Keep the callgrind dumps in DIR (for callgrind_annotate) [default: ].
                  With HOTPATH_THREADS=yes in the environment, one dump per thread.
  --who=WHO       role: recv or send.
  --coordinator=ADDR  role: the coordinator's host:port.

Method: a coordinator runs in this process; a receiver (a listener and an echo service) and
a sender run as separate processes, both under ``valgrind --tool=callgrind`` (every thread
of each process counted). After a warm-up (links open, first messages and requests done)
the counters of both are zeroed (``callgrind_control -z PID``), the sender sends
``--count`` messages of ``--size`` bytes (``send``, as fast as it accepts them) and the
receiver counts them in its listener; then both are dumped (``callgrind_control -d``) and
the totals divided by the count. The same for ``--requests`` sequential ``request()``
calls. The easymesh measured is the one Python imports: run it with
``PYTHONPATH=<other checkout>`` for a baseline (the script itself stays this one).
Prints ``SPEEDTEST {json}``: instructions per message (sender, receiver) and per request
(caller, provider).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from docopt import docopt

HERE = os.path.abspath(__file__)


def role(who: str, coordinator: str, size: int, transport: str) -> int:
    import easymesh

    payload = {"data": b"x" * size}
    node = easymesh.Node(f"hp-{who}", coordinator=coordinator, transport=transport,
                         heartbeat_interval=30.0)
    got = [0]
    arrived = threading.Condition()

    def on_message(_topic: str, _data: Any) -> None:
        with arrived:
            got[0] += 1
            arrived.notify_all()

    if who == "recv":
        node.listen("hp", on_message)
        node.add_service("hp-echo", lambda d: d)
    else:
        node.wait_for_listener("hp", timeout=60)
        node.wait_for_service("hp-echo", timeout=60)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "warm" and who == "send":
            for _ in range(200):
                node.send("hp", payload)
            for _ in range(50):
                node.request("hp-echo", payload, timeout=60)
        elif cmd[0] == "topic" and who == "send":
            for _ in range(int(cmd[1])):
                node.send("hp", payload)
        elif cmd[0] == "requests" and who == "send":
            for _ in range(int(cmd[1])):
                node.request("hp-echo", payload, timeout=60)
        elif cmd[0] == "wait" and who == "recv":  # until this many messages arrived in all
            with arrived:
                arrived.wait_for(lambda n=int(cmd[1]): got[0] >= n, 300)
        elif cmd[0] == "quit":
            break
        print(f"done {got[0]}", flush=True)
    node.close()
    return 0


class Proc:
    def __init__(self, args: list[str], out_dir: str, name: str) -> None:
        self.out = os.path.join(out_dir, f"cg.{name}")
        self.p = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}",
             f"--separate-threads={os.environ.get('HOTPATH_THREADS', 'no')}", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def say(self, line: str, timeout: float = 600.0) -> str:
        assert self.p.stdin and self.p.stdout
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.expect("done", timeout)

    def expect(self, word: str, timeout: float = 600.0) -> str:
        assert self.p.stdout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.out}: ended before {word!r}")
            if line.startswith(word):
                return line
        raise RuntimeError(f"{self.out}: no {word!r} in {timeout} s")

    def zero(self) -> None:
        subprocess.run(["callgrind_control", "-z", str(self.p.pid)], capture_output=True, check=True)

    def dump(self) -> int:
        """Instructions since the last zero (all threads)."""
        before = set(glob.glob(self.out + "*"))
        subprocess.run(["callgrind_control", "-d", str(self.p.pid)], capture_output=True, check=True)
        total = 0
        for path in sorted(set(glob.glob(self.out + "*")) - before):
            with open(path) as f:
                for line in f:
                    if line.startswith("totals:") or line.startswith("summary:"):
                        total += int(line.split()[1])
                        break
        return total


def main() -> int:
    args = docopt(__doc__)
    size, transport = int(args["--size"]), args["--transport"]
    if args["role"]:
        return role(args["--who"], args["--coordinator"], size, transport)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("needs valgrind (callgrind, callgrind_control)", file=sys.stderr)
        return 2
    from easymesh.coordinator import Coordinator

    count, requests = int(args["--count"]), int(args["--requests"])
    coord = Coordinator("127.0.0.1", 0).start()
    keep = args["--keep"]
    if keep:
        os.makedirs(keep, exist_ok=True)
    out_dir = keep or tempfile.mkdtemp(prefix="hotpath-")
    common = [sys.executable, HERE, "role", f"--coordinator=127.0.0.1:{coord.port}",
              f"--size={size}", f"--transport={transport}"]
    recv = Proc([*common, "--who=recv"], out_dir, "recv")
    procs = [recv]
    try:
        recv.expect("ready")
        send = Proc([*common, "--who=send"], out_dir, "send")
        procs.append(send)
        send.expect("ready")
        send.say("warm")
        recv.say("wait 200")
        res: dict[str, Any] = {"size": size, "transport": transport, "count": count,
                               "requests": requests, "easymesh": __import__("easymesh").__file__}
        for p in procs:
            p.zero()
        send.say(f"topic {count}")
        recv.say(f"wait {200 + count}")
        res["topic_instr_per_msg"] = {"sender": round(send.dump() / count),
                                      "receiver": round(recv.dump() / count)}
        for p in procs:
            p.zero()
        send.say(f"requests {requests}")
        res["request_instr_per_call"] = {"caller": round(send.dump() / requests),
                                         "provider": round(recv.dump() / requests)}
        for p in procs:
            assert p.p.stdin
            p.p.stdin.write("quit\n")
            p.p.stdin.flush()
            p.p.wait(120)
        print("SPEEDTEST " + json.dumps(res), flush=True)
        return 0
    finally:
        for p in procs:
            if p.p.poll() is None:
                p.p.kill()
                p.p.wait(10)
        coord.close()
        if not keep:
            shutil.rmtree(out_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
