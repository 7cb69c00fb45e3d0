"""Where the time goes per message: py-spy on a speedtest sender and receiver, summarised.

Usage:
  profile.py [--py-spy=PATH] [--seconds=S] [--message-size=N] [--rate=R] [--mode=M] [--transport=T] [--in-flight=N] [--out=DIR]
  profile.py (-h | --help)

Options:
  --py-spy=PATH       The py-spy binary [default: ~/.cache/easymesh-bench/peers-venv/bin/py-spy].
  --seconds=S         Measured seconds [default: 4].
  --message-size=N    Payload bytes [default: 1000].
  --rate=R            Messages (requests) per second; 0 = full speed [default: 0].
  --mode=M            topic or service [default: topic].
  --transport=T       auto or tcp [default: auto].
  --out=DIR           Where the raw profiles go [default: /tmp/easymesh-profile].

Starts a coordinator, `speedtest recv` (or serve) and `speedtest send` (or call); samples
both with `py-spy record --threads --gil` (only the thread holding the GIL is sampled, so
samples are Python CPU time) and prints, per process and per thread, the share of samples
by function (self) and along the easymesh call path (inclusive), with the messages counted,
which gives microseconds of GIL time per message.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

from docopt import docopt

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RATE_HZ = 997


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spy(pyspy: str, pid: int, seconds: float, path: str) -> subprocess.Popen:
    return subprocess.Popen([pyspy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--rate", str(RATE_HZ), "--format", "raw", "--threads", "--gil",
                             "--nonblocking", "--output", path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def summarise(path: str, messages: int, title: str) -> None:
    """Collapsed stacks ('thread;frame;frame count') -> per thread: top self and inclusive."""
    threads: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    incl: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    total = 0
    try:
        lines = open(path).read().splitlines()
    except OSError:
        print(f"{title}: no profile ({path})")
        return
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        thread = re.sub(r"\(?0x[0-9a-f]+\)?", "", frames[0]).strip() or frames[0]
        funcs = [re.sub(r" \(.*?/([^/]+\.py):\d+\)", r" (\1)", f) for f in frames[1:]]
        if not funcs:
            continue
        total += n
        threads[thread][funcs[-1]] += n
        for f in set(funcs):
            incl[thread][f] += n
    secs = total / RATE_HZ
    print(f"\n### {title}: {total} samples with the GIL = {secs:.2f} s of Python CPU; "
          f"{messages} messages -> {1e6 * secs / max(1, messages):.1f} us per message")
    for thread, counter in sorted(threads.items(), key=lambda kv: -sum(kv[1].values())):
        n = sum(counter.values())
        print(f"\nthread {thread}: {n} samples ({1e6 * n / RATE_HZ / max(1, messages):.2f} us/msg)")
        print("  self:      " + "; ".join(f"{f} {100 * c / n:.0f}%" for f, c in counter.most_common(8)))
        top = [(f, c) for f, c in incl[thread].most_common(40) if "easymesh" in f or "(speedtest" in f
               or "pickle" in f or "sock" in f.lower()][:12]
        print("  inclusive: " + "; ".join(f"{f} {100 * c / n:.0f}%" for f, c in top))


def main() -> int:
    args = docopt(__doc__)
    pyspy = os.path.expanduser(args["--py-spy"])
    out = args["--out"]
    os.makedirs(out, exist_ok=True)
    py = sys.executable
    seconds = float(args["--seconds"])
    port = free_port()
    coord = subprocess.Popen(["timeout", "-s", "KILL", "120", py, "-m", "easymesh", "--host", "127.0.0.1",
                              "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    procs = [coord]
    try:
        time.sleep(1.0)
        topic = ["--coordinator", f"127.0.0.1:{port}", "--topic=profile",
                 f"--transport={args['--transport']}", "--json"]
        server_role, client_role = ("recv", "send") if args["--mode"] == "topic" else ("serve", "call")
        server = subprocess.Popen([py, "-m", "easymesh.demo.speedtest", server_role, "--once", "--timeout=90",
                                   *topic], stdout=subprocess.PIPE, text=True, start_new_session=True)
        procs.append(server)
        assert server.stdout is not None
        server.stdout.readline()
        client = subprocess.Popen([py, "-m", "easymesh.demo.speedtest", client_role, *topic,
                                   f"--seconds={seconds + 1.5}", "--warmup=0.5",
                                   f"--message-size={args['--message-size']}", f"--rate={args['--rate']}",
                                   *([f"--in-flight={args['--in-flight']}"] if client_role == "call" else [])],
                                  stdout=subprocess.PIPE, text=True, start_new_session=True)
        procs.append(client)
        time.sleep(1.0)  # warm-up and discovery, then sample `seconds`
        spies = [spy(pyspy, server.pid, seconds, f"{out}/server.txt"),
                 spy(pyspy, client.pid, seconds, f"{out}/client.txt")]
        procs += spies
        for s in spies:
            s.wait(seconds + 30)
        c_out = client.communicate(timeout=60)[0]
        results = [json.loads(ln[10:]) for ln in c_out.splitlines() if ln.startswith("SPEEDTEST ")]
        if server_role == "serve":
            server.send_signal(signal.SIGINT)
        s_out = server.communicate(timeout=30)[0]
        results += [json.loads(ln[10:]) for ln in s_out.splitlines() if ln.startswith("SPEEDTEST ")]
        by_role = {r["role"]: r for r in results}
        for r in results:
            print("result:", json.dumps(r))
        # messages handled during the sampled seconds, from the measured rates
        if args["--mode"] == "topic":
            sent = by_role.get("send", {}).get("msgs_per_s", 0) * seconds
            got = by_role.get("recv", {}).get("msgs_per_s", 0) * seconds
        else:
            sent = got = by_role.get("call", {}).get("req_per_s", 0) * seconds
        summarise(f"{out}/client.txt", int(sent), f"{client_role} (sender side)")
        summarise(f"{out}/server.txt", int(got), f"{server_role} (receiver side)")
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
