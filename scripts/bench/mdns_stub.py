"""Answer mDNS address queries for this host's `<name>.local.` with 127.0.0.1, on loopback only.

rosy 0.8.x discovers nodes with zeroconf. Each node advertises a service whose target is
the host's `.local.` name but publishes no address record for it, and a peer's lookup only
completes once some responder answers the A query for that name (avahi does on a desktop).
This machine has no avahi, so the benchmark runs this stand-in inside its private network
namespace: it advertises one dummy service whose target is the same host name, with the
address 127.0.0.1, so zeroconf here answers the A queries. rosy itself is untouched.

Usage: mdns_stub.py [SECONDS]    (exits after SECONDS, default 1800, or on SIGTERM/SIGINT)
"""

from __future__ import annotations

import signal
import socket
import sys
import threading

from zeroconf import IPVersion, ServiceInfo, Zeroconf


def local_name() -> str:
    """The `.local.` name rosy advertises as its services' target."""
    name = socket.getfqdn()
    if name.endswith(".local."):
        return name
    if name.endswith(".local"):
        return name + "."
    return name + ("local." if name.endswith(".") else ".local.")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1800.0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    info = ServiceInfo("_easymesh-bench._tcp.local.", "addr._easymesh-bench._tcp.local.", port=9,
                       addresses=[socket.inet_aton("127.0.0.1")], server=local_name())
    zc.register_service(info)
    print(f"mdns_stub: {local_name()} -> 127.0.0.1", flush=True)
    stop.wait(seconds)
    zc.unregister_service(info)
    zc.close()


if __name__ == "__main__":
    main()
